"""MqttPublisher against a real mosquitto: availability/last will, broker outages, process crashes,
refused logins, TLS. Every check polls with a generous timeout; nothing asserts on timing.

Brokers that must keep a subscriber's session across their own restart run with persistence on;
otherwise persistence is off, so only the publisher's outbox can be what keeps the alerts.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mpox_aism.kiosk.mqtt import MqttConfigError, MqttPublisher
from mpox_aism.kiosk.outbox import Outbox
from tests.kiosk.conftest import AlertStream, Broker, Collector, free_port, self_signed_cert, wait_until

REPO = Path(__file__).resolve().parents[2]
PREFIX = "mpox/kiosk-test"
ALERTS = f"{PREFIX}/alert"
AVAIL = f"{PREFIX}/availability"


@pytest.fixture
def publishers() -> Iterator[Callable[..., MqttPublisher]]:
    made: list[MqttPublisher] = []

    def make(outbox: Outbox, port: int, **kw: object) -> MqttPublisher:
        kw.setdefault("client_id", f"kiosk-{len(made)}")
        p = MqttPublisher(outbox, host="127.0.0.1", port=port, topic_prefix=PREFIX, **kw)  # type: ignore[arg-type]
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def event_ids(c: Collector) -> list[str]:
    return [json.loads(p)["event_id"] for p in c.payloads(ALERTS)]


def first_seen(ids: list[str]) -> list[str]:
    """The consumer's view: duplicates (allowed on the wire) removed, first occurrence kept."""
    return list(dict.fromkeys(ids))


# A publisher in its own process, to be SIGKILLed: puts N events, says "ready", and "connected"
# once it is (it never is when pointed at a port with no broker).
CHILD = r"""
import sys, time
from mpox_aism.kiosk.outbox import Outbox
from mpox_aism.kiosk.mqtt import MqttPublisher
db, port, client_id, prefix, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
p = MqttPublisher(Outbox(db), host="127.0.0.1", port=port, client_id=client_id, topic_prefix=prefix)
p.start()
for i in range(n):
    print("event", p.publish_event("alert", {"seq": i}), flush=True)
print("ready", flush=True)
said = False
while True:
    if p.connected and not said:
        print("connected", flush=True)
        said = True
    time.sleep(0.05)
"""


class Child:
    def __init__(self, db: Path, port: int, client_id: str, n: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(port), client_id, PREFIX, str(n)],
                                     cwd=REPO, stdout=subprocess.PIPE, text=True)
        self.events: list[str] = []

    def wait_for(self, word: str) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # blocks; the test's overall timeout is the backstop
            kind, *rest = line.split()
            if kind == "event":
                self.events.append(rest[0])
            if kind == word:
                return
        raise AssertionError(f"publisher child exited ({self.proc.wait()}) before saying {word!r}")

    def sigkill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        if self.proc.stdout:
            self.proc.stdout.close()


# -- availability ---------------------------------------------------------------------------------
def test_availability_online_then_offline_on_close(broker: Broker, collectors, publishers, tmp_path: Path) -> None:
    p = publishers(Outbox(tmp_path / "o.db"), broker.port)
    p.start()
    wait_until(lambda: p.connected, what="publisher connected")
    late = collectors(broker.port, AVAIL).wait_subscribed()  # subscribes after: sees the retained value
    wait_until(lambda: late.last(AVAIL) == b"online", what="retained online")
    assert late.messages[0][2] is True  # delivered as a retained message
    p.close()
    wait_until(lambda: late.last(AVAIL) == b"offline", what="offline after close()")
    after = collectors(broker.port, AVAIL).wait_subscribed()
    wait_until(lambda: after.last(AVAIL) == b"offline", what="retained offline")


def test_last_will_says_offline_when_publisher_is_killed(broker: Broker, collectors, tmp_path: Path) -> None:
    child = Child(tmp_path / "o.db", broker.port, "kiosk-will", 0)
    try:
        child.wait_for("connected")
        sub = collectors(broker.port, AVAIL).wait_subscribed()
        wait_until(lambda: sub.last(AVAIL) == b"online", what="retained online")
    finally:
        child.sigkill()  # no DISCONNECT: the broker must publish the will
    wait_until(lambda: sub.last(AVAIL) == b"offline", what="last will 'offline'")
    after = collectors(broker.port, AVAIL).wait_subscribed()
    wait_until(lambda: after.last(AVAIL) == b"offline", what="the will is retained")


