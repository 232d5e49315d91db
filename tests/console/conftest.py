"""Console fixtures: the kiosks' real mosquitto (re-exported from tests/kiosk/conftest.py), real kiosk
publishers (the kiosk's Outbox + MqttPublisher), the console in-process or as a real child process, and a
real headless Chromium logged in to a console's page.

Every child process is stopped by its PID at teardown, never by name.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from mpox_aism.bench.fleet import synthetic_event
from mpox_aism.console.config import ConsoleMqttConfig
from mpox_aism.console.store import ConsoleStore
from mpox_aism.console.subscriber import ConsoleSubscriber
from mpox_aism.kiosk.mqtt import MqttPublisher
from mpox_aism.kiosk.outbox import Outbox
from tests.conftest import REPO
from tests.kiosk.conftest import Broker, make_broker, wait_until  # noqa: F401  (make_broker: fixture, re-exported)

ROOT = "mpox-aism"
PASSWORD = "reviewer password 1"  # every test account's


def mqtt_config(broker: Broker, client_id: str = "console-test") -> ConsoleMqttConfig:
    return ConsoleMqttConfig(url=f"mqtt://127.0.0.1:{broker.port}", client_id=client_id, topic_root=ROOT)


def subscribed_since(store_path: Path, since: float) -> bool:
    """The console recorded a SUBACK after ``since`` (it stores each one in ``meta``)."""
    if not store_path.exists():
        return False
    try:
        with ConsoleStore(store_path, readonly=True) as s:
            at = s.meta("subscribed_at")
    except Exception:  # still creating its tables
        return False
    return isinstance(at, float) and at >= since


def read(store_path: Path) -> ConsoleStore:
    return ConsoleStore(store_path, readonly=True)


@dataclass
class Kiosk:
    """One kiosk's alert path, the kiosk's own classes: events go to the outbox, the publisher drains it."""

    station_id: str
    outbox: Outbox
    publisher: MqttPublisher
    ids: list[str] = field(default_factory=list)
    seq: int = 0

    def emit(self) -> str:
        event = synthetic_event(self.station_id, self.seq, "test")
        self.seq += 1
        self.outbox.put(f"{ROOT}/{self.station_id}/events", event.wire())  # as the kiosk's EventSink does
        self.publisher.wake()
        self.ids.append(event.event_id)
        return event.event_id


@pytest.fixture
def kiosks(tmp_path: Path) -> Iterator[Callable[[Broker, str], Kiosk]]:
    made: list[Kiosk] = []

    def make(broker: Broker, station_id: str) -> Kiosk:
        ob = Outbox(tmp_path / "kiosks" / f"{station_id}.sqlite3")
        pub = MqttPublisher(ob, host="127.0.0.1", port=broker.port, client_id=f"kiosk-{station_id}",
                            topic_prefix=f"{ROOT}/{station_id}", reconnect_max_s=2)
        pub.start()
        k = Kiosk(station_id, ob, pub)
        made.append(k)
        return k

    yield make
    for k in made:
        k.publisher.close(timeout=2)
        k.outbox.close()


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Callable[..., tuple[ConsoleSubscriber, ConsoleStore]]]:
    """An in-process console: ``console(broker)`` → (subscriber, store), subscribed; closed at teardown."""
    made: list[tuple[ConsoleSubscriber, ConsoleStore]] = []

    def make(broker: Broker, *, store: ConsoleStore | None = None, client_id: str = "console-test",
             wait: bool = True) -> tuple[ConsoleSubscriber, ConsoleStore]:
        st = store or ConsoleStore(tmp_path / f"console{len(made)}.sqlite3")
        sub = ConsoleSubscriber(mqtt_config(broker, client_id), st)
        subscribed = threading.Event()
        sub.on_subscribed = subscribed.set
        sub.start()
        made.append((sub, st))
        if wait:
            wait_until(subscribed.is_set, 30, what="the console's subscription")
        return sub, st

    yield make
    for sub, st in made:
        sub.close(timeout=5)
        st.close()


class ConsoleChild:
    """``mpox-aism console`` as a real process (so it can be SIGKILLed); log in ``log``."""

    def __init__(self, root: Path, broker: Broker) -> None:
        self.store = root / "console.sqlite3"
        self.config = root / "console.yaml"
        self.log = root / "console.log"
        self.config.write_text(yaml.safe_dump({"mqtt": {"url": f"mqtt://127.0.0.1:{broker.port}",
                                                        "client_id": "console-child", "topic_root": ROOT},
                                               "store": {"path": str(self.store)},
                                               "http": {"port": 0}}))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ConsoleChild:
        since = time.time()
        with self.log.open("ab") as f:
            self.proc = subprocess.Popen([sys.executable, "-m", "mpox_aism.cli", "console", "--config",
                                          str(self.config)], cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
        wait_until(lambda: subscribed_since(self.store, since) or self.proc.poll() is not None, 60,
                   what="the console child's subscription")
        assert self.proc.poll() is None, self.tail()
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(30)

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


@pytest.fixture
def console_child(tmp_path: Path) -> Iterator[Callable[[Broker], ConsoleChild]]:
    made: list[ConsoleChild] = []

    def make(broker: Broker) -> ConsoleChild:
        c = ConsoleChild(tmp_path, broker)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium per test module (skips when Chromium or selenium is absent)."""
    from tests.kiosk.web.chromium import headless_chromium

    with headless_chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def api_login(url: str, name: str, timeout: float = 60.0) -> tuple[Any, str]:
    """An httpx client logged in as ``name`` (password ``PASSWORD``) on a staff page, and its CSRF token."""
    import httpx

    from mpox_aism.kiosk.web.auth import CSRF_HEADER

    c = httpx.Client(base_url=url, timeout=timeout)
    token = c.get("/api/login").json()["csrf"]
    r = c.post("/api/login", json={"name": name, "password": PASSWORD}, headers={CSRF_HEADER: token})
    assert r.status_code == 200, r.text
    return c, r.json()["csrf"]


