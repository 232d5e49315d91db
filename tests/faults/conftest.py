"""Fault-suite fixtures: the kiosk's real mosquitto broker and subscriber, the pipeline's RTSP server.

Re-exported (not copied) from tests/kiosk/conftest.py and tests/pipeline/conftest.py, so a fault test
uses the very same broker, subscriber and camera server as the functional tests. Every test module here sets
``pytestmark = pytest.mark.faults`` (``.venv/bin/pytest -m faults -s tests/faults`` prints the measured figures).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO
from tests.kiosk.conftest import broker, collectors, make_broker  # noqa: F401  (fixtures, re-exported)
from tests.pipeline.conftest import rtsp_available, rtsp_server  # noqa: F401  (fixtures, re-exported)


def kiosk_config(tmp_path: Path, source: Path, mqtt_url: str | None, *, outbox: Path | None = None,
                 flush_timeout_s: float = 20, hold_frames: int = 5, name: str = "kiosk.yaml") -> Path:
    """A daemon config for one image-folder camera (strides 1, no HTTP), like tests/kiosk/test_daemon.py."""
    cfg = {"station_id": "gate-7",
           "cameras": [{"name": "desk", "source": str(source), "hold_frames": hold_frames, "loop": False,
                        "detect_stride": 1, "classify_stride": 1}],
           "mqtt": {"url": mqtt_url, "status_interval_s": 1.0},
           "outbox": {"path": str(outbox or tmp_path / "outbox.sqlite3"), "flush_timeout_s": flush_timeout_s},
           "http": {"enabled": False}}
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return p


def start_daemon(cfg: Path, summary: Path, log: Path) -> subprocess.Popen[bytes]:
    """`mpox-aism run` as a real process; stdout+stderr go to ``log`` (read it when an assert fails)."""
    with log.open("ab") as f:
        return subprocess.Popen([sys.executable, "-m", "mpox_aism.cli", "run", "--config", str(cfg),
                                 "--summary", str(summary)], cwd=REPO, stdout=f, stderr=subprocess.STDOUT)


def wait_daemon(proc: subprocess.Popen[bytes], timeout: float = 600) -> int:
    """Exit code of the daemon; a daemon still running after ``timeout`` is killed (never left behind)."""
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def outbox_rows(path: Path) -> list[tuple[int, str, bytes]]:
    """(id, topic, payload) of every pending outbox row, read through a read-only connection; [] if unreadable."""
    import sqlite3

    if not path.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return [(int(i), t, bytes(p)) for i, t, p in
                    con.execute("SELECT id, topic, payload FROM outbox ORDER BY id").fetchall()]
        finally:
            con.close()
    except sqlite3.Error:
        return []


def event_ids(payloads: list[bytes]) -> list[str]:
    """Event ids in first-arrival order, duplicates removed."""
    return list(dict.fromkeys(json.loads(p)["event_id"] for p in payloads))


def tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"
