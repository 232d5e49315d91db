"""The decision states, the reasons for a review, and the paper's threshold rule, in one place.

States say what they mean to the person who acts on them:

- ``suspected`` — a notifiable class (default mpox) at or over the threshold, the evidence agreeing:
  security staff act on it.
- ``other_condition`` — a confident call of a disease that is *not* notifiable (chickenpox, measles,
  eczema…): contagious rashes a checkpoint also cares about, so never shown in the colour of healthy
  skin; whether it is an event is the kiosk's config (``events.other_condition``).
- ``clear`` — a confident call of healthy skin (``normal``) and nothing else: "no alert" is not
  "healthy", so a rash the model is sure is eczema is never ``clear``.
- ``review`` — a person looks; :data:`REVIEW_REASONS` says why, first rule first: the input is unlike
  the training photos (``unfamiliar``), the track ended before it had enough crops (``too_few_crops``),
  the top probability is under the threshold (0.6, the paper's figure; ``low_confidence``), the model
  leans to an alert but the crops disagree (``no_consensus``) or only close-range crops voted for it
  (``close_range_only``, the decider's close-range rule).

The per-track decider adds the evidence conditions (enough crops, a consensus of the window); the
diagnosis API applies the rule to one photo, where the evidence is that photo. Both call
:func:`decide`, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

State = Literal["clear", "other_condition", "review", "suspected"]
STATES: tuple[State, ...] = get_args(State)
ReviewReason = Literal["unfamiliar", "too_few_crops", "low_confidence", "no_consensus", "close_range_only"]
REVIEW_REASONS: tuple[ReviewReason, ...] = get_args(ReviewReason)
DEFAULT_THRESHOLD = 0.6
DEFAULT_NOTIFIABLE: tuple[str, ...] = ("mpox",)
HEALTHY = "normal"  # the one class whose confident call is ``clear``


@dataclass(frozen=True)
class Verdict:
    """A state and, for ``review`` only, why."""

    state: State
    reason: ReviewReason | None = None

    def __post_init__(self) -> None:
        if (self.state == "review") != (self.reason is not None):
            raise ValueError(f"a review needs a reason and only a review has one ({self.state}, {self.reason})")


def decide(label: str, probability: float, *, threshold: float = DEFAULT_THRESHOLD,
           notifiable: Sequence[str] = DEFAULT_NOTIFIABLE, familiar: bool = True, enough_evidence: bool = True,
           consensus: bool = True) -> Verdict:
    """The rule, first match wins (module docstring). A notifiable class needs ``consensus`` too (without
    it a person looks: the model leans to an alert but its crops disagree); a healthy or other call does not
    (it raises no alert)."""
    if not familiar:
        return Verdict("review", "unfamiliar")
    if not enough_evidence:
        return Verdict("review", "too_few_crops")
    if probability < threshold:
        return Verdict("review", "low_confidence")
    if label in notifiable:
        return Verdict("suspected") if consensus else Verdict("review", "no_consensus")
    return Verdict("clear") if label == HEALTHY else Verdict("other_condition")


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``: how every backend calibrates its output."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
