"""Cross-validation folds by group: stratified group k-fold and leave-one-source-out.

One validation side of ~460 photos (21 mpox from a handful of patients) cannot tell a better
recipe from a lucky epoch. Out-of-fold predictions use every photo once as a test photo, so
figures rest on the whole dev set; groups (patients, topics, near-duplicates) never straddle a
fold boundary, or the model would be tested on copies of what it trained on.

Leave-one-source-out holds out every photo of one source (and any group it shares with another):
the project's own proxy for a site whose camera, population and photographers it has never seen.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mpox_aism.training.data import Sample
from mpox_aism.training.split import check_disjoint


@dataclass(frozen=True)
class Fold:
    """Indices into the sample list: train on ``train``, predict ``test``."""

    name: str
    train: np.ndarray
    test: np.ndarray


def _groups(samples: Sequence[Sample]) -> dict[str, list[int]]:
    members: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        members[s.group].append(i)
    return members


def group_kfold(samples: Sequence[Sample], k: int = 5, *, seed: int = 0) -> list[Fold]:
    """``k`` folds, each group in exactly one test fold, each class spread as evenly as its groups allow.

    Groups are stratified by their most common label; within a class, groups go largest first
    (ties in seeded random order) to the fold holding the fewest photos of that class so far, then
    the fewest photos overall — the greedy rule of scikit-learn's StratifiedGroupKFold, without
    the dependency. A class with fewer groups than ``k`` is simply absent from some test folds.
    """
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    members = _groups(samples)
    if len(members) < k:
        raise ValueError(f"{len(members)} groups cannot fill {k} folds")
    by_class: dict[int, list[str]] = defaultdict(list)
    for g, idx in members.items():
        by_class[Counter(samples[i].label for i in idx).most_common(1)[0][0]].append(g)
    rng = random.Random(seed)
    fold_of: dict[str, int] = {}
    totals = [0] * k
    for label in sorted(by_class):
        groups = sorted(by_class[label])
        rng.shuffle(groups)
        groups.sort(key=lambda g: -len(members[g]))  # stable: shuffled order breaks size ties
        per_class = [0] * k
        for g in groups:
            f = min(range(k), key=lambda j: (per_class[j], totals[j], j))
            fold_of[g] = f
            per_class[f] += len(members[g])
            totals[f] += len(members[g])
    folds = []
    all_idx = np.arange(len(samples))
    for f in range(k):
        test = np.array(sorted(i for g, idx in members.items() if fold_of[g] == f for i in idx), dtype=int)
        train = np.setdiff1d(all_idx, test)
        folds.append(Fold(name=f"fold{f + 1}", train=train, test=test))
    _check(samples, folds, complete=True)
    return folds


def leave_source_out(samples: Sequence[Sample], source: str, *, column: str = "source") -> Fold:
    """Test on every photo of ``source``; train on the rest minus any group that also holds one.

    A group that joins a photo of ``source`` with photos of other sources (a topic published by two
    collections) goes wholly to the test side, so those few other-source photos are tested too:
    dropping them would hide them from both sides, keeping them in training would leak the group.
    """
    held = {s.group for s in samples if s.columns().get(column) == source}
    if not held:
        known = sorted({s.columns().get(column, "") for s in samples})
        raise ValueError(f"no photo has {column}={source!r}; known: {', '.join(known)}")
    test = np.array([i for i, s in enumerate(samples) if s.group in held], dtype=int)
    train = np.setdiff1d(np.arange(len(samples)), test)
    fold = Fold(name=f"without_{source}", train=train, test=test)
    _check(samples, [fold], complete=False)
    return fold


def _check(samples: Sequence[Sample], folds: Sequence[Fold], *, complete: bool) -> None:
    """Refuse folds where a group straddles train/test, or (k-fold) a photo is tested twice or never."""
    for f in folds:
        check_disjoint([samples[i] for i in f.train], [samples[i] for i in f.test])
    if complete:
        seen = np.concatenate([f.test for f in folds])
        if len(seen) != len(samples) or len(np.unique(seen)) != len(samples):
            raise AssertionError("k-fold: every photo must be tested exactly once")
