"""A shadow head: a second classifier that sees every crop the deciding one classifies, and only counts.

Why: a new head (a site head from ``mpox-aism adapt``) should be watched on the box's own crowd before
it decides anything. Its own :class:`Decider` (same rule, same config) turns its probabilities into
states per track; those decisions never become events. What is kept is how many of each state it
reached and, per ended track, whether it ended in the same state as the deciding head (a track no
head decided is not compared). An error in the shadow is logged and counted and the frame goes on
without it; after ``MAX_ERRORS`` in a row the shadow switches itself off, so a broken head costs
nothing more than its log line.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mpox_aism.contracts.decision import STATES, State
from mpox_aism.inference.classifier import Classifier
from mpox_aism.pipeline.crops import Crop
from mpox_aism.pipeline.decider import Decider, DecisionConfig

log = logging.getLogger(__name__)
MAX_ERRORS = 3  # shadow failures in a row before it is switched off for this camera


@dataclass(frozen=True)
class ShadowCounts:
    """A copy of the shadow's counters another thread may read (status, metrics, summary)."""

    model_version: str
    decisions: dict[str, int] = field(default_factory=dict)  # the shadow's decisions, by state (never events)
    compared: int = 0  # ended tracks that at least one head decided
    differ: int = 0  # of those, tracks whose last state differs between the heads
    errors: int = 0
    active: bool = True  # False once switched off after MAX_ERRORS failures in a row


class Shadow:
    def __init__(self, classifier: Classifier, config: DecisionConfig | None = None) -> None:
        self.classifier = classifier
        self.decider = Decider(config, classifier.labels)
        self.decisions: Counter[str] = Counter()
        self.compared = self.differ = self.errors = 0
        self.active = True
        self._failures = 0
        self._state: dict[int, State] = {}  # the shadow's last state per open track

    @property
    def model_version(self) -> str:
        return self.classifier.meta.model_version

    def add(self, due: list[tuple[int, Crop]], timestamp: float, frame_index: int) -> None:
        """Classify the crops the deciding head just classified, and decide per track, only counting."""
        if not self.active or not due:
            return
        try:
            result = self.classifier.classify([c.image for _, c in due])
            familiar: list[Any] = [None] * len(due) if result.familiar is None else result.familiar.tolist()
            for (tid, c), p, f in zip(due, result.probabilities, familiar, strict=True):
                d = self.decider.add(tid, c, np.asarray(p), timestamp, frame_index, f)
                if d is not None:
                    self._count(tid, d.state)
            self._failures = 0
        except Exception as e:  # the shadow must never cost the deciding head a frame
            self._failed(e)

    def end(self, track_id: int, current: State | None) -> None:
        """The track ended; ``current``: the deciding head's last state for it (None: never decided)."""
        if not self.active:  # switched off: its states are not comparable any more
            self._state.pop(track_id, None)
            return
        try:
            d = self.decider.end(track_id)
            if d is not None:
                self._count(track_id, d.state)
        except Exception as e:
            self._failed(e)
        mine = self._state.pop(track_id, None)
        if mine is None and current is None:
            return
        self.compared += 1
        if mine != current:
            self.differ += 1

    def end_all(self, current: dict[int, State]) -> None:
        """The source ended: close every track either head still has open."""
        for tid in sorted(set(self.decider.track_ids()) | set(self._state) | set(current)):
            self.end(tid, current.get(tid))

    def _count(self, track_id: int, state: State) -> None:
        self.decisions[state] += 1
        self._state[track_id] = state

    def _failed(self, e: Exception) -> None:
        self.errors += 1
        self._failures += 1
        log.error("shadow model %s failed (%s: %s); the current model carries on", self.model_version,
                  type(e).__name__, e)
        if self._failures >= MAX_ERRORS:
            self.active = False
            log.error("shadow model %s switched off after %d failures in a row", self.model_version, self._failures)

    def counts(self) -> ShadowCounts:
        return ShadowCounts(self.model_version, {s: self.decisions.get(s, 0) for s in STATES}, self.compared,
                            self.differ, self.errors, self.active)
