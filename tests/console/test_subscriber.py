"""The console against a real mosquitto and real kiosk publishers (the kiosk's Outbox + MqttPublisher).

Bounded waits only; no timing assertions.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from mpox_aism.bench.fleet import synthetic_event
from mpox_aism.console.store import ConsoleStore, Incoming, Outcome
from tests.conftest import REPO
from tests.console.conftest import ROOT
from tests.kiosk.conftest import wait_until


def _raw_publisher(port: int) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-test")
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def test_three_kiosks_all_stored(make_broker, kiosks, console):
    broker = make_broker()
    _, store = console(broker)
    fleet = [kiosks(broker, s) for s in ("s1", "s2", "s3")]
    for _ in range(5):
        for k in fleet:
            k.emit()
    want = {i for k in fleet for i in k.ids}
    wait_until(lambda: want <= store.event_ids(), 60, what="all 15 events stored")
    for k in fleet:
        assert store.event_ids(k.station_id) == set(k.ids)
        st = store.station(k.station_id)
        assert st is not None and st.online is True and st.events == 5
    assert store.counts().invalid == 0


def test_the_same_event_delivered_twice_is_stored_once(make_broker, console):
    broker = make_broker()
    _, store = console(broker)
    ev = synthetic_event("s1", 0, "dup")
    pub = _raw_publisher(broker.port)
    try:
        for _ in range(2):
            pub.publish(f"{ROOT}/s1/events", ev.wire(), qos=1).wait_for_publish(10)
        wait_until(lambda: store.counts().duplicates == 1, 30, what="the second copy counted")
    finally:
        pub.disconnect()
        pub.loop_stop()
    c = store.counts()
    assert (c.events, c.duplicates, c.conflicts) == (1, 1, 0)
    assert store.event_ids() == {ev.event_id}


def test_an_invalid_payload_is_counted_not_stored_and_the_service_goes_on(make_broker, kiosks, console):
    broker = make_broker()
    sub, store = console(broker)
    pub = _raw_publisher(broker.port)
    try:
        pub.publish(f"{ROOT}/s1/events", b'{"schema": "nonsense"}', qos=1).wait_for_publish(10)
        pub.publish(f"{ROOT}/s1/events", synthetic_event("s9", 0, "x").wire(), qos=1).wait_for_publish(10)
        wait_until(lambda: store.counts().invalid == 2, 30, what="two rejects counted")
    finally:
        pub.disconnect()
        pub.loop_stop()
    assert store.counts().events == 0
    errors = [r.error for r in store.rejected()]
    assert "not a valid event" in errors[0] and "station mismatch" in errors[1]
    assert {r.topic for r in store.rejected()} == {f"{ROOT}/s1/events"}
    k = kiosks(broker, "s1")  # and it goes on
    k.emit()
    wait_until(lambda: set(k.ids) <= store.event_ids(), 30, what="a valid event after the invalid ones")
    assert sub.alive


class _BrokenDisk(ConsoleStore):
    """The real store whose commits fail (a full or broken disk): nothing it is given gets committed."""

    def apply(self, batch: list[Incoming]) -> list[Outcome]:
        raise sqlite3.OperationalError("disk I/O error (injected)")


def test_nothing_is_acknowledged_before_its_commit(make_broker, kiosks, console, tmp_path):
    """A console that cannot commit never PUBACKs: the broker keeps the event in the session, and the
    next console with the same client id gets it (the persistent session + acknowledge-after-commit)."""
    broker = make_broker()
    sub, _ = console(broker, store=_BrokenDisk(tmp_path / "broken.sqlite3"), client_id="console-x")
    k = kiosks(broker, "s1")
    k.emit()
    wait_until(lambda: k.outbox.depth() == 0, 30, what="the broker's PUBACK to the kiosk")
    wait_until(lambda: sub.stats().store_errors >= 1, 30, what="the failed commit")
    assert sub.stats().acked == 0
    sub.close(timeout=5)  # a clean DISCONNECT: the session (and the unacknowledged event) stays on the broker
    _, store = console(broker, client_id="console-x")
    wait_until(lambda: set(k.ids) <= store.event_ids(), 30, what="the re-delivered event")


KIOSK_CHILD = textwrap.dedent("""
    import sys, time
    from mpox_aism.kiosk.mqtt import MqttPublisher
    from mpox_aism.kiosk.outbox import Outbox
    outbox, port, station = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    pub = MqttPublisher(Outbox(outbox), host="127.0.0.1", port=port, client_id="kiosk-" + station,
                        topic_prefix="mpox-aism/" + station)
    pub.start()
    while True:
        time.sleep(1)
""")


def test_a_kiosk_that_dies_shows_offline(make_broker, console, tmp_path):
    """SIGKILL: no DISCONNECT, so the broker publishes the kiosk's last will (retained ``offline``)."""
    broker = make_broker()
    _, store = console(broker)
    proc = subprocess.Popen([sys.executable, "-c", KIOSK_CHILD, str(tmp_path / "k.sqlite3"), str(broker.port),
                             "s7"], cwd=REPO)
    try:
        wait_until(lambda: (st := store.station("s7")) is not None and st.online is True, 60, what="s7 online")
        online_at = store.station("s7").availability_at
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        wait_until(lambda: store.station("s7").online is False, 60, what="s7 offline (its last will)")
        assert store.station("s7").availability_at >= online_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_a_message_from_an_earlier_connection_is_never_acknowledged(tmp_path, monkeypatch):
    """Packet ids are per connection: a PUBACK for a message delivered before a reconnect could acknowledge
    another message the broker gave that id. Only the delivering connection's messages are acknowledged."""
    from mpox_aism.console.config import ConsoleMqttConfig
    from mpox_aism.console.subscriber import ConsoleSubscriber, Delivery

    with ConsoleStore(tmp_path / "c.sqlite3") as store:
        sub = ConsoleSubscriber(ConsoleMqttConfig(url="mqtt://127.0.0.1:1"), store)  # never started
        sent: list[tuple[int, int]] = []
        monkeypatch.setattr(sub._client, "ack", lambda mid, qos: sent.append((mid, qos)))
        sub._generation, sub._connected = 2, True
        sub._ack([Delivery("t", b"", 1, 7, 1, 0.0), Delivery("t", b"", 1, 8, 2, 0.0), Delivery("t", b"", 0, 0, 2, 0.0)])
        assert sent == [(8, 1)]
        assert (sub.stats().acked, sub.stats().stale_not_acked) == (1, 1)
        sub._connected = False  # disconnected: nothing is acknowledged at all
        sub._ack([Delivery("t", b"", 1, 9, 2, 0.0)])
        assert sent == [(8, 1)]
