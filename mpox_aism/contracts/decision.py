"""The decision states and the paper's threshold rule, in one place.

A top probability under the threshold (0.6, the paper's figure) goes to a person (``review``);
at or over it, a notifiable class (default mpox) is ``suspected`` — when the evidence agrees — and
anything else is ``clear``. The per-track decider adds the evidence conditions (enough crops, a
consensus of the window); the diagnosis API applies the rule to one photo, where the evidence is
that photo. Both call :func:`decide`, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

State = Literal["clear", "review", "suspected"]
STATES: tuple[State, ...] = ("clear", "review", "suspected")
DEFAULT_THRESHOLD = 0.6
DEFAULT_NOTIFIABLE: tuple[str, ...] = ("mpox",)


def decide(label: str, probability: float, *, threshold: float = DEFAULT_THRESHOLD,
           notifiable: Sequence[str] = DEFAULT_NOTIFIABLE, enough_evidence: bool = True,
           consensus: bool = True) -> State:
    """``review`` without enough evidence or under the threshold; a notifiable class needs consensus
    too (without it a person looks: the model leans to an alert but its crops disagree)."""
    if not enough_evidence or probability < threshold:
        return "review"
    if label in notifiable:
        return "suspected" if consensus else "review"
    return "clear"


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``: how every backend calibrates its output."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
