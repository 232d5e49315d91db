"""The eight classes, in the one fixed order used by every model, file and event."""

from __future__ import annotations

LABELS: tuple[str, ...] = (
    "mpox",
    "chickenpox",
    "measles",
    "bullous",
    "eczema",
    "urticaria",
    "vasculitis",
    "normal",
)
NUM_CLASSES = len(LABELS)
LABEL_TO_INDEX: dict[str, int] = {name: i for i, name in enumerate(LABELS)}


def label_index(name: str) -> int:
    """Index of a class name; a clear error for a name outside the fixed list."""
    try:
        return LABEL_TO_INDEX[name]
    except KeyError:
        raise ValueError(f"unknown class {name!r}; expected one of {', '.join(LABELS)}") from None
