from pathlib import Path

import pytest

from mpox_aism.training.data import Sample, class_counts, scan_dataset
from mpox_aism.training.split import LeakageError, check_disjoint, group_split, split_by_groups


def _samples(spec: dict[int, list[int]]) -> list[Sample]:
    """spec: label → list of group sizes."""
    out = []
    for label, sizes in spec.items():
        for gi, n in enumerate(sizes):
            out += [Sample(Path(f"{label}_{gi}_{i}.jpg"), label, f"L{label}G{gi}") for i in range(n)]
    return out


def test_groups_never_straddle_and_classes_are_stratified():
    samples = _samples({0: [3, 2, 5, 1, 4, 2], 1: [10, 1, 1, 1], 2: [22, 14, 6], 3: [7]})
    train, val = group_split(samples, val_fraction=0.2, seed=0)
    check_disjoint(train, val)
    assert len(train) + len(val) == len(samples)
    tc, vc = class_counts(train), class_counts(val)
    for label in (0, 1, 2):  # two or more groups: both sides
        assert tc[label] > 0 and vc[label] > 0
    assert vc[3] == 0  # a single group cannot be split, it trains


def test_split_is_seeded():
    samples = _samples({0: [1] * 20, 1: [2] * 10})
    a = group_split(samples, seed=1)[1]
    b = group_split(samples, seed=1)[1]
    c = group_split(samples, seed=2)[1]
    assert a == b and a != c


def test_leakage_is_refused():
    s = _samples({0: [2]})
    with pytest.raises(LeakageError, match="both sides"):
        check_disjoint(s[:1], s[1:])


def test_split_by_groups_recreates_a_split():
    samples = _samples({0: [3, 2, 5], 1: [4, 4]})
    train, val = group_split(samples, seed=0)
    t2, v2 = split_by_groups(samples, {s.group for s in val})
    assert (t2, v2) == (train, val)


def test_real_skin8_split(skin8):
    samples = scan_dataset(skin8, verify=False)
    train, val = group_split(samples, val_fraction=0.2, seed=0)
    check_disjoint(train, val)
    tc, vc = class_counts(train), class_counts(val)
    assert all(c > 0 for c in tc) and all(c > 0 for c in vc)
    assert 0.12 < len(val) / len(samples) < 0.3
