"""The screening operating point: the smallest mpox offset for a recall target, never fitted on its own test photos."""

import numpy as np
import pytest

from mpox_aism.contracts.labels import LABELS
from mpox_aism.training.operating_point import MPOX, OFFSET_GRID, choose_offset, cross_fitted, recall_at, shift

K = len(LABELS)
OTHER = LABELS.index("chickenpox")


def _logits(margins: list[float]) -> np.ndarray:
    """One mpox photo per margin: its mpox logit sits ``margin`` below chickenpox's."""
    z = np.zeros((len(margins), K))
    z[:, OTHER] = margins
    return z


def test_smallest_offset_that_reaches_the_target():
    z, y = _logits([-1.0, 0.32, 0.72, 2.0]), np.full(4, MPOX)  # the first photo is already caught
    assert recall_at(z, y, 0.0) == 0.25
    c = choose_offset(z, y, target=0.75)
    assert c.reached and c.delta == 0.75 and c.recall == 0.75  # just past 0.72 on the 0.05 grid
    assert choose_offset(z, y, target=0.25).delta == 0.0  # reached already: no shift


def test_an_unreachable_target_says_so():
    c = choose_offset(_logits([10.0]), np.array([MPOX]), target=1.0)
    assert not c.reached and c.delta == OFFSET_GRID[-1] and c.recall == 0.0
    with pytest.raises(ValueError, match="recall target"):
        choose_offset(_logits([0.0]), np.array([MPOX]), target=0.0)
    with pytest.raises(ValueError, match="no mpox photo"):
        choose_offset(_logits([0.0]), np.array([OTHER]), target=0.9)


def test_shift_moves_only_the_mpox_logit():
    z = np.arange(2 * K, dtype=float).reshape(2, K)
    out = shift(z, 1.5)
    assert np.array_equal(np.delete(out, MPOX, axis=1), np.delete(z, MPOX, axis=1))
    assert np.array_equal(out[:, MPOX], z[:, MPOX] + 1.5) and np.array_equal(z[:, MPOX], [MPOX, K + MPOX])


def test_each_fold_offset_comes_from_the_other_folds_only():
    # fold A's mpox photos need 2.02 to be caught, fold B's need 0.52: each gets the other's figure
    z, y = _logits([2.02, 2.02, 0.52, 0.52]), np.full(4, MPOX)
    folds = [np.array([0, 1]), np.array([2, 3])]
    out, choices = cross_fitted(z, y, folds, target=1.0)
    assert [c.delta for c in choices] == [0.55, 2.05]
    assert recall_at(out[:2], y[:2], 0.0) == 0.0 and recall_at(out[2:], y[2:], 0.0) == 1.0
    assert np.array_equal(z, _logits([2.02, 2.02, 0.52, 0.52]))  # the input is left as it was
