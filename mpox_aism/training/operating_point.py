"""The screening operating point: one mpox logit offset, chosen for a recall target on held-out logits.

A probe fitted with balanced class weights treats a missed mpox and a false mpox alike; a
screening checkpoint does not — a missed case walks through, a false one costs a look. Adding δ to
the mpox logit moves the argmax towards mpox (precision falls, recall rises) and is the smallest
change that does it: folded into the head's bias, every backend, the class maps and Grad-CAM see
the same network, and the paper's threshold rule is untouched.

δ is never chosen on the photos it is scored on. :func:`cross_fitted` picks each fold's δ on the
*other* folds' out-of-fold logits, so the k-fold figures of the shifted model are honest; the
shipped δ is then chosen on all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mpox_aism.contracts.labels import LABELS

MPOX = LABELS.index("mpox")
OFFSET_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(81))  # 0 … 4 logits


@dataclass(frozen=True)
class OffsetChoice:
    """δ and the recall it gave where it was chosen; ``reached`` False: the grid's end fell short."""

    delta: float
    recall: float
    reached: bool


def shift(logits: np.ndarray, delta: float, cls: int = MPOX) -> np.ndarray:
    out = np.array(logits, dtype=np.float64, copy=True)
    out[:, cls] += delta
    return out


def recall_at(logits: np.ndarray, labels: np.ndarray, delta: float, cls: int = MPOX) -> float:
    positives = labels == cls
    if not positives.any():
        raise ValueError(f"no {LABELS[cls]} photo to measure recall on")
    return float((shift(logits[positives], delta, cls).argmax(1) == cls).mean())


def choose_offset(logits: np.ndarray, labels: np.ndarray, *, target: float, cls: int = MPOX,
                  grid: Sequence[float] = OFFSET_GRID) -> OffsetChoice:
    """The smallest δ on ``grid`` whose recall of ``cls`` reaches ``target`` (else the grid's largest)."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"recall target must be in (0, 1], got {target}")
    labels = np.asarray(labels)
    for delta in grid:
        r = recall_at(logits, labels, delta, cls)
        if r >= target:
            return OffsetChoice(float(delta), r, True)
    return OffsetChoice(float(grid[-1]), recall_at(logits, labels, grid[-1], cls), False)


def cross_fitted(logits: np.ndarray, labels: np.ndarray, tests: Sequence[np.ndarray], *, target: float,
                 cls: int = MPOX) -> tuple[np.ndarray, list[OffsetChoice]]:
    """Shifted out-of-fold logits, each fold's δ chosen on the other folds' photos only."""
    labels = np.asarray(labels)
    out = np.array(logits, dtype=np.float64, copy=True)
    choices = []
    for test in tests:
        rest = np.setdiff1d(np.arange(len(labels)), test)
        choice = choose_offset(logits[rest], labels[rest], target=target, cls=cls)
        out[test] = shift(logits[test], choice.delta, cls)
        choices.append(choice)
    return out, choices
