"""The familiarity score: far from the training photos, or with no evidence for any class, is unfamiliar;
it travels in a file; it refuses features of another width."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mpox_aism.contracts.familiarity import FAMILIARITY_FILE, Familiarity, energy, fit_bank


def _photos(n: int = 300, d: int = 48, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (3, d))
    return centres[rng.integers(0, 3, n)] + rng.normal(0, 1, (n, d))


def _score(x: np.ndarray) -> Familiarity:
    return dataclasses.replace(fit_bank(x, components=16, k=5), knn_ref=(0.1, 0.05), energy_ref=(-5.0, 1.0),
                               threshold=2.0, pass_share=0.95, model_version="abc")


def test_far_from_the_bank_or_without_evidence_is_unfamiliar():
    x = _photos()
    score = _score(x)
    confident = np.tile([[8.0, 0, 0, 0, 0, 0, 0, 0]], (len(x), 1))  # energy ≈ −8: strong evidence
    near = score.unfamiliarity(x[:50] + np.random.default_rng(1).normal(0, 0.3, (50, 48)), confident[:50])
    far = score.unfamiliarity(np.random.default_rng(2).normal(0, 1, (50, 48)) * 10, confident[:50])
    flat = score.unfamiliarity(x[:50], np.zeros((50, 8)))  # a photo-like crop no class claims: energy −log 8
    assert np.median(far) > np.quantile(near, 0.95)
    assert (flat > score.threshold).all() and (near <= score.threshold).mean() > 0.9
    assert energy(np.zeros((1, 8)))[0] == pytest.approx(-np.log(8))


def test_the_file_round_trips(tmp_path):
    x = _photos()
    score = _score(x)
    logits = np.random.default_rng(3).normal(0, 3, (len(x), 8))
    path = score.save(tmp_path)
    assert path.name == FAMILIARITY_FILE
    back = Familiarity.load(path)
    assert back.threshold == 2.0 and back.model_version == "abc" and back.k == 5 and back.knn_ref == (0.1, 0.05)
    np.testing.assert_allclose(back.unfamiliarity(x, logits), score.unfamiliarity(x, logits), atol=1e-3)
    np.testing.assert_array_equal(back.familiar(x, logits), back.unfamiliarity(x, logits) <= 2.0)


def test_features_of_another_width_are_refused():
    score = _score(_photos())
    with pytest.raises(ValueError, match="expected N×48 features"):
        score.unfamiliarity(np.zeros((2, 47)), np.zeros((2, 8)))
