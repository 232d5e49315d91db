"""``Event`` is the JSON Schema as a type: the two cannot drift apart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mpox_aism.contracts.decision import REVIEW_REASONS
from mpox_aism.contracts.labels import LABELS
from mpox_aism.kiosk.config import PrivacyConfig
from mpox_aism.kiosk.events import V2_ONLY_FIELDS, Event, build_event
from mpox_aism.kiosk.privacy import ImagePolicy
from mpox_aism.pipeline.decider import Decision

SCHEMAS = Path(__file__).parents[2] / "docs" / "schema"
SCHEMA = json.loads((SCHEMAS / "event-v2.json").read_text())
SCHEMA_V1 = json.loads((SCHEMAS / "event-v1.json").read_text())


def _decision(kind: str = "hand", state: str = "suspected", reason: str | None = None,
              label: str = "mpox") -> Decision:
    probs = dict.fromkeys(LABELS, 0.02) | {label: 0.86}
    return Decision(track_id=3, state=state, label=label, probability=0.86, probabilities=probs, n_crops=5,
                    region_kinds=[kind], first_timestamp=1.7e9, last_timestamp=1.7e9 + 2,
                    best_crop=np.full((40, 30, 3), 120, np.uint8), first_frame=10, last_frame=40, best_kind=kind,
                    unfamiliar=3 if reason == "unfamiliar" else 0, reason=reason)


def _event(d: Decision) -> Event:
    return build_event(d, station_id="gate-7", camera="entrance", run_id="r1", model_version="m",
                       attach_images=True, crop_max_px=PrivacyConfig().crop_max_px)


def test_event_fields_are_the_schema_fields():
    fields = {f.alias or name for name, f in Event.model_fields.items()}
    assert fields == set(SCHEMA["properties"])
    required = {f.alias or name for name, f in Event.model_fields.items() if f.is_required()}
    defaulted_consts = {"schema", "research_use_only"}  # always written, never optional on the wire
    assert required | defaulted_consts == set(SCHEMA["required"])
    # version 1 is version 2 without the new fields: what the v1 wire form leaves out
    assert set(SCHEMA["properties"]) - set(SCHEMA_V1["properties"]) == V2_ONLY_FIELDS


def test_every_published_state_and_reason_validates_in_both_versions():
    import jsonschema

    v2, v1 = jsonschema.Draft202012Validator(SCHEMA), jsonschema.Draft202012Validator(SCHEMA_V1)
    cases = [("suspected", None, "mpox"), ("other_condition", None, "measles"),
             *[("review", r, "mpox") for r in REVIEW_REASONS]]
    for state, reason, label in cases:
        event = _event(_decision(state=state, reason=reason, label=label))
        wire = json.loads(event.wire())
        v2.validate(wire)
        assert wire["decision"] == state and wire.get("reason") == reason
        assert Event.model_validate(wire) == event
        if state == "other_condition":  # version 1 has no word for it: refused, never sent half-true
            with pytest.raises(ValueError, match="other_condition"):
                event.wire(1)
            continue
        old = json.loads(event.wire(1))
        v1.validate(old)
        assert old["schema"] == "mpox-aism/event@1" and "reason" not in old


def test_a_review_without_its_reason_is_not_an_event():
    import jsonschema

    wire = json.loads(_event(_decision(state="review", reason="low_confidence")).wire())
    del wire["reason"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate(wire)
    with pytest.raises(ValueError):
        Event.model_validate(wire)
    with pytest.raises(ValueError, match="clear"):
        _event(_decision(state="clear", label="normal"))


def test_the_config_refuses_other_condition_events_in_version_1():
    from mpox_aism.kiosk.config import EventsConfig

    assert EventsConfig().schema_version == 2 and EventsConfig().other_condition
    assert not EventsConfig(schema_version=1, other_condition=False).other_condition
    with pytest.raises(ValueError, match="other_condition"):
        EventsConfig(schema_version=1)


def test_an_event_validates_against_the_schema_and_encodes_once():
    import jsonschema

    event = _event(_decision())
    wire = json.loads(event.wire())
    jsonschema.Draft202012Validator(SCHEMA).validate(wire)
    assert wire == event.payload() and "crop_jpeg_base64" in wire
    assert Event.model_validate(wire) == event  # what the kiosk writes, a consumer can read back
    same = _event(_decision())
    assert same.event_id == event.event_id  # stable: the consumer's de-duplication key


def test_a_face_crop_leaves_without_images():
    policy = ImagePolicy(PrivacyConfig())
    attach = policy.verdict(_decision("face"), guard=None) == "attach"
    event = build_event(_decision("face"), station_id="s", camera="c", run_id="r", model_version="m",
                        attach_images=attach, crop_max_px=PrivacyConfig().crop_max_px)
    wire = json.loads(event.wire())
    assert "crop_jpeg_base64" not in wire and "gradcam_jpeg_base64" not in wire
    jsonschema_ok = set(wire) <= set(SCHEMA["properties"])
    assert jsonschema_ok
