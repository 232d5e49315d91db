"""The linear probe: weights that balance what they should, a head that folds into nn.Linear exactly."""

import os

import numpy as np
import torch
from torch import nn

from mpox_aism.training.data import Sample
from mpox_aism.training.probe import (
    feature_cache_key,
    fit_head,
    sample_weights,
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
