"""A broker that freezes without closing its connections (SIGSTOP: what a hung process or a network
partition looks like from the kiosk): TCP stays up, nothing answers. The publisher must notice through
its keepalive, keep every alert in the outbox, reconnect when the broker thaws and deliver them all, in
order, duplicates allowed."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from mpox_aism.kiosk.mqtt import MqttPublisher
from mpox_aism.kiosk.outbox import Outbox
from tests.faults.conftest import event_ids
from tests.kiosk.conftest import AlertStream, wait_until

pytestmark = pytest.mark.faults
PREFIX = "mpox-aism/gate-frozen"
KEEPALIVE = 3
FROZEN_S = 15


def test_frozen_broker_is_noticed_by_keepalive_and_nothing_is_lost(make_broker, collectors, tmp_path: Path) -> None:
    b = make_broker(persistence=True)
    t0 = time.time()
    console = collectors(b.port, f"{PREFIX}/events", client_id="console-frozen", clean=False).wait_subscribed()
    b.wait_saved_after(t0)
    ob = Outbox(tmp_path / "o.db")
    pub = MqttPublisher(ob, host="127.0.0.1", port=b.port, client_id="kiosk-frozen", topic_prefix=PREFIX,
                        keepalive=KEEPALIVE, reconnect_max_s=2)
    pub.start()
    wait_until(lambda: pub.connected, what="publisher connected")
    with AlertStream(pub, "events", 0.2) as stream:  # one alert every 0.2 s, through the freeze and the thaw
        ids = stream.ids
        wait_until(lambda: len(event_ids(console.payloads())) >= 5, what="first alerts delivered")
        assert b.proc is not None
        b.proc.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        wait_until(lambda: not pub.connected, timeout=10 * KEEPALIVE, what="keepalive noticing the frozen broker")
        noticed = time.monotonic() - frozen_at
        pending_while_frozen = pub.stats()["pending"]
        time.sleep(max(0.0, FROZEN_S - (time.monotonic() - frozen_at)))
        b.proc.send_signal(signal.SIGCONT)
        thawed_at = time.monotonic()
        wait_until(lambda: pub.connected, timeout=60, what="reconnected after the thaw")
        back = time.monotonic() - thawed_at
        n_after = len(ids)
        wait_until(lambda: len(ids) >= n_after + 5, what="alerts after the thaw")
    wait_until(lambda: set(event_ids(console.payloads())) >= set(ids), timeout=60, what="every alert delivered")
    got = console.payloads()
    assert event_ids(got) == ids  # none lost, order kept (duplicates removed by event_id)
    wait_until(lambda: ob.depth() == 0, what="outbox empty")
    pub.close()
    print(f"\nFAULT frozen broker ({FROZEN_S} s SIGSTOP, keepalive {KEEPALIVE} s): noticed after {noticed:.1f} s, "
          f"{pending_while_frozen} alerts pending then, reconnected {back:.1f} s after the thaw; {len(ids)} alerts, "
          f"lost 0, duplicates on the wire {len(got) - len(set(event_ids(got)))}")
