"""Cross-validation folds: no group on two sides, every photo tested exactly once."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mpox_aism.training.data import Sample, scan_dataset
from mpox_aism.training.folds import group_kfold, leave_source_out


def _samples(n_groups: int = 40, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for g in range(n_groups):
        label = g % 4
        for j in range(int(rng.integers(1, 6))):
            out.append(Sample(path=Path(f"/x/{g}_{j}.jpg"), label=label, group=f"g{g}",
                              source=f"s{g % 3}"))
    return out


@pytest.mark.parametrize("k", [2, 5])
def test_kfold_tests_every_photo_once_and_keeps_groups_whole(k):
    samples = _samples()
    folds = group_kfold(samples, k, seed=3)
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested.tolist()) == list(range(len(samples)))
    for f in folds:
        assert not {samples[i].group for i in f.train} & {samples[i].group for i in f.test}
        assert len(f.train) + len(f.test) == len(samples)
    # stratified: every class appears in every test fold when it has ≥ k groups
    for f in folds:
        assert {samples[i].label for i in f.test} == {0, 1, 2, 3}


def test_kfold_is_seeded_and_refuses_too_few_groups():
    samples = _samples()
    a = [f.test.tolist() for f in group_kfold(samples, 5, seed=1)]
    assert a == [f.test.tolist() for f in group_kfold(samples, 5, seed=1)]
    with pytest.raises(ValueError, match="groups cannot fill"):
        group_kfold(samples[:3], 5)


def test_leave_source_out_moves_shared_groups_to_the_test_side():
    samples = _samples()
    # one group that spans two sources: it must go wholly to the held-out side
    samples.append(Sample(path=Path("/x/extra.jpg"), label=0, group="g1", source="s0"))
    fold = leave_source_out(samples, "s0")
    test_groups = {samples[i].group for i in fold.test}
    assert all(samples[i].source == "s0" or samples[i].group in test_groups for i in fold.test)
    assert not test_groups & {samples[i].group for i in fold.train}
    assert all(samples[i].source != "s0" for i in fold.train)
    with pytest.raises(ValueError, match="no photo has source"):
        leave_source_out(samples, "nowhere")


def test_real_skin8_folds(skin8):
    samples = scan_dataset(skin8, verify=False)
    folds = group_kfold(samples, 5)
    assert sorted(np.concatenate([f.test for f in folds]).tolist()) == list(range(len(samples)))
    sizes = [len(f.test) for f in folds]
    assert max(sizes) - min(sizes) <= 0.1 * len(samples)  # roughly even
    mpox = [Counter(samples[i].label_name for i in f.test)["mpox"] for f in folds]
    assert min(mpox) > 0
    for source in ("msid", "monkeypox2022", "msld_v1"):
        fold = leave_source_out(samples, source)
        assert not {samples[i].group for i in fold.train} & {samples[i].group for i in fold.test}
