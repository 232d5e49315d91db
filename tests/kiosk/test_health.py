"""Health checks (issue 29 item 3): the rules with a fake clock, the schema, and a real daemon + mosquitto."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest
import yaml

from mpox_aism.kiosk.config import HealthConfig, KioskConfig
from mpox_aism.kiosk.health import (
    HealthEvent,
    HealthReporter,
    HealthSnapshot,
    ModelVersions,
    OutboxSample,
    RaisedCheck,
    iso_utc,
    load_model_record,
    save_model_record,
)
from mpox_aism.kiosk.metrics import KioskMetrics
from mpox_aism.kiosk.outbox import Outbox
from tests.conftest import REPO
from tests.kiosk.conftest import HealthClocks as Clock
from tests.kiosk.conftest import camera_sample as _cam
from tests.kiosk.conftest import free_port, wait_until
from tests.kiosk.conftest import health_monitor as _monitor

SCHEMA = json.loads((REPO / "docs" / "schema" / "health-v1.json").read_text())
EVENT = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
ACTIVE = jsonschema.Draft202012Validator({"$ref": "#/$defs/active", "$defs": SCHEMA["$defs"]},
                                         format_checker=jsonschema.FormatChecker())


def _valid(events: list[HealthEvent]) -> list[HealthEvent]:
    """Every event the monitor produces validates against the schema and reads back as itself."""
    for e in events:
        wire = json.loads(e.wire())
        EVENT.validate(wire)
        assert HealthEvent.model_validate(wire) == e
    return events


# ---------------------------------------------------------------------------------------------- camera_stalled
def test_a_stalled_camera_is_raised_after_the_limit_and_cleared_when_frames_come_back():
    clock = Clock()
    m = _monitor(clock, camera_stall_s=60)
    assert m.check([_cam(0)], None, None) == []
    clock.t += 30
    assert m.check([_cam(5)], None, None) == []  # frames: the stall counts from here
    clock.t += 59
    assert m.check([_cam(5)], None, None) == []
    clock.t += 1
    (raised,) = _valid(m.check([_cam(5)], None, None))
    assert (raised.check, raised.subject, raised.state, raised.severity) == ("camera_stalled", "desk", "raised",
                                                                             "critical")
    assert raised.since == iso_utc(clock.wall() - 60)  # the last frame, not the raise
    assert "no frame for 60 s" in raised.detail
    clock.t += 10
    assert m.check([_cam(5)], None, None) == []  # raised once, not every second
    assert [e.subject for e in m.active()] == ["desk"] and m.raised_counts()["camera_stalled"] == 1
    clock.t += 1
    (cleared,) = _valid(m.check([_cam(6)], None, None))
    assert cleared.state == "cleared" and cleared.since == raised.since and cleared.health_id != raised.health_id
    assert m.active() == [] and m.raised_counts() == {"camera_stalled": 0, "outbox_filling": 0}


def test_a_camera_that_never_started_counts_from_the_daemon_start():
    clock = Clock()
    m = _monitor(clock, camera_stall_s=5)
    clock.t += 5  # no check ran before: the first one already sees 5 s without a frame
    (e,) = _valid(m.check([_cam(0, done=True, live=False, error="SourceError: no such file")], None, None))
    assert e.state == "raised" and "since the kiosk started" in e.detail and "no such file" in e.detail
    assert "not restarted" in e.detail


def test_a_file_that_ended_normally_is_not_stalled():
    clock = Clock()
    m = _monitor(clock, camera_stall_s=5)
    m.check([_cam(40, live=False)], None, None)
    clock.t += 3600
    assert m.check([_cam(40, done=True, live=False)], None, None) == []
    assert m.active() == []


def test_a_stalled_file_that_then_ends_normally_is_cleared():
    clock = Clock()
    m = _monitor(clock, camera_stall_s=5)
    m.check([_cam(3, live=False)], None, None)
    clock.t += 6
    assert [e.state for e in m.check([_cam(3, live=False)], None, None)] == ["raised"]
    (e,) = _valid(m.check([_cam(3, done=True, live=False)], None, None))
    assert e.state == "cleared" and "ended normally" in e.detail


# ---------------------------------------------------------------------------------------------- outbox_filling
def test_a_filling_outbox_is_raised_and_cleared_with_hysteresis():
    clock = Clock()
    m = _monitor(clock, outbox_warn_share=0.5, outbox_warn_age_s=300)
    ob = lambda depth, age=1.0: OutboxSample(depth, 100, age if depth else None)  # noqa: E731
    assert m.check([], ob(49), None) == []
    (raised,) = _valid(m.check([], ob(50), None))
    assert (raised.check, raised.subject, raised.severity) == ("outbox_filling", "outbox", "warning")
    assert "50 message(s)" in raised.detail
    assert m.check([], ob(40), None) == []  # under the threshold, not under half of it: still raised
    assert m.check([], ob(25), None) == []
    (cleared,) = _valid(m.check([], ob(24), None))
    assert cleared.state == "cleared" and cleared.since == raised.since
    assert m.check([], ob(30), None) == []  # not raised again until the threshold


def test_an_old_message_raises_outbox_filling_even_when_the_outbox_is_small():
    clock = Clock()
    m = _monitor(clock, outbox_warn_age_s=300)
    assert m.check([], OutboxSample(1, 10_000, 299.0), None) == []
    (raised,) = _valid(m.check([], OutboxSample(1, 10_000, 300.0), None))
    assert "300 s old" in raised.detail
    assert raised.since == iso_utc(clock.wall() - 300)  # began when that message was written
    assert m.check([], OutboxSample(1, 10_000, 200.0), None) == []  # under 300, not under 150: still raised
    (cleared,) = _valid(m.check([], OutboxSample(0, 10_000, None), None))
    assert cleared.state == "cleared"


# ---------------------------------------------------------------------------------------------- model_changed
def test_a_model_change_is_one_notice_and_a_plain_restart_none():
    clock = Clock()
    assert _monitor(clock, None).check([], None, ModelVersions("m1")) == []  # first start: recorded only
    assert _monitor(clock, ModelVersions("m1")).check([], None, ModelVersions("m1")) == []  # plain restart
    m = _monitor(clock, ModelVersions("m1"))
    (e,) = _valid(m.check([], None, ModelVersions("m2")))
    assert (e.check, e.subject, e.state) == ("model_changed", "model", "notice") and "m1 → m2" in e.detail
    assert m.check([], None, ModelVersions("m2")) == []  # once per change, not every second
    assert m.active() == [] and m.last_models == ModelVersions("m2")


def test_a_shadow_installed_and_removed_is_a_notice_each():
    clock = Clock()
    m = _monitor(clock, ModelVersions("m1"))
    (e,) = _valid(m.check([], None, ModelVersions("m1", "s1")))
    assert e.subject == "shadow" and "s1 installed" in e.detail
    both = _valid(m.check([], None, ModelVersions("s1", None)))  # promoted: the shadow is now current
    assert [x.subject for x in both] == ["model", "shadow"] and "s1 removed" in both[1].detail


def test_the_model_record_survives_a_round_trip_and_a_broken_one_is_none(tmp_path):
    p = tmp_path / "health-models.json"
    assert load_model_record(p) is None
    save_model_record(p, ModelVersions("m1", "s1"))
    assert load_model_record(p) == ModelVersions("m1", "s1")
    p.write_text("{not json")
    assert load_model_record(p) is None
    assert [x.name for x in tmp_path.iterdir()] == ["health-models.json"]  # no temporary file left


# ---------------------------------------------------------------------------------------------- the type, the schema
def test_health_event_fields_are_the_schema_fields():
    event = SCHEMA["$defs"]["event"]
    assert {f.alias or n for n, f in HealthEvent.model_fields.items()} == set(event["properties"])
    assert set(event["required"]) == set(event["properties"])
    active = SCHEMA["$defs"]["active"]
    assert {f.alias or n for n, f in HealthSnapshot.model_fields.items()} == set(active["properties"])


def test_the_schema_refuses_a_notice_that_claims_to_be_raised():
    clock = Clock()
    (e,) = _monitor(clock, ModelVersions("m1")).check([], None, ModelVersions("m2"))
    with pytest.raises(jsonschema.ValidationError):
        EVENT.validate(json.loads(e.wire()) | {"state": "raised"})


def test_the_config_section_has_defaults_and_refuses_unknown_keys():
    h = HealthConfig()
    assert (h.enabled, h.camera_stall_s, h.outbox_warn_share, h.outbox_warn_age_s) == (True, 60.0, 0.5, 300.0)
    assert all(f.description for f in HealthConfig.model_fields.values())
    with pytest.raises(ValueError):
        HealthConfig(camera_stall=5)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        HealthConfig(outbox_warn_share=1.5)
    cfg = KioskConfig.model_validate({"station_id": "s", "cameras": [{"name": "a", "source": "x"}],
                                      "health": {"camera_stall_s": 5}})
    assert cfg.health.camera_stall_s == 5


# ---------------------------------------------------------------------------------------------- the reporter
class _Cam:
    """The CameraState fields the reporter reads."""

    def __init__(self, frames: int = 0) -> None:
        self.frames, self.done, self.live, self.last_error = frames, False, True, None


def test_the_reporter_queues_transitions_in_the_outbox_and_keeps_metrics(tmp_path):
    clock = Clock()
    metrics = KioskMetrics()
    with Outbox(tmp_path / "outbox.sqlite3", max_messages=100) as ob:
        rep = HealthReporter(_monitor(clock, ModelVersions("m1"), camera_stall_s=5), outbox=ob,
                             topic="mpox-aism/gate-7/health", publisher=None, metrics=metrics,
                             record_path=tmp_path / "health-models.json")
        cams = {"desk": _Cam()}
        assert rep.tick(cams, ModelVersions("m2"))[0].check == "model_changed"  # type: ignore[arg-type]
        assert load_model_record(tmp_path / "health-models.json") == ModelVersions("m2")
        clock.t += 5
        assert [e.check for e in rep.tick(cams, ModelVersions("m2"))] == ["camera_stalled"]  # type: ignore[arg-type]
        rows = ob.pending()
        assert [m.topic for m in rows] == ["mpox-aism/gate-7/health"] * 2 and not any(m.retain for m in rows)
        for m in rows:
            EVENT.validate(json.loads(m.payload))
        assert [r.subject for r in rep.raised()] == ["desk"]
        ACTIVE.validate(rep.snapshot().payload())
        assert b'mpox_aism_health_raised{check="camera_stalled"} 1.0' in metrics.exposition()
        assert b'mpox_aism_health_raised{check="outbox_filling"} 0.0' in metrics.exposition()


def test_a_health_event_never_pushes_an_alert_out_of_a_full_outbox(tmp_path):
    clock = Clock()
    with Outbox(tmp_path / "outbox.sqlite3", max_messages=3) as ob:
        for i in range(3):
            ob.put("mpox-aism/gate-7/events", json.dumps({"alert": i}))
        rep = HealthReporter(_monitor(clock, camera_stall_s=1), outbox=ob, topic="mpox-aism/gate-7/health",
                             publisher=None, metrics=None, record_path=tmp_path / "health-models.json")
        clock.t += 1
        events = rep.tick({"desk": _Cam()}, None)  # type: ignore[arg-type]
        assert {e.check for e in events} == {"camera_stalled", "outbox_filling"}
        assert [json.loads(m.payload) for m in ob.pending()] == [{"alert": i} for i in range(3)]
        assert rep.not_queued == 2 and ob.stats()["dropped"] == 0


def test_the_status_lists_raised_checks_and_a_stalled_camera_is_down(tmp_path):
    from mpox_aism.kiosk.camera import CameraState
    from mpox_aism.kiosk.config import CameraConfig
    from mpox_aism.kiosk.status import kiosk_status

    h = RaisedCheck(check="camera_stalled", subject="desk", severity="critical", since="x", detail="d")
    with Outbox(tmp_path / "o.sqlite3") as ob:
        sink = SimpleNamespace(store_error=None, unsaved_count=lambda: 0, unsaved_dropped=0)
        st = kiosk_status(station_id="s", run_id="r", model_version="m",
                          cameras={"desk": CameraState(CameraConfig(name="desk", source="x"))}, outbox=ob,
                          sink=sink, publisher=None, health=[h])  # type: ignore[arg-type]
    assert st.down == ["camera:desk"] and st.model_dump(mode="json")["health"][0]["check"] == "camera_stalled"


# ---------------------------------------------------------------------------------------------- end to end
def test_a_camera_nobody_serves_reaches_the_console_as_camera_stalled(tmp_path, broker, collectors):
    """A real daemon on an rtsp:// URL nobody serves, a real mosquitto: camera_stalled arrives on
    <prefix>/health, validates, and a console that subscribes later finds it in the retained snapshot."""
    prefix = "mpox-aism/gate-7"
    sub = collectors(broker.port, f"{prefix}/health").wait_subscribed()
    cfg = {"station_id": "gate-7",
           "cameras": [{"name": "desk", "source": f"rtsp://127.0.0.1:{free_port()}/nobody"}],
           "mqtt": {"url": f"mqtt://127.0.0.1:{broker.port}", "status_interval_s": 1.0},
           "outbox": {"path": str(tmp_path / "outbox.sqlite3"), "flush_timeout_s": 5},
           "http": {"enabled": False}, "health": {"camera_stall_s": 2}}
    path = tmp_path / "kiosk.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "STATE_DIRECTORY": str(tmp_path / "state")}
    proc = subprocess.Popen([sys.executable, "-m", "mpox_aism.cli", "run", "--config", str(path)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: sub.payloads(f"{prefix}/health") or proc.poll() is not None, 180,
                   what="a health event from the daemon")
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        event = json.loads(sub.payloads(f"{prefix}/health")[0])
        EVENT.validate(event)
        assert (event["check"], event["subject"], event["state"], event["station_id"]) == (
            "camera_stalled", "desk", "raised", "gate-7")
        late = collectors(broker.port, f"{prefix}/health/active").wait_subscribed()
        wait_until(lambda: late.payloads(f"{prefix}/health/active"), 30, what="the retained health snapshot")
        snapshot = json.loads(late.payloads(f"{prefix}/health/active")[-1])
        ACTIVE.validate(snapshot)
        assert [(r["check"], r["subject"]) for r in snapshot["raised"]] == [("camera_stalled", "desk")]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert "health check failed" not in err and "health camera_stalled desk raised" in err
    assert load_model_record(Path(tmp_path / "state" / "health-models.json")) is not None
