"""Broker outage: mosquitto is SIGKILLed right after the first alert and comes back 30 s later.

The daemon runs as a real process on real mpox photos. "No alert is ever lost" means: every event the
daemon decided reaches the subscriber at least once (duplicates are allowed, the consumer de-duplicates
by ``event_id``), in the order the daemon created them, and the outbox ends empty.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.conftest import link_photos
from tests.faults.conftest import event_ids, kiosk_config, outbox_rows, start_daemon, tail, wait_daemon
from tests.kiosk.conftest import wait_until

pytestmark = pytest.mark.faults

OUTAGE_S = 30.0
PREFIX = "mpox-aism/gate-7"


def test_broker_killed_for_30s_loses_no_event(tmp_path, make_broker, collectors):
    folder = link_photos(tmp_path, "mpox", 12)
    broker = make_broker(persistence=True)  # persistence: the subscriber's session survives the restart
    t_sub = time.time()
    sub = collectors(broker.port, f"{PREFIX}/events", client_id="faults-outage-sub", clean=False)
    sub.wait_subscribed()
    broker.wait_saved_after(t_sub)
    outbox = tmp_path / "outbox.sqlite3"
    cfg = kiosk_config(tmp_path, folder, f"mqtt://127.0.0.1:{broker.port}", outbox=outbox, flush_timeout_s=120)
    log, summary_path = tmp_path / "daemon.log", tmp_path / "summary.json"
    proc = start_daemon(cfg, summary_path, log)
    try:
        wait_until(lambda: sub.payloads(f"{PREFIX}/events") or proc.poll() is not None, 600,
                   what="the first event at the subscriber")
        assert sub.payloads(f"{PREFIX}/events"), f"daemon ended before any event:\n{tail(log)}"
        before_kill = len(sub.payloads(f"{PREFIX}/events"))
        broker.stop(signal.SIGKILL)
        t_kill = time.monotonic()
        time.sleep(OUTAGE_S)
        pending_at_restart = len(outbox_rows(outbox))
        daemon_alive_at_restart = proc.poll() is None
        broker.start()
        rc = wait_daemon(proc)
    except BaseException:
        proc.kill()  # a failed wait above must not leave the daemon running
        raise
    assert rc == 0, tail(log)
    summary = json.loads(summary_path.read_text())
    n = summary["events"]
    assert n >= 2, f"too few events to test an outage: {summary}"
    left = outbox_rows(outbox)
    assert summary["pending"] == len(left) and summary["published"] + len(left) == n, summary
    # the exit flush waits for the broker (up to flush_timeout_s), so nothing is left queued at exit
    assert not left, f"daemon exited with {len(left)} alert(s) queued: {summary}\n{tail(log)}"
    run1_ids = set(event_ids(sub.payloads(f"{PREFIX}/events")))
    assert len(run1_ids) == n, f"received {len(run1_ids)} distinct events, the daemon decided {n}"
    assert outbox_rows(outbox) == []
    wait_until(lambda: run1_ids <= set(event_ids(sub.payloads(f"{PREFIX}/events"))), 120,
               what=f"the {n} events of the first run at the subscriber")
    raw = sub.payloads(f"{PREFIX}/events")
    first: dict[str, dict] = {}
    for p in raw:
        e = json.loads(p)
        first.setdefault(e["event_id"], e)
    ids = [i for i in event_ids(raw) if i in run1_ids]
    assert len(ids) == n, f"{len(ids)} distinct event ids of the first run received, it decided {n}"
    times = [first[i]["time"] for i in ids]  # creation time, in first-arrival order
    assert times == sorted(times), "events arrived out of creation order"
    dups = sum(1 for p in raw if json.loads(p)["event_id"] in run1_ids) - len(ids)
    print(f"\nFAULT broker-outage: outage {OUTAGE_S:.0f} s (SIGKILL after event 1, {before_kill} received before); "
          f"daemon alive at broker restart: {daemon_alive_at_restart}, outbox rows at restart: {pending_at_restart}; "
          f"run 1: events {n}, published {summary['published']}, pending at exit {summary['pending']} "
          f"; distinct received {len(ids)}, lost {n - len(ids)}, "
          f"duplicates {dups}; kill -> end {time.monotonic() - t_kill:.1f} s")