# -- broker outages -------------------------------------------------------------------------------
def test_broker_down_at_start(make_broker, collectors, publishers, tmp_path: Path) -> None:
    b = make_broker(persistence=True)
    # a persistent subscriber session, saved by a clean broker shutdown, so the broker queues the
    # alerts for the security console even though the console connects after the kiosk
    collectors(b.port, ALERTS, client_id="console", clean=False).wait_subscribed().close()
    b.stop(signal.SIGTERM)

    ob = Outbox(tmp_path / "o.db")
    p = publishers(ob, b.port)
    p.start()  # broker down: must neither block nor raise
    ids = [p.publish_event("alert", {"seq": i}) for i in range(5)]
    assert ob.depth() == 5
    wait_until(lambda: p.stats()["last_error"] is not None, what="a failed connect to be reported")
    st = p.stats()
    assert st["connected"] is False and st["pending"] == 5 and "cannot connect" in st["last_error"]

    b.start()
    wait_until(lambda: p.stats()["pending"] == 0, timeout=60, what="outbox drained after the broker came up")
    assert p.stats()["connected"] is True and p.stats()["published"] == 5
    console = collectors(b.port, ALERTS, client_id="console", clean=False)
    wait_until(lambda: set(event_ids(console)) >= set(ids), what="all 5 queued alerts delivered")
    assert first_seen(event_ids(console)) == ids


def test_broker_killed_mid_stream_and_restarted(make_broker, collectors, publishers, tmp_path: Path) -> None:
    b = make_broker(persistence=True)
    t0 = time.time()
    console = collectors(b.port, ALERTS, client_id="console", clean=False).wait_subscribed()
    b.wait_saved_after(t0)  # the console's session is on disk before we crash the broker

    ob = Outbox(tmp_path / "o.db")
    p = publishers(ob, b.port)
    p.start()
    wait_until(lambda: p.connected, what="publisher connected")

    with AlertStream(p, "alert", 0.02) as stream:  # a steady stream, through the crash and the restart
        ids = stream.ids
        wait_until(lambda: len(event_ids(console)) >= 10, what="first alerts delivered")
        # freeze the broker first, so alerts are certainly on the wire without a PUBACK when it dies
        assert b.proc is not None
        b.proc.send_signal(signal.SIGSTOP)
        n_at_freeze = len(ids)
        wait_until(lambda: len(ids) >= n_at_freeze + 5, what="alerts sent to the frozen broker")
        assert p.connected  # TCP is still up: these went out and wait for their PUBACK
        b.stop(signal.SIGKILL)  # mid-stream crash
        n_at_kill = len(ids)
        wait_until(lambda: not p.connected, what="publisher noticed the broker is gone")
        wait_until(lambda: len(ids) >= n_at_kill + 15, what="alerts put while the broker is down")
        assert p.stats()["pending"] > 0
        b.start()  # same port, same config
        wait_until(lambda: p.connected, timeout=60, what="publisher reconnected")
        n_at_restart = len(ids)
        wait_until(lambda: len(ids) >= n_at_restart + 10, what="alerts put after the restart")
    assert len(ids[n_at_freeze:n_at_restart]) >= 20  # in flight at the crash, or put while it was down
    wait_until(lambda: set(event_ids(console)) >= set(ids), timeout=60, what="every alert delivered")
    assert first_seen(event_ids(console)) == ids  # none lost, order preserved (duplicates allowed)
    wait_until(lambda: ob.depth() == 0, what="outbox empty")


