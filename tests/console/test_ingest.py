"""Parsing rules, without a broker: topics, the station check, schema versions, availability, status."""

from __future__ import annotations

import json

from mpox_aism.bench.fleet import synthetic_event
from mpox_aism.console.ingest import AvailabilityIn, EventIn, Kind, Rejected, StatusIn, parse, parse_topic
from mpox_aism.kiosk.status import KioskStatus, MqttStatus, OutboxStatus

ROOT = "mpox-aism"


def test_topics():
    assert parse_topic(ROOT, "mpox-aism/s1/events").kind is Kind.EVENTS
    assert parse_topic(ROOT, "mpox-aism/s1/events").station_id == "s1"
    assert parse_topic("a/b", "a/b/s2/status").station_id == "s2"
    for bad in ("mpox-aism/s1/acks", "mpox-aism/s1/x/events", "other/s1/events", "mpox-aism//events"):
        assert parse_topic(ROOT, bad) is None, bad


def test_a_valid_event_is_typed_and_keeps_its_bytes():
    ev = synthetic_event("s1", 0, "r")
    got = parse(ROOT, "mpox-aism/s1/events", ev.wire())
    assert isinstance(got, EventIn) and got.event == ev and got.payload == ev.wire()
    assert got.event_ts is not None


def test_an_event_under_another_stations_topic_is_rejected():
    got = parse(ROOT, "mpox-aism/s2/events", synthetic_event("s1", 0, "r").wire())
    assert isinstance(got, Rejected) and "station mismatch" in got.error


def test_invalid_events_are_rejected_with_a_reason():
    v1 = synthetic_event("s1", 0, "r").wire(1)
    got = parse(ROOT, "mpox-aism/s1/events", v1)
    assert isinstance(got, Rejected) and "version 1" in got.error and got.payload == v1
    for payload in (b"not json", b"{}", json.dumps({"event_id": "x"}).encode(), b"\xff\xfe"):
        got = parse(ROOT, "mpox-aism/s1/events", payload)
        assert isinstance(got, Rejected) and got.error, payload


def test_availability_and_status():
    assert parse(ROOT, "mpox-aism/s1/availability", b"offline") == AvailabilityIn("s1", False)
    assert isinstance(parse(ROOT, "mpox-aism/s1/availability", b"maybe"), Rejected)
    status = KioskStatus(down=["mqtt"], station_id="s1", run_id="r", model_version="m", cameras={},
                         mqtt=MqttStatus(configured=True, connected=False, published=3, last_error=None),
                         outbox=OutboxStatus(depth=2, dropped=0, oldest_age_s=1.5, unsaved=0, unsaved_dropped=0,
                                             write_error=None))
    got = parse(ROOT, "mpox-aism/s1/status", status.model_dump_json().encode())
    assert isinstance(got, StatusIn) and got.status == status
    assert isinstance(parse(ROOT, "mpox-aism/s1/status", b'{"down": 3}'), Rejected)
