"""The outbox's disk fills up: SQLite answers "database or disk is full" (a real SQLITE_FULL, made by
capping the file with ``PRAGMA max_page_count``). The daemon must keep its cameras running, hold the events
in memory in order, report ``down: [outbox]``, and save every one of them once space is back."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from mpox_aism.kiosk.config import parse_config
from mpox_aism.kiosk.daemon import Daemon
from mpox_aism.kiosk.outbox import Outbox
from tests.conftest import default_model_or_skip
from tests.faults.conftest import outbox_rows

pytestmark = pytest.mark.faults
ALL = ["mpox", "chickenpox", "measles", "bullous", "eczema", "urticaria", "vasculitis", "normal"]


def test_disk_full_holds_events_in_order_and_saves_them_when_space_returns(tmp_path: Path, monkeypatch) -> None:
    default_model_or_skip()
    from mpox_aism.contracts.sample import builtin_sample_dir

    photos = builtin_sample_dir(tmp_path / "photos") / "normal"
    outboxes: list[Outbox] = []
    real_init = Outbox.__init__

    def full_init(self, *args, **kwargs):  # the disk is full from the start: no room beyond the schema
        real_init(self, *args, **kwargs)
        with self._lock:
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            self._db.execute(f"PRAGMA max_page_count={pages}")
        outboxes.append(self)

    monkeypatch.setattr(Outbox, "__init__", full_init)
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    outbox_path = tmp_path / "outbox.sqlite3"
    cfg = parse_config({
        "station_id": "gate-full",
        "cameras": [{"name": "desk", "source": str(photos), "hold_frames": 4, "loop": True}],
        "decision": {"notifiable": ALL},
        "outbox": {"path": str(outbox_path), "flush_timeout_s": 0},
        "http": {"enabled": False}, "exit_when_done": False})
    daemon = Daemon(cfg)
    seen: dict[str, object] = {}

    def fault() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and daemon.unsaved_count() < 3:
            time.sleep(0.2)
        st = daemon.status()
        seen.update(held=st.outbox.unsaved, down=list(st.down), error=st.outbox.write_error,
                    frames_while_full=daemon.cameras["desk"].frames)
        with outboxes[0]._lock:  # space is back
            outboxes[0]._db.execute("PRAGMA max_page_count=1073741823")
        while time.monotonic() < deadline and (daemon.unsaved_count() or daemon.cameras["desk"].events
                                               < int(seen["held"]) + 3):  # type: ignore[arg-type]
            time.sleep(0.2)
        seen["after"] = daemon.status()
        daemon.request_stop()

    t = threading.Thread(target=fault)
    t.start()
    assert daemon.run() == 0
    t.join()
    events = daemon.cameras["desk"].events
    rows = outbox_rows(outbox_path)
    ids = [json.loads(p)["event_id"] for _, _, p in rows]
    print(f"\nFAULT outbox disk full: {seen['held']} events held in memory while full (down {seen['down']}, "
          f"{seen['error']}), camera kept reading ({seen['frames_while_full']} frames); after space returned: "
          f"{len(rows)} of {events} events in the outbox, lost 0")
    assert int(seen["held"]) >= 3 and "outbox" in seen["down"] and "full" in str(seen["error"])  # type: ignore[arg-type]
    after = seen["after"]
    assert after.outbox.unsaved == 0 and "outbox" not in after.down  # type: ignore[attr-defined]
    assert len(rows) == events and len(set(ids)) == events and daemon.unsaved_dropped == 0
    assert daemon.cameras["desk"].errors == 0 and daemon.cameras["desk"].restarts == 0
