from mpox_aism.contracts.decision import STATES, decide


def test_the_threshold_rule() -> None:
    assert decide("mpox", 0.7) == "suspected"
    assert decide("mpox", 0.5) == "review"
    assert decide("normal", 0.7) == "clear"
    assert decide("chickenpox", 0.65, notifiable=("mpox", "chickenpox")) == "suspected"
    assert decide("normal", 0.6) == "clear"  # at the threshold is not under it
    assert decide("normal", 0.59, threshold=0.5) == "clear"


def test_evidence_and_consensus() -> None:
    assert decide("normal", 0.99, enough_evidence=False) == "review"
    assert decide("mpox", 0.9, consensus=False) == "review"  # the model leans to an alert, its crops disagree
    assert decide("normal", 0.9, consensus=False) == "clear"  # consensus is asked of alerts only


def test_states_match_the_event_schema() -> None:
    import json
    from pathlib import Path

    schema = json.loads((Path(__file__).parents[2] / "docs" / "schema" / "event-v1.json").read_text())
    assert tuple(schema["properties"]["decision"]["enum"]) == STATES
