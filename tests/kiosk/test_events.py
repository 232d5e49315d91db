"""``Event`` is the JSON Schema as a type: the two cannot drift apart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mpox_aism.contracts.labels import LABELS
from mpox_aism.kiosk.config import PrivacyConfig
from mpox_aism.kiosk.events import Event, build_event
from mpox_aism.kiosk.privacy import ImagePolicy
from mpox_aism.pipeline.decider import Decision

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "schema" / "event-v1.json").read_text())


def _decision(kind: str = "hand") -> Decision:
    probs = dict.fromkeys(LABELS, 0.02) | {"mpox": 0.86}
    return Decision(track_id=3, state="suspected", label="mpox", probability=0.86, probabilities=probs, n_crops=5,
                    region_kinds=[kind], first_timestamp=1.7e9, last_timestamp=1.7e9 + 2,
                    best_crop=np.full((40, 30, 3), 120, np.uint8), first_frame=10, last_frame=40, best_kind=kind)


def test_event_fields_are_the_schema_fields():
    fields = {f.alias or name for name, f in Event.model_fields.items()}
    assert fields == set(SCHEMA["properties"])
    required = {f.alias or name for name, f in Event.model_fields.items() if f.is_required()}
    defaulted_consts = {"schema", "research_use_only"}  # always written, never optional on the wire
    assert required | defaulted_consts == set(SCHEMA["required"])


def test_an_event_validates_against_the_schema_and_encodes_once():
    import jsonschema

    event = build_event(_decision(), station_id="gate-7", camera="entrance", run_id="r1", model_version="m",
                        attach_images=True, crop_max_px=PrivacyConfig().crop_max_px)
    wire = json.loads(event.encode())
    jsonschema.Draft202012Validator(SCHEMA).validate(wire)
    assert wire == event.payload() and "crop_jpeg_base64" in wire
    assert Event.model_validate(wire) == event  # what the kiosk writes, a consumer can read back
    same = build_event(_decision(), station_id="gate-7", camera="entrance", run_id="r1", model_version="m",
                       attach_images=True, crop_max_px=PrivacyConfig().crop_max_px)
    assert same.event_id == event.event_id  # stable: the consumer's de-duplication key


def test_a_face_crop_leaves_without_images():
    policy = ImagePolicy(PrivacyConfig())
    attach = policy.verdict(_decision("face"), guard=None) == "attach"
    event = build_event(_decision("face"), station_id="s", camera="c", run_id="r", model_version="m",
                        attach_images=attach, crop_max_px=PrivacyConfig().crop_max_px)
    wire = json.loads(event.encode())
    assert "crop_jpeg_base64" not in wire and "gradcam_jpeg_base64" not in wire
    jsonschema_ok = set(wire) <= set(SCHEMA["properties"])
    assert jsonschema_ok
