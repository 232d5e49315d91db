"""The sink publishes what the config says, in the payload version it says, into a real SQLite outbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

from mpox_aism.kiosk.config import parse_config
from mpox_aism.kiosk.metrics import KioskMetrics
from mpox_aism.kiosk.outbox import Outbox
from mpox_aism.kiosk.sink import EventSink
from tests.kiosk.test_events import SCHEMA, SCHEMA_V1, _decision

STATES = [("suspected", None, "mpox"), ("other_condition", None, "measles"), ("review", "unfamiliar", "mpox"),
          ("clear", None, "normal")]


def _sink(tmp_path: Path, **events: Any) -> tuple[EventSink, Outbox]:
    config = parse_config({"station_id": "gate-7", "cameras": [{"name": "c", "source": "0"}],
                           "privacy": {"publish_crops": False}, "events": events})
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    # images are off, so the explainer is never asked: none is built (no model needed)
    return EventSink(config, run_id="r", model_version="m", outbox=outbox, topic="t", explainer=None,  # type: ignore[arg-type]
                     metrics=KioskMetrics()), outbox


def _published(outbox: Outbox) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in outbox.pending()]


def test_version_2_publishes_every_state_but_clear(tmp_path: Path) -> None:
    sink, outbox = _sink(tmp_path)
    for state, reason, label in STATES:
        sink.emit("c", _decision(state=state, reason=reason, label=label), None)
    sent = _published(outbox)
    assert [(e["decision"], e.get("reason")) for e in sent] == [(s, r) for s, r, _ in STATES[:3]]
    for e in sent:
        jsonschema.Draft202012Validator(SCHEMA).validate(e)


def test_other_condition_can_be_kept_on_the_box(tmp_path: Path) -> None:
    sink, outbox = _sink(tmp_path, other_condition=False)
    assert sink.emit("c", _decision(state="other_condition", label="measles"), None) is None
    assert _published(outbox) == []


def test_version_1_consumers_keep_getting_version_1(tmp_path: Path) -> None:
    sink, outbox = _sink(tmp_path, schema_version=1, other_condition=False)
    sink.emit("c", _decision(), None)
    sink.emit("c", _decision(state="review", reason="close_range_only"), None)
    sent = _published(outbox)
    assert [e["schema"] for e in sent] == ["mpox-aism/event@1"] * 2
    for e in sent:
        jsonschema.Draft202012Validator(SCHEMA_V1).validate(e)
    assert sink.recent()[-1].reason == "close_range_only"  # the staff page still sees the reason
