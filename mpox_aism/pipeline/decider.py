"""Per-track decision: combine a track's crop probabilities over time into a state and, for a review, its reason.

The states and reasons are ``mpox_aism.contracts.decision``'s. The window median (not the mean) keeps
one odd crop — a blurred frame, a sleeve — from flipping a decision. ``suspected`` needs a notifiable
class (default: mpox) over the threshold *and* a consensus of the window's crops voting for it;
``review`` is the paper's manual intervention: the combined top probability is under the threshold
(0.6, ``low_confidence``), the crops disagree (``no_consensus``), or the track ended before it gathered
``min_crops`` crops (``too_few_crops``). A track is decided once it has ``min_crops`` crops (so an alert does not wait
for the person to leave), then again only when a new state has held for ``hold`` classifications in a
row (hysteresis: a steady person whose window hovers at the threshold would otherwise flap between
``clear`` and ``review``, and every flap is an event a person must look at), and when it ends if its
final state differs from the last one emitted.

A close-range crop (kind ``close``: skin filling the frame) does not vote for an alert unless
``close_range_alerts`` says so: the shipped model calls about half of close-up patches of *healthy*
skin mpox (34–70 % by zoom, docs/RESULTS.md), because none of its training photos shows healthy skin
filling the frame. So an alert must be carried by face and hand crops; a track seen only close-up
that the model calls mpox goes to a person (``review``, reason ``close_range_only``) instead of raising
``suspected``. A site that
has measured the model on its own close-range footage may turn the votes back on.

An *unfamiliar* crop (the model's familiarity score, ``mpox_aism.contracts.familiarity``, says it is
unlike the training photos) votes for nothing: it is left out of the window median and of the
consensus, so it can make a track neither ``clear`` nor ``suspected``; a track whose window is more
than ``unfamiliar_share`` unfamiliar goes to ``review`` (a person looks), with ``reason`` saying so.
A model without a score gives no flag, and every crop counts as before.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mpox_aism.contracts.decision import (
    DEFAULT_NOTIFIABLE,
    DEFAULT_THRESHOLD,
    ReviewReason,
    State,
    Verdict,
    decide,
)
from mpox_aism.contracts.labels import LABELS
from mpox_aism.pipeline.crops import Crop


class DecisionConfig(BaseModel):
    """The per-track rule's knobs; also the kiosk config's ``decision:`` section (one home, one set of defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(DEFAULT_THRESHOLD, gt=0, lt=1,
                             description="Top probability under this goes to a person (review).")
    notifiable: tuple[str, ...] = Field(DEFAULT_NOTIFIABLE, min_length=1,
                                        description="Classes that raise a 'suspected' alert.")
    window: int = Field(15, ge=1, description="Crops per track combined by the window median.")
    min_crops: int = Field(3, ge=1, description="Crops a track needs before it is decided.")
    consensus: float = Field(0.5, gt=0, le=1, description="Share of window crops that must vote for the alert.")
    hold: int = Field(3, ge=1, description="Hysteresis: after a track's first decision, a new state is emitted "
                                           "only when it held for this many classifications in a row (1 = at once).")
    close_range_alerts: bool = Field(False, description="Let close-range crops (skin filling the frame) vote for an "
                                     "alert. Off: the shipped model calls about half of close-ups of healthy skin "
                                     "mpox, so a track seen only close-up goes to review, not 'suspected'.")
    unfamiliar_share: float = Field(0.5, ge=0, lt=1, description="A track whose window holds more than this share "
                                    "of unfamiliar crops (the model's familiarity score) goes to review.")

    @field_validator("notifiable")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [x for x in v if x not in LABELS]
        if bad:
            raise ValueError(f"unknown class(es) {bad}; choose from {', '.join(LABELS)}")
        return v


@dataclass
class Decision:
    track_id: int
    state: State
    label: str
    probability: float
    probabilities: dict[str, float]
    n_crops: int
    region_kinds: list[str]
    first_timestamp: float
    last_timestamp: float
    best_crop: np.ndarray = field(repr=False)
    first_frame: int = 0
    last_frame: int = 0
    final: bool = False  # True when emitted at the track's end
    best_kind: str = "face"  # region kind of best_crop: a face crop is a full face (privacy rules)
    unfamiliar: int = 0  # crops of the window the familiarity score called unfamiliar
    reason: ReviewReason | None = None  # why a review (None for every other state)


@dataclass
class _TrackState:
    probs: deque
    kinds: deque
    familiar: deque  # per crop: True / False, or None when the model has no familiarity score
    first_ts: float
    first_frame: int
    last_ts: float = 0.0
    last_frame: int = 0
    best: Crop | None = None
    emitted: State | None = None
    streak: int = 0  # classifications in a row whose state differs from the one emitted


class Decider:
    def __init__(self, config: DecisionConfig | None = None, labels: tuple[str, ...] = LABELS):
        self.config = config or DecisionConfig()
        self.labels = labels
        unknown = set(self.config.notifiable) - set(labels)
        if unknown:
            raise ValueError(f"notifiable classes {sorted(unknown)} are not labels ({', '.join(labels)})")
        self._tracks: dict[int, _TrackState] = {}

    def add(self, track_id: int, crop: Crop, probs: np.ndarray, timestamp: float,
            frame_index: int = 0, familiar: bool | None = None) -> Decision | None:
        """Record one classified crop; returns a decision when the track first has enough crops,
        or when its state changes after that. ``familiar``: the familiarity score's verdict (None: no score)."""
        c = self.config
        st = self._tracks.get(track_id)
        if st is None:
            st = self._tracks[track_id] = _TrackState(deque(maxlen=c.window), deque(maxlen=c.window),
                                                         deque(maxlen=c.window), timestamp, frame_index)
        st.probs.append(np.asarray(probs, dtype=np.float64))
        st.kinds.append(crop.region.kind)
        st.familiar.append(None if familiar is None else bool(familiar))
        st.last_ts, st.last_frame = timestamp, frame_index
        if st.best is None or crop.quality > st.best.quality:
            st.best = crop
        if len(st.probs) < c.min_crops:
            return None
        d = self._decide(track_id, st, final=False)
        if d.state == st.emitted:
            st.streak = 0
            return None
        # the evidence has left the emitted state for `hold` classifications in a row: say where it is now
        # (counting any other state, so a window alternating between two new states is not held for ever)
        st.streak += 1
        if st.emitted is None or st.streak >= c.hold:  # the first decision is never held back
            st.emitted, st.streak = d.state, 0
            return d
        return None

    def end(self, track_id: int) -> Decision | None:
        """The track left: a final decision if it differs from the last one emitted (or none was)."""
        st = self._tracks.pop(track_id, None)
        if st is None or not st.probs:
            return None
        d = self._decide(track_id, st, final=True)
        return d if d.state != st.emitted else None

    def _decide(self, track_id: int, st: _TrackState, *, final: bool) -> Decision:
        c = self.config
        window = np.stack(st.probs)
        familiar = np.array([f is not False for f in st.familiar])  # no score: every crop counts
        counted = window[familiar] if familiar.any() else window  # an unfamiliar crop votes for nothing
        med = np.median(counted, axis=0)
        med = med / med.sum()
        top = int(med.argmax())
        label, p = self.labels[top], float(med[top])
        voters = (window.argmax(axis=1) == top) & familiar
        close = np.array([k == "close" for k in st.kinds])
        counted_voters = voters if c.close_range_alerts else voters & ~close  # module docstring: close-ups
        unfamiliar = int((~familiar).sum())
        verdict = decide(label, p, threshold=c.threshold, notifiable=c.notifiable,
                         familiar=unfamiliar <= c.unfamiliar_share * len(familiar),
                         enough_evidence=len(st.probs) >= c.min_crops,
                         consensus=float(counted_voters.mean()) >= c.consensus)
        if verdict.reason == "no_consensus" and float(voters.mean()) >= c.consensus:
            verdict = Verdict("review", "close_range_only")  # the close-ups' votes alone would have carried it
        assert st.best is not None
        return Decision(track_id, verdict.state, label, p, {k: float(v) for k, v in zip(self.labels, med, strict=True)},
                        len(st.probs), sorted(set(st.kinds)), st.first_ts, st.last_ts, st.best.image,
                        st.first_frame, st.last_frame, final, st.best.region.kind, unfamiliar, verdict.reason)

    def track_ids(self) -> list[int]:
        """The tracks still open (a shadow head closes the same ones)."""
        return list(self._tracks)

    def end_all(self) -> list[Decision]:
        return [d for tid in list(self._tracks) if (d := self.end(tid)) is not None]
