import json
from pathlib import Path

import pytest

from mpox_aism.contracts.decision import REVIEW_REASONS, STATES, Verdict, decide

SCHEMA_DIR = Path(__file__).parents[2] / "docs" / "schema"


def test_the_threshold_rule() -> None:
    assert decide("mpox", 0.7) == Verdict("suspected")
    assert decide("mpox", 0.5) == Verdict("review", "low_confidence")
    assert decide("normal", 0.7) == Verdict("clear")
    assert decide("chickenpox", 0.65, notifiable=("mpox", "chickenpox")) == Verdict("suspected")
    assert decide("normal", 0.6) == Verdict("clear")  # at the threshold is not under it
    assert decide("normal", 0.59, threshold=0.5) == Verdict("clear")


def test_clear_is_healthy_skin_only() -> None:
    """A confident call of a disease that is not notifiable is its own state, never ``clear``."""
    for label in ("chickenpox", "measles", "bullous", "eczema", "urticaria", "vasculitis"):
        assert decide(label, 0.9) == Verdict("other_condition")
    assert decide("chickenpox", 0.9, notifiable=("mpox", "chickenpox")) == Verdict("suspected")


def test_every_reason_in_its_order() -> None:
    """The first rule that sends a case to a person names it."""
    assert decide("mpox", 0.99, familiar=False, enough_evidence=False) == Verdict("review", "unfamiliar")
    assert decide("normal", 0.99, enough_evidence=False) == Verdict("review", "too_few_crops")
    assert decide("normal", 0.4, enough_evidence=False) == Verdict("review", "too_few_crops")
    assert decide("eczema", 0.4) == Verdict("review", "low_confidence")
    assert decide("mpox", 0.9, consensus=False) == Verdict("review", "no_consensus")
    assert decide("normal", 0.9, consensus=False) == Verdict("clear")  # consensus is asked of alerts only
    assert decide("measles", 0.9, consensus=False) == Verdict("other_condition")
    # close_range_only is the decider's rule (tests/pipeline/test_decider.py)


def test_a_review_has_a_reason_and_nothing_else_has_one() -> None:
    with pytest.raises(ValueError):
        Verdict("review")
    with pytest.raises(ValueError):
        Verdict("clear", "unfamiliar")


def test_states_and_reasons_match_the_event_schemas() -> None:
    v2 = json.loads((SCHEMA_DIR / "event-v2.json").read_text())
    assert set(v2["properties"]["decision"]["enum"]) == set(STATES) - {"clear"}  # clear never leaves the box
    assert tuple(v2["properties"]["reason"]["enum"]) == REVIEW_REASONS
    v1 = json.loads((SCHEMA_DIR / "event-v1.json").read_text())
    assert set(v1["properties"]["decision"]["enum"]) == {"clear", "review", "suspected"}  # frozen: v1 never changes
