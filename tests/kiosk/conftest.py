"""Kiosk fixtures: a real mosquitto broker (a separate process on a free port) and a test subscriber.

Debian's broker: `apt-get install -y mosquitto mosquitto-clients`. Tests that need it skip with that
line when `mosquitto` is not on PATH. Each broker writes its own config (listener on 127.0.0.1 only),
log and persistence file under tmp_path and is stopped by its PID, never by name.
"""

from __future__ import annotations

import shutil
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

mqtt = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt not installed: pip install paho-mqtt==2.2.0")
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.reasoncodes import ReasonCode  # noqa: E402

from mpox_aism.bench.mosquitto import Mosquitto, find_mosquitto, free_port  # noqa: E402, F401 - free_port: tests import it here

APT_LINE = "apt-get install -y mosquitto mosquitto-clients"


MOSQUITTO = find_mosquitto()
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or shutil.which("mosquitto_passwd", path="/usr/sbin:/usr/bin")


def wait_until(pred: Callable[[], object], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> None:
    """Poll ``pred`` until truthy; fail with ``what`` after a generous timeout (no timing asserts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or pred}")


class Broker(Mosquitto):
    """The bench's broker (``mpox_aism.bench.mosquitto``: start, stop by PID, restart on the same port and
    persistence) with the tests' configs: accounts, persistence off, extra listeners, a shipped config."""

    def __init__(self, root: Path, *, users: dict[str, str] | None = None, persistence: bool = True,
                 extra: list[str] | None = None, config: Callable[[Broker], str] | None = None) -> None:
        if MOSQUITTO is None:
            pytest.skip(f"mosquitto not found; install it with: {APT_LINE}")
        super().__init__(root)
        if config is not None:
            # a test proving a shipped config renders it for this broker: its port, log and database
            self.conf.write_text(config(self))
            return
        lines = self.head_lines()
        if users is not None:
            if MOSQUITTO_PASSWD is None:
                pytest.skip(f"mosquitto_passwd not found; install it with: {APT_LINE}")
            pw = root / "passwd"
            for i, (user, password) in enumerate(users.items()):
                args = [MOSQUITTO_PASSWD, *(["-c"] if i == 0 else []), "-b", str(pw), user, password]
                subprocess.run(args, check=True, capture_output=True, timeout=30)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines += ["allow_anonymous true"]
        if persistence:
            # autosave every second, so a SIGKILLed broker still knows the test subscriber's session
            lines += ["persistence true", f"persistence_location {root}/", f"persistence_file {self.db.name}",
                      "autosave_interval 1"]
        else:
            lines += ["persistence false"]
        lines += extra or []  # e.g. a second (TLS) listener with its own options
        self.conf.write_text("\n".join(lines) + "\n")

    def wait_saved_after(self, t: float, timeout: float = 20.0) -> None:
        """Wait until the persistence file has been written after wall-clock time ``t``."""
        wait_until(lambda: self.db.exists() and self.db.stat().st_mtime > t, timeout, what="broker autosave")


