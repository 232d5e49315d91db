"""Paired group bootstrap: B − A of two models on the same photos, with a 95 % interval of the difference.

Two recipes' own intervals overlap for almost every change measured here, because both models err on
the same hard photos; resampling the groups once and scoring both models on each draw cancels what
they share (docs/RESULTS.md, session 7). Used by ``research/compare_cv.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mpox_aism.contracts.labels import LABELS
from mpox_aism.training.metrics import bootstrap_figures


@dataclass(frozen=True)
class PairedSet:
    """Two models' predicted classes for the same photos: the unit of a paired comparison."""

    pred_a: np.ndarray
    pred_b: np.ndarray
    y_true: np.ndarray
    groups: Sequence[str]


@dataclass(frozen=True)
class PairedDifference:
    """``b − a`` of one figure (averaged over the sets), with its 95 % interval from paired resampling."""

    metric: str
    a: float
    b: float
    diff: float
    low: float
    high: float


def paired_group_bootstrap(sets: Sequence[PairedSet], *, n: int = 1000, seed: int = 0,
                           focus: str = "mpox") -> list[PairedDifference]:
    """Is B better than A on the same photos? Differences of macro-F1, accuracy and ``focus`` recall.

    Each resample draws whole groups once and scores both models on that draw, so what the two share
    (which photos are hard) cancels: the interval of the difference is far narrower than the two
    models' own intervals side by side, which overlap for nearly every recipe change here. With
    several sets (the leave-one-source-out folds) each is resampled on its own and the figure is
    their mean, as in "mean LOSO macro-F1".
    """
    k = LABELS.index(focus)
    rng = np.random.default_rng(seed)
    prepared = []
    for s in sets:
        names = np.asarray(list(s.groups))
        uniq = np.unique(names)
        prepared.append((np.asarray(s.y_true, dtype=int), np.asarray(s.pred_a), np.asarray(s.pred_b),
                         [np.flatnonzero(names == g) for g in uniq]))

    def mean_figures(draw: Sequence[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
        fa, fb = [], []
        for (y, pa, pb, _), idx in zip(prepared, draw, strict=True):
            idx = slice(None) if idx is None else idx
            fa.append(bootstrap_figures(y[idx], pa[idx], k))
            fb.append(bootstrap_figures(y[idx], pb[idx], k))
        return np.nanmean(fa, axis=0), np.nanmean(fb, axis=0)

    point_a, point_b = mean_figures([None] * len(prepared))
    diffs = []
    for _ in range(n):
        draw = [np.concatenate([m[i] for i in rng.integers(0, len(m), len(m))]) for *_, m in prepared]
        fa, fb = mean_figures(draw)
        diffs.append(fb - fa)
    lo, hi = np.nanpercentile(np.asarray(diffs), [2.5, 97.5], axis=0)
    names = ("macro_f1", "accuracy", f"{focus}_recall")
    return [PairedDifference(m, round(float(point_a[i]), 4), round(float(point_b[i]), 4),
                             round(float(point_b[i] - point_a[i]), 4), round(float(lo[i]), 4), round(float(hi[i]), 4))
            for i, m in enumerate(names)]
