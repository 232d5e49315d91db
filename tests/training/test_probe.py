"""The linear probe: weights that balance what they should, a head that folds into nn.Linear exactly."""

import os

import numpy as np
import torch
from torch import nn

from mpox_aism.training.data import Sample
from mpox_aism.training.probe import (
    LinearHead,
    feature_cache_key,
    fit_head,
    fit_head_without_sources,
    sample_weights,
    source_directions,
)


def test_class_weights_give_every_class_equal_total():
    y = np.array([0] * 90 + [1] * 10)
    w = sample_weights(y, ["a"] * 100, "class")
    assert np.isclose(w[y == 0].sum(), w[y == 1].sum()) and np.isclose(w.mean(), 1.0)


def test_class_source_weights_balance_sources_within_a_class():
    y = np.array([0] * 80 + [1] * 20)
    src = ["com"] * 60 + ["nz"] * 20 + ["nz"] * 20
    w = sample_weights(y, src, "class_source")
    c0_com, c0_nz = w[:60].sum(), w[60:80].sum()
    assert np.isclose(c0_com, c0_nz)  # within eczema, each source half
    assert np.isclose(c0_com + c0_nz, w[80:].sum())  # and the classes equal


def test_head_learns_and_folds_into_a_linear_layer():
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, (3, 16))
    y = np.repeat(np.arange(3), 40)
    x = centers[y] + rng.normal(0, 1, (120, 16)) + 5.0  # offset: standardisation must be folded in
    feats = np.stack([x, x + rng.normal(0, 0.1, x.shape)], axis=1)  # two views per photo
    head = fit_head(feats, y, weights=np.ones(120), groups=[str(i // 4) for i in range(120)],
                    l2_grid=(1e-3, 1e-1), num_classes=3)
    assert head.l2 in (1e-3, 1e-1) and set(head.inner_scores) == {1e-3, 1e-1}
    assert (head.logits(feats).argmax(1) == y).mean() > 0.95
    lin = nn.Linear(16, 3)
    head.fold_into(lin)
    with torch.no_grad():
        raw = lin(torch.from_numpy(x).float()).numpy()
    assert np.allclose(raw, head.logits(x), atol=1e-3)


def test_averaged_head_gives_the_members_mean_logits():
    """A fold-mean head is one layer whose logits are its members' mean, each with its own μ, σ."""
    rng = np.random.default_rng(1)
    heads = [LinearHead(weight=rng.normal(size=(3, 5)), bias=rng.normal(size=3), mean=rng.normal(size=5),
                        scale=rng.uniform(0.5, 2, size=5), l2=l2) for l2 in (0.01, 0.1, 0.03)]
    x = rng.normal(size=(7, 5))
    mean = LinearHead.average(heads)
    assert np.allclose(mean.logits(x), np.mean([h.logits(x) for h in heads], axis=0))
    assert mean.member_l2 == (0.01, 0.1, 0.03) and mean.l2 == 0.03
    lin = nn.Linear(5, 3)
    mean.fold_into(lin)
    with torch.no_grad():
        assert np.allclose(lin(torch.from_numpy(x).float()).numpy(), mean.logits(x), atol=1e-5)


def test_augmented_views_are_reproducible_and_differ_from_the_photo(tiny_skin8):
    """Training-only views: seeded draws of the paper's augmentation, so a cached array can be recomputed."""
    from mpox_aism.model.zoo import build_model
    from mpox_aism.training.data import scan_dataset
    from mpox_aism.training.probe import extract_features

    samples = scan_dataset(tiny_skin8, verify=False)[:3]
    model = build_model("mobilenet_v2", image_size=64).eval()
    plain = extract_features(model, samples, image_size=64, flip=True, workers=0, desc=None)
    drawn = extract_features(model, samples, image_size=64, workers=0, desc=None, augment=3, seed=0)
    again = extract_features(model, samples, image_size=64, workers=0, desc=None, augment=3, seed=0)
    other = extract_features(model, samples, image_size=64, workers=0, desc=None, augment=3, seed=1)
    assert plain.shape == (3, 2, 1280) and drawn.shape == (3, 3, 1280)
    np.testing.assert_array_equal(drawn, again)
    assert not np.allclose(drawn, other, rtol=1e-3, atol=0)
    assert not np.allclose(drawn[:, 0], plain[:, 0], rtol=1e-3, atol=0)


def test_source_directions_are_projected_out_and_folded_into_one_layer():
    """A class whose two sources differ along one axis: the head cannot use that axis, and stays one layer."""
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(2), 60)
    src = np.array((["a"] * 30 + ["b"] * 30) * 2)
    x = rng.normal(size=(120, 6))
    x[:, 0] += 3 * y  # the class signal
    x[:, 5] += 4 * (src == "b")  # a source look, shared by both classes
    u = source_directions((x - x.mean(0)) / x.std(0), y, src)
    assert u.shape[0] >= 1 and np.allclose(u @ u.T, np.eye(len(u)), atol=1e-8)
    assert abs(u[0, 5]) > 0.9  # the source axis found
    head = fit_head_without_sources(x, y, sources=src, weights=np.ones(120), groups=[str(i) for i in range(120)],
                                    l2_grid=(1e-2,), num_classes=2)
    assert head.removed_directions == len(u) and (head.logits(x).argmax(1) == y).mean() > 0.8
    moved = x + 10 * u[0] * (x.std(0) + 1e-6)  # a new site's look, along a removed direction
    assert np.allclose(head.logits(moved), head.logits(x), atol=1e-6)
    lin = nn.Linear(6, 2)
    head.fold_into(lin)
    with torch.no_grad():
        assert np.allclose(lin(torch.from_numpy(x).float()).numpy(), head.logits(x), atol=1e-4)
    assert source_directions(x, y, np.array(["a"] * 120)).shape == (0, 6)  # one source: nothing to remove


class _Net(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(width, 8)


def test_feature_cache_key_tells_apart_networks_that_pool_differently_on_the_same_weights():
    assert feature_cache_key(_Net(4), [], image_size=64) == feature_cache_key(_Net(4), [], image_size=64)
    assert feature_cache_key(_Net(4), [], image_size=64) != feature_cache_key(_Net(12), [], image_size=64)
    assert feature_cache_key(_Net(4), [], image_size=64) != feature_cache_key(_Net(4), [], image_size=96)


def test_feature_cache_key_follows_a_photo_s_bytes_not_its_mtime(tmp_path) -> None:
    """A remounted data folder (new mtimes, same photos) keeps its cache; an edited photo does not."""
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"one")
    key = feature_cache_key(_Net(4), [Sample(photo, 0, "g")], image_size=64)
    os.utime(photo, (1, 1))
    assert feature_cache_key(_Net(4), [Sample(photo, 0, "g")], image_size=64) == key
    photo.write_bytes(b"two")
    assert feature_cache_key(_Net(4), [Sample(photo, 0, "g")], image_size=64) != key