class Collector:
    """A paho client that subscribes to ``topic`` on every connect and records (topic, payload, retain).

    ``clean=False`` with a fixed client id keeps a persistent session: the broker queues QoS1
    messages for it while it is away (or while the broker restarts with persistence). ``tls_ca``:
    connect over TLS, verifying the broker's certificate against that CA. ``protocol``: MQTT 3.1.1
    (what the kiosk speaks) or 5, whose PUBACK says why a publish was refused (clean sessions only).
    ``connacks`` and ``granted`` record the reason code of every CONNACK and SUBACK, so a refused
    login or subscription is seen as the broker answered it (paho keeps retrying a refused login).
    """

    def __init__(self, port: int, topic: str | None, *, client_id: str = "", clean: bool = True,
                 username: str | None = None, password: str | None = None, tls_ca: Path | None = None,
                 protocol: int = mqtt.MQTTv311) -> None:
        v5 = protocol == mqtt.MQTTv5
        if v5 and not clean:
            raise ValueError("persistent MQTT 5 sessions need a session expiry; not supported here")
        self.topic = topic
        self.messages: list[tuple[str, bytes, bool]] = []
        self.connacks: list[int] = []
        self.granted: list[list[int]] = []
        self._pubacks: dict[int, int] = {}
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=None if v5 else clean, protocol=protocol)
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca), cert_reqs=ssl.CERT_REQUIRED)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.connect_async("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, rc: ReasonCode,
                    props: object) -> None:
        with self._lock:
            self.connacks.append(rc.value)
        if rc.is_failure:
            return
        self.subscribed.clear()
        if self.topic is not None:
            client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, codes: list[ReasonCode],
                      props: object) -> None:
        with self._lock:
            self.granted.append([c.value for c in codes])
        self.subscribed.set()

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, rc: ReasonCode, props: object) -> None:
        with self._lock:
            self._pubacks[mid] = rc.value

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def wait_subscribed(self, timeout: float = 20.0) -> Collector:
        wait_until(self.subscribed.is_set, timeout, what=f"subscription to {self.topic}")
        return self

    def wait_connack(self, timeout: float = 20.0) -> int:
        """The reason code of the first CONNACK (0: accepted)."""
        wait_until(lambda: self.connacks, timeout, what="the broker's CONNACK")
        return self.connacks[0]

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, timeout: float = 20.0) -> int:
        """Publish at QoS 1 and wait for the PUBACK: its reason code (always 0 in MQTT 3.1.1, which has none)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        wait_until(lambda: info.mid in self._pubacks, timeout, what=f"PUBACK for {topic}")
        with self._lock:
            return self._pubacks[info.mid]

    def payloads(self, topic: str | None = None) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if topic is None or t == topic]

    def last(self, topic: str) -> bytes | None:
        got = self.payloads(topic)
        return got[-1] if got else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class AlertStream:
    """Publishes a numbered alert every ``period`` s from a thread until stopped; ``ids`` in put order.

    Used as a context manager around a fault, so alerts are put before, during and after it."""

    def __init__(self, publisher: Any, subtopic: str, period: float) -> None:
        self.publisher, self.subtopic, self.period = publisher, subtopic, period
        self.ids: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-stream")

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            self.ids.append(self.publisher.publish_event(self.subtopic, {"seq": i}))
            i += 1
            self._stop.wait(self.period)

    def __enter__(self) -> AlertStream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def self_signed_cert(root: Path) -> tuple[Path, Path]:
    """(cert, key) for a TLS listener on 127.0.0.1, made with the openssl CLI; skips without it."""
    tmp_path = root
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl CLI not found (apt-get install -y openssl)")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


def _need_mosquitto() -> None:
    if MOSQUITTO is None:
        pytest.skip(f"mosquitto broker not installed; install it with: {APT_LINE}")


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Factory: make_broker(users=, persistence=, extra=, config=, start=True) -> Broker; all killed at teardown."""
    _need_mosquitto()
    made: list[Broker] = []

    def make(*, users: dict[str, str] | None = None, persistence: bool = True, extra: list[str] | None = None,
             config: Callable[[Broker], str] | None = None, start: bool = True) -> Broker:
        b = Broker(tmp_path / f"broker{len(made)}", users=users, persistence=persistence, extra=extra, config=config)
        made.append(b)
        return b.start() if start else b

    yield make
    for b in made:
        b.stop(signal.SIGKILL)


@pytest.fixture
def broker(make_broker: Callable[..., Broker]) -> Broker:
    """An anonymous broker with persistence off (the publisher, not the broker, must keep alerts)."""
    return make_broker(persistence=False)


@pytest.fixture
def collectors() -> Iterator[Callable[..., Collector]]:
    made: list[Collector] = []

    def make(*args: object, **kwargs: object) -> Collector:
        c = Collector(*args, **kwargs)  # type: ignore[arg-type]
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


class HealthClocks:
    """The kiosk's two clocks for ``kiosk.health``, moved by hand: monotonic for the rules, wall for the times."""

    def __init__(self) -> None:
        self.t = 100.0

    def mono(self) -> float:
        return self.t

    def wall(self) -> float:
        return 1.75e9 + self.t


def health_monitor(clock: HealthClocks, last: Any = None, *, run_id: str = "r1", **cfg: float) -> Any:
    """A ``HealthMonitor`` of station gate-7 on ``clock`` (``last``: the model versions recorded before)."""
    from mpox_aism.kiosk.config import HealthConfig
    from mpox_aism.kiosk.health import HealthMonitor

    return HealthMonitor(HealthConfig(**cfg), station_id="gate-7", run_id=run_id, last_models=last,
                         clock=clock.mono, wall=clock.wall)


def camera_sample(frames: int, name: str = "desk", *, done: bool = False, live: bool = True,
                  error: str | None = None) -> Any:
    """What the health monitor samples of one camera."""
    from mpox_aism.kiosk.health import CameraSample

    return CameraSample(name, frames, done, live, error)