def post_review(url: str, user: str, event_id: str, action: str) -> dict[str, Any]:
    """``user`` acknowledges or reviews ``event_id`` on the staff page at ``url``; the event as it is then."""
    from mpox_aism.kiosk.web.auth import CSRF_HEADER

    c, csrf = api_login(url, user)
    r = c.post(f"/api/events/{event_id}/review", json={"action": action, "note": ""}, headers={CSRF_HEADER: csrf})
    assert r.status_code == 200, r.text
    return r.json()


def browser_login(browser: Any, url: str, name: str, timeout: float = 30.0) -> None:
    """Log ``name`` (password ``PASSWORD``) in on the page at ``url`` through its login form."""
    from tests.kiosk.web.chromium import browser_login as log_in

    log_in(browser, url, name, PASSWORD, timeout)


@dataclass(frozen=True)
class ConsoleService:
    url: str  # the staff page
    store: Path
    accounts: Path


@contextmanager
def console_service(root: Path, broker: Broker, client_id: str,
                    tls: tuple[Path, Path] | None = None) -> Iterator[ConsoleService]:
    """``mpox_aism.console.service.run`` itself in a thread — subscriber, relay, outbox, publisher, staff page —
    with one reviewer, ``dr.console``; stopped (as by SIGTERM) on exit. ``tls``: (certificate, key) to serve
    the page over HTTPS (a self-signed test certificate: not verified here)."""
    import httpx

    from mpox_aism.console.config import parse_console_config
    from mpox_aism.console.service import run as run_console
    from mpox_aism.kiosk.accounts import Accounts
    from tests.kiosk.conftest import free_port
    from tests.kiosk.web.test_auth import FAST

    Accounts(root / "staff.sqlite3", hasher=FAST).add("dr.console", PASSWORD, "reviewer")
    port = free_port()
    cfg = parse_console_config({"mqtt": {"url": f"mqtt://127.0.0.1:{broker.port}", "client_id": client_id,
                                         "topic_root": ROOT},
                                "store": {"path": str(root / "console.sqlite3")},
                                "http": {"port": port, **({"tls": {"certfile": str(tls[0]), "keyfile": str(tls[1])}}
                                                          if tls else {})}})
    stop = threading.Event()
    t = threading.Thread(target=run_console, args=(cfg, stop), daemon=True)
    t.start()
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"

    def page_up() -> bool:
        try:
            return httpx.get(url + "/healthz", timeout=5, verify=False).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(page_up, 60, what="the console's page")
        yield ConsoleService(url, root / "console.sqlite3", root / "staff.sqlite3")
    finally:
        stop.set()
        t.join(30)
