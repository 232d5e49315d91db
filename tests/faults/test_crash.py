"""Crash: the daemon is SIGKILLed with alerts still in its outbox (no broker reachable); the next start,
pointed at a broker, publishes every one of them."""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.conftest import link_photos
from tests.faults.conftest import event_ids, kiosk_config, outbox_rows, start_daemon, tail, wait_daemon
from tests.kiosk.conftest import free_port, wait_until

pytestmark = pytest.mark.faults

PREFIX = "mpox-aism/gate-7"


def test_sigkill_with_pending_events_then_restart_publishes_them(tmp_path, make_broker, collectors):
    folder = link_photos(tmp_path, "mpox", 8)
    outbox = tmp_path / "outbox.sqlite3"
    dead = free_port()  # nothing listens here: every event stays in the outbox
    cfg = kiosk_config(tmp_path, folder, f"mqtt://127.0.0.1:{dead}", outbox=outbox, flush_timeout_s=5)
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, tmp_path / "summary1.json", log)
    try:
        wait_until(lambda: len(outbox_rows(outbox)) >= 2 or proc.poll() is not None, 600,
                   what="2 events pending in the outbox")
        assert proc.poll() is None, f"daemon ended before the kill:\n{tail(log)}"
        proc.send_signal(signal.SIGKILL)
    finally:
        wait_daemon(proc, timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "summary1.json").exists()  # it really died without its shutdown
    pending = [json.loads(p)["event_id"] for _, _, p in outbox_rows(outbox)]
    assert len(pending) >= 2 and len(set(pending)) == len(pending)

    broker = make_broker(persistence=False)
    sub = collectors(broker.port, f"{PREFIX}/events").wait_subscribed()
    (tmp_path / "restart").mkdir()
    one = link_photos(tmp_path / "restart", "mpox", 1)  # one photo held 30 frames: time to connect and drain
    cfg2 = kiosk_config(tmp_path, one, f"mqtt://127.0.0.1:{broker.port}", outbox=outbox, flush_timeout_s=120,
                        hold_frames=30, name="restart.yaml")
    t0 = time.monotonic()
    proc2 = start_daemon(cfg2, tmp_path / "summary2.json", log)
    rc = wait_daemon(proc2)
    assert rc == 0, tail(log)
    s2 = json.loads((tmp_path / "summary2.json").read_text())
    assert s2["pending"] == 0 and outbox_rows(outbox) == [], (s2, tail(log))
    wait_until(lambda: set(pending) <= set(event_ids(sub.payloads(f"{PREFIX}/events"))), 120,
               what=f"the {len(pending)} events left by the killed daemon")
    raw = sub.payloads(f"{PREFIX}/events")
    got = event_ids(raw)
    order = [i for i in got if i in set(pending)]
    assert order == pending, "pending events arrived out of outbox order"
    print(f"\nFAULT crash: SIGKILL with {len(pending)} events pending; restart published "
          f"{len(pending)}/{len(pending)} (lost 0), plus {s2['events']} new; duplicates "
          f"{len(raw) - len(got)}; restart to exit {time.monotonic() - t0:.1f} s")