def test_crashed_process_outbox_is_published_by_next_process(broker: Broker, collectors, publishers,
                                                              tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    child = Child(db, free_port(), "kiosk-crash", 5)  # a port with no broker: events stay queued
    try:
        child.wait_for("ready")
    finally:
        child.sigkill()
    assert len(child.events) == 5

    ob = Outbox(db)
    assert ob.depth() == 5
    console = collectors(broker.port, ALERTS).wait_subscribed()
    p = publishers(ob, broker.port)
    p.start()
    wait_until(lambda: set(event_ids(console)) >= set(child.events), what="the dead process's alerts")
    assert first_seen(event_ids(console)) == child.events
    wait_until(lambda: ob.depth() == 0, what="outbox empty")


# -- refused logins, bounds, config ---------------------------------------------------------------
def test_wrong_password_is_reported_and_retried(make_broker, collectors, publishers, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="mpox_aism.kiosk.mqtt")
    b = make_broker(users={"kiosk": "right-horse", "console": "battery-staple"}, persistence=False)
    ob = Outbox(tmp_path / "o.db")
    bad = publishers(ob, b.port, username="kiosk", password="wrong")
    bad.start()
    event = bad.publish_event("alert", {"seq": 0})  # accepted into the outbox all the same
    wait_until(lambda: bad.stats()["last_error"] is not None, what="the refusal to be reported")
    st = bad.stats()
    assert st["connected"] is False and st["pending"] == 1
    assert "not authorised" in st["last_error"].lower() and "135" in st["last_error"]
    assert any("refused" in r.getMessage() for r in caplog.records)
    bad.close()  # no crash, nothing raised

    console = collectors(b.port, ALERTS, username="console", password="battery-staple").wait_subscribed()
    good = publishers(ob, b.port, username="kiosk", password="right-horse")
    good.start()
    wait_until(lambda: event_ids(console) == [event], what="the queued alert after fixing the password")


def test_bound_drops_oldest_and_reports_it(publishers, tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", max_messages=3)
    p = publishers(ob, free_port())  # nothing listens there
    p.start()
    ids = [p.publish_event("alert", {"seq": i}) for i in range(5)]
    st = p.stats()
    assert (st["pending"], st["dropped"]) == (3, 2)
    assert [json.loads(m.payload)["event_id"] for m in ob.pending(10)] == ids[2:]


def test_tls_required_without_ca_is_a_config_error(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    with pytest.raises(MqttConfigError, match="ca_certs"):
        MqttPublisher(ob, host="127.0.0.1", port=8883, client_id="k", topic_prefix=PREFIX, tls={"require": True})
    with pytest.raises(MqttConfigError, match="not found"):
        MqttPublisher(ob, host="127.0.0.1", port=8883, client_id="k", topic_prefix=PREFIX,
                      tls={"ca_certs": str(tmp_path / "missing.pem")})


def test_tls_connects_and_never_falls_back_to_plaintext(make_broker, collectors, publishers, tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    tls_port = free_port()
    b = make_broker(persistence=False, extra=[f"listener {tls_port} 127.0.0.1", f"certfile {cert}",
                                              f"keyfile {key}", "tls_version tlsv1.3"])
    tls = {"ca_certs": str(cert), "require": True}

    plain = publishers(Outbox(tmp_path / "plain.db"), b.port, tls=tls)  # TLS config, plaintext listener
    plain.start()
    plain.publish_event("alert", {"seq": 0})
    wait_until(lambda: plain.stats()["last_error"] is not None, what="the failed TLS handshake")
    assert plain.connected is False and plain.stats()["pending"] == 1

    console = collectors(b.port, ALERTS).wait_subscribed()
    secure = publishers(Outbox(tmp_path / "tls.db"), tls_port, tls=tls)
    secure.start()
    event = secure.publish_event("alert", {"seq": 1})
    wait_until(lambda: event_ids(console) == [event], what="an alert over TLS")
    assert plain.connected is False  # still refusing, never sent in the clear


def test_unpublishable_row_is_discarded_not_blocking(broker: Broker, collectors, publishers, tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    ob.put(f"{PREFIX}/bad/#", b"{}")  # a wildcard topic: paho refuses it, forever
    console = collectors(broker.port, ALERTS).wait_subscribed()
    p = publishers(ob, broker.port)
    event = p.publish_event("alert", {"seq": 0})
    p.start()
    wait_until(lambda: event_ids(console) == [event], what="the alert behind the bad row")
    wait_until(lambda: p.stats()["pending"] == 0, what="outbox empty")
    assert p.stats()["dropped"] == 1 and "discarded" in p.stats()["last_error"]
