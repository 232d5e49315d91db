"""The daemon as a real process: real photos in, a real mosquitto out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO, link_photos
from tests.kiosk.conftest import wait_until

EVENT_KEYS = {"event_id", "station_id", "camera", "track_id", "decision", "label", "probability", "probabilities",
              "region_kinds", "model_version", "time"}


def _config(tmp_path: Path, source: Path, mqtt_url: str | None, **extra) -> Path:
    cfg = {"station_id": "gate-7", "cameras": [{"name": "desk", "source": str(source), "hold_frames": 5,
                                                "detect_stride": 1, "classify_stride": 1}],
           "mqtt": {"url": mqtt_url, "status_interval_s": 1.0},
           "outbox": {"path": str(tmp_path / "outbox.sqlite3"), "flush_timeout_s": 20},
           "http": {"enabled": False}, **extra}
    p = tmp_path / "kiosk.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _run(*args: str, timeout: float = 300, state: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "STATE_DIRECTORY": str(state)} if state else None
    return subprocess.run([sys.executable, "-m", "mpox_aism.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_mpox_photos_reach_the_broker(tmp_path, broker, collectors):
    folder = link_photos(tmp_path, "mpox", 8)
    prefix = "mpox-aism/gate-7"
    sub = collectors(broker.port, f"{prefix}/#").wait_subscribed()
    cfg = _config(tmp_path, folder, f"mqtt://127.0.0.1:{broker.port}")
    proc = _run("run", "--config", str(cfg), "--summary", str(tmp_path / "summary.json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames"] == 40 and summary["events"] >= 1 and summary["pending"] == 0
    assert summary["published"] == summary["events"]
    wait_until(lambda: len(sub.payloads(f"{prefix}/events")) >= summary["events"], 30, what="events")
    events = [json.loads(p) for p in sub.payloads(f"{prefix}/events")]
    assert {e["decision"] for e in events} <= {"suspected", "review"}
    assert any(e["decision"] == "suspected" for e in events)
    for e in events:
        assert set(e) >= EVENT_KEYS and e["station_id"] == "gate-7" and e["camera"] == "desk"
        assert abs(sum(e["probabilities"].values()) - 1) < 0.01
        if "face" in e["region_kinds"] and e["region_kinds"] == ["face"]:
            assert "crop_jpeg_base64" not in e  # never a full face unless allowed
    assert len({e["event_id"] for e in events}) == len(events)
    avail = [p.decode() for p in sub.payloads(f"{prefix}/availability")]
    assert avail[0] == "online" and avail[-1] == "offline"
    assert json.loads(sub.last(f"{prefix}/status"))["station_id"] == "gate-7"


def test_no_broker_keeps_events_in_the_outbox(tmp_path):
    """…and every event's crop in the label store, in the state directory (issue 26)."""
    folder = link_photos(tmp_path, "mpox", 3)
    cfg = _config(tmp_path, folder, None)
    proc = _run("run", "--config", str(cfg), "--summary", str(tmp_path / "summary.json"), state=tmp_path / "state")
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["events"] >= 1 and s["pending"] == s["events"] and s["published"] == 0
    from mpox_aism.kiosk.labels import LabelStore
    from mpox_aism.kiosk.outbox import Outbox

    with Outbox(tmp_path / "outbox.sqlite3") as ob:
        assert ob.depth() == s["events"]
        ids = [json.loads(m.payload)["event_id"] for m in ob.pending()]
    assert s["crops"] == {"kept": s["events"], "failed": 0}
    store = LabelStore(tmp_path / "state" / "labels.sqlite3")
    assert store.kept(ids) == set(ids) and store.crop(ids[0]).camera == "desk"


def test_validate_config(tmp_path):
    good = _config(tmp_path, tmp_path, "mqtt://127.0.0.1:1883")
    ok = _run("validate-config", str(good), timeout=60)
    assert ok.returncode == 0 and "valid" in ok.stdout
    bad = yaml.safe_load(good.read_text())
    bad["cameras"][0]["sorce"] = "typo"
    good.write_text(yaml.safe_dump(bad))
    out = _run("validate-config", str(good), timeout=60)
    assert out.returncode != 0 and "cameras.0.sorce" in out.stderr
    bad["cameras"][0].pop("sorce")
    bad["mqtt"]["url"] = "http://broker"
    good.write_text(yaml.safe_dump(bad))
    out = _run("validate-config", str(good), timeout=60)
    assert out.returncode != 0 and "mqtt.url" in out.stderr


def test_example_config_is_valid():
    out = _run("validate-config", str(REPO / "configs" / "kiosk.yaml"), timeout=60)
    assert out.returncode == 0, out.stderr


def test_cameras_taking_turns_each_see_every_frame(tmp_path):
    """``load.frames_at_once: 1``: two cameras share one turn and neither waits forever (issue 28)."""
    folder = link_photos(tmp_path, "mpox", 3)
    cfg = _config(tmp_path, folder, None, load={"frames_at_once": 1})
    doc = yaml.safe_load(cfg.read_text())
    doc["cameras"].append({**doc["cameras"][0], "name": "desk-2"})
    cfg.write_text(yaml.safe_dump(doc))
    proc = _run("run", "--config", str(cfg), "--summary", str(tmp_path / "summary.json"), state=tmp_path / "state")
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["frames"] == 2 * 3 * 5 and s["events"] >= 2
