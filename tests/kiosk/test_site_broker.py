"""The shipped site broker (systemd/mosquitto/) on a real mosquitto: accounts, ACL, TLS, persistence.

Everything is the shipped files: ``setup.sh`` installs the drop-in and the ACL into a temporary /etc,
makes the site CA, the server certificate and the accounts (with the real ``mosquitto_passwd`` and
``openssl``); the broker runs Debian's main config (its paths moved under tmp) including that drop-in,
changed only in its listener line (a free port on 127.0.0.1 instead of 8883; one test also lowers the
queue bound, to reach it). Every client talks
TLS, verifying the broker against the site CA. "Not delivered" is shown by order, not by waiting: a
message the broker would have delivered is published before one that is, on the same connection, so
once the later one has arrived the earlier one would have too.
"""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mpox_aism.kiosk.config import parse_config
from mpox_aism.kiosk.daemon import Daemon
from mpox_aism.kiosk.mqtt import MqttPublisher
from mpox_aism.kiosk.outbox import Outbox
from tests.kiosk.conftest import APT_LINE, MOSQUITTO_PASSWD, Broker, Collector, mqtt, wait_until

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "systemd" / "mosquitto"
DEFAULT_DIR = "/etc/mosquitto/mpox-aism/"
# Debian 12's /etc/mosquitto/mosquitto.conf without its comments: the drop-in must load beside it
# (mosquitto refuses, for instance, a second persistence_location).
DEBIAN_MAIN = """pid_file /run/mosquitto/mosquitto.pid
persistence true
persistence_location /var/lib/mosquitto/
log_dest file /var/log/mosquitto/mosquitto.log
include_dir /etc/mosquitto/conf.d
"""
STATIONS = ("gate-7", "gate-8")
NOT_AUTHORIZED = 135  # 0x87, what paho reports for a v5 refusal and for MQTT 3.1.1's CONNACK 5
V311, V5 = mqtt.MQTTv311, mqtt.MQTTv5


@dataclass(frozen=True)
class Site:
    """What setup.sh made: the broker's folder (DEFAULT_DIR's stand-in), its drop-in folder, passwords."""

    dir: Path
    conf_d: Path
    passwords: dict[str, str]

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"


def setup_sh(site_dir: Path, conf_d: Path, *args: str) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run([bash, str(SHIPPED / "setup.sh"), "--dir", str(site_dir), "--conf-dir", str(conf_d),
                           *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """The shipped setup.sh run once per module: drop-in + ACL, CA + server certificate, three accounts."""
    if MOSQUITTO_PASSWD is None:
        pytest.skip(f"mosquitto_passwd not found; install it with: {APT_LINE}")
    if shutil.which("openssl") is None or shutil.which("bash") is None:
        pytest.skip("openssl or bash not found (apt-get install -y openssl)")
    root = tmp_path_factory.mktemp("site")
    site_dir, conf_d = root / "etc" / "mpox-aism", root / "etc" / "conf.d"

    def ok(*args: str) -> str:
        r = setup_sh(site_dir, conf_d, *args)
        assert r.returncode == 0, r.stderr
        return r.stdout

    ok("install")
    ok("ca", "localhost", "127.0.0.1")
    passwords = {name: ok("kiosk", name).strip() for name in STATIONS}
    passwords["console"] = ok("console").strip()
    passwords["console-send"] = ok("console-send").strip()
    return Site(site_dir, conf_d, passwords)


def render(b: Broker, site: Site, changes: dict[str, str] | None = None) -> str:
    """Debian's main config with its paths under this broker's folder, including the installed drop-in
    with its listener moved to this broker's port (the one change made to it, unless a test names
    more: whole lines, each found exactly once)."""
    conf_d = b.root / "conf.d"
    conf_d.mkdir(exist_ok=True)
    dropin = (site.conf_d / "mpox-aism.conf").read_text()
    for old, new in {"listener 8883": f"listener {b.port} 127.0.0.1", **(changes or {})}.items():
        assert dropin.count(f"\n{old}\n") == 1, old
        dropin = dropin.replace(f"\n{old}\n", f"\n{new}\n")
    (conf_d / "mpox-aism.conf").write_text(dropin)
    main = DEBIAN_MAIN
    for old, new in (("/run/mosquitto/mosquitto.pid", str(b.root / "mosquitto.pid")),
                     ("/var/lib/mosquitto/", f"{b.root}/"), ("/var/log/mosquitto/mosquitto.log", str(b.log)),
                     ("/etc/mosquitto/conf.d", str(conf_d))):
        assert main.count(old) == 1, old
        main = main.replace(old, new)
    # as root mosquitto would drop to user "mosquitto", which cannot write tmp_path (see conftest)
    return main + f"user {getpass.getuser()}\n"


@pytest.fixture
def site_broker(make_broker: Callable[..., Broker], site: Site) -> Broker:
    return make_broker(config=lambda b: render(b, site))


@pytest.fixture
def login(site_broker: Broker, site: Site, collectors: Callable[..., Collector]) -> Callable[..., Collector]:
    """login(account, topic=None, **kw): a TLS client of the site broker with that account's password."""

    def make(account: str, topic: str | None = None, **kw: object) -> Collector:
        kw.setdefault("password", site.passwords.get(account))
        return collectors(site_broker.port, topic, username=account, tls_ca=site.ca, **kw)

    return make


def kiosk_config(site: Site, port: int, *, username: str | None = None) -> dict[str, Any]:
    """The example configs/kiosk.yaml (station gate-7) pointed at this broker and the site CA; its MQTT
    user name as shipped unless ``username`` is given."""
    cfg = yaml.safe_load((REPO / "configs" / "kiosk.yaml").read_text())
    mqtt_cfg = cfg["mqtt"]
    cfg["mqtt"] = {**mqtt_cfg, "url": f"mqtts://127.0.0.1:{port}", "username": username or mqtt_cfg["username"],
                   "tls": {**mqtt_cfg["tls"], "ca_certs": str(site.ca)}}
    return cfg


def daemon_publisher(cfg: dict[str, Any], outbox: Path, password: str, creds: Path,
                     monkeypatch: pytest.MonkeyPatch) -> MqttPublisher:
    """The publisher exactly as the daemon builds it from its config (password from the systemd credential)."""
    creds.mkdir(exist_ok=True)
    (creds / "mqtt-password").write_text(password + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    pub = Daemon(parse_config(cfg))._publisher(Outbox(outbox))
    assert pub is not None
    return pub


# -- the shipped files ----------------------------------------------------------------------------
def test_setup_installs_the_shipped_files_and_refuses_bad_station_ids(site: Site) -> None:
    assert (site.dir / "acl").read_bytes() == (SHIPPED / "acl").read_bytes()
    shipped = (SHIPPED / "mpox-aism.conf").read_text()
    assert (site.conf_d / "mpox-aism.conf").read_text() == shipped.replace(DEFAULT_DIR, f"{site.dir}/")
    users = [line.split(":", 1)[0] for line in (site.dir / "passwd").read_text().splitlines()]
    assert users == [*STATIONS, "console", "console-send"]
    assert len(set(site.passwords.values())) == 4 and all(len(p) >= 32 for p in site.passwords.values())
    assert (site.dir / "passwd").stat().st_mode & 0o077 == 0 and (site.dir / "server.key").stat().st_mode & 0o077 == 0
    openssl = shutil.which("openssl")
    assert openssl is not None
    verify = subprocess.run([openssl, "verify", "-CAfile", str(site.ca), str(site.dir / "server.pem")],
                            capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    for bad, why in (("console", "console's account"), ("console-send", "console's account"),
                     ("gate/9", "not a valid station_id"),
                     ("+", "not a valid station_id")):
        r = setup_sh(site.dir, site.conf_d, "kiosk", bad)
        assert r.returncode != 0 and why in r.stderr and not r.stdout, (bad, r.stderr)
    assert [line.split(":", 1)[0] for line in (site.dir / "passwd").read_text().splitlines()] == users


# -- the ACL --------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", [V311, V5], ids=["mqtt3.1.1", "mqtt5"])
def test_a_kiosk_publishes_under_its_own_station_only(login, protocol: int) -> None:
    console = login("console", "mpox-aism/#").wait_subscribed()
    kiosk = login("gate-7", protocol=protocol)
    assert kiosk.wait_connack() == 0
    # MQTT 3.1.1's PUBACK cannot refuse: mosquitto acknowledges the publish and drops it. MQTT 5's says why.
    refused = NOT_AUTHORIZED if protocol == V5 else 0
    assert kiosk.publish("mpox-aism/gate-8/events", b"forged alert") == refused
    assert kiosk.publish("mpox-aism/gate-8/availability", b"offline", retain=True) == refused
    assert kiosk.publish("mpox-aism/console/state", b"forged staff state") == refused
    assert kiosk.publish("mpox-aism/gate-7/events", b"alert") == 0
    wait_until(lambda: console.payloads(), what="the kiosk's own alert at the console")
    assert console.messages == [("mpox-aism/gate-7/events", b"alert", False)]


def test_a_kiosk_reads_neither_other_stations_nor_staff_topics(login) -> None:
    kiosk = login("gate-7", "#").wait_subscribed()
    for topic in ("mpox-aism/gate-8/acks/#", "mpox-aism/console/#", "mpox-aism/+/events"):
        kiosk.client.subscribe(topic, qos=1)
    wait_until(lambda: len(kiosk.granted) == 4, what="four SUBACKs")
    # mosquitto 2.0 grants every subscription and checks the ACL on each message it would deliver
    assert kiosk.granted == [[1], [1], [1], [1]]
    other = login("gate-8")
    assert other.publish("mpox-aism/gate-8/events", b"gate-8's alert") == 0
    assert other.publish("mpox-aism/gate-8/status", b"{}", retain=True) == 0
    console = login("console", protocol=V5)
    assert console.publish("mpox-aism/gate-8/acks/e1", b"ack for gate-8") == 0
    assert console.publish("mpox-aism/console/shift", b"staff state", retain=True) == 0
    assert console.publish("mpox-aism/gate-7/acks/e2", b"ack for gate-7") == 0
    wait_until(lambda: kiosk.payloads(), what="the console's ack to gate-7")
    assert kiosk.messages == [("mpox-aism/gate-7/acks/e2", b"ack for gate-7", False)]
    kiosk.close()  # one connection per account: a second gate-7 would take this one's place
    late = login("gate-7", "#").wait_subscribed()  # retained staff state and statuses are not shown either
    assert late.publish("mpox-aism/gate-7/acks/e3", b"own") == 0  # a kiosk may write its own subtree
    wait_until(lambda: late.payloads(), what="gate-7's own ack")
    assert [t for t, _, _ in late.messages] == ["mpox-aism/gate-7/acks/e3"]


def test_the_console_reads_every_station_acks_them_and_cannot_speak_for_one(login) -> None:
    # one connection per account (the broker makes the user name the client id), so the console
    # subscribes and publishes on the same one; it sees its own publishes under mpox-aism/#
    console = login("console", "mpox-aism/#", protocol=V5).wait_subscribed()
    gate7 = login("gate-7", "mpox-aism/gate-7/acks/#").wait_subscribed()
    assert login("gate-8").publish("mpox-aism/gate-8/events", b"alert 8") == 0
    assert gate7.publish("mpox-aism/gate-7/events", b"alert 7") == 0
    assert console.publish("mpox-aism/gate-7/events", b"forged by the console") == NOT_AUTHORIZED
    assert console.publish("mpox-aism/console/shift", b"staff state") == 0
    assert console.publish("mpox-aism/gate-7/acks/alert-7", b"seen") == 0
    wait_until(lambda: gate7.payloads(), what="the ack at gate-7")
    assert gate7.messages == [("mpox-aism/gate-7/acks/alert-7", b"seen", False)]
    wait_until(lambda: len(console.messages) == 4, what="both alerts, the staff state and the ack at the console")
    assert [(t, p) for t, p, _ in console.messages] == [
        ("mpox-aism/gate-8/events", b"alert 8"), ("mpox-aism/gate-7/events", b"alert 7"),
        ("mpox-aism/console/shift", b"staff state"), ("mpox-aism/gate-7/acks/alert-7", b"seen")]


# -- who gets in ----------------------------------------------------------------------------------
def test_only_accounts_with_their_password_over_tls_get_in(site_broker: Broker, site: Site, login) -> None:
    for protocol in (V311, V5):
        assert login("gate-7", password=None, protocol=protocol).wait_connack() == NOT_AUTHORIZED  # no password
        assert login("gate-7", password="not-its-password", protocol=protocol).wait_connack() == NOT_AUTHORIZED
        assert login("gate-9", password=site.passwords["gate-7"], protocol=protocol).wait_connack() == NOT_AUTHORIZED
    anonymous = Collector(site_broker.port, None, tls_ca=site.ca)
    try:
        assert anonymous.wait_connack() == NOT_AUTHORIZED
    finally:
        anonymous.close()
    # plaintext MQTT to the listener: the broker reads it as a broken TLS handshake, never as a CONNECT
    connect = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 0])
    with socket.create_connection(("127.0.0.1", site_broker.port), timeout=20) as s:
        s.sendall(connect)
        try:
            answer = s.recv(16)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"\x20"), answer  # 0x20: a CONNACK
    assert login("gate-7").wait_connack() == 0


def test_no_client_can_use_another_accounts_client_id(login) -> None:
    """use_username_as_clientid: a kiosk cannot disconnect another by its client id, nor wipe the
    console's queued session by connecting with a clean session under the console's id."""
    login("console", "mpox-aism/+/events", client_id="console", clean=False).wait_subscribed().close()
    gate7 = login("gate-7", client_id="mpox-aism-gate-7")
    assert gate7.wait_connack() == 0
    for stolen in ("mpox-aism-gate-7", "gate-7", "console"):
        intruder = login("gate-8", client_id=stolen, clean=True)
        assert intruder.wait_connack() == 0
        intruder.close()
    assert gate7.publish("mpox-aism/gate-7/events", b"queued for the console") == 0
    assert gate7.connacks == [0]  # never disconnected (a reconnect would have come before the PUBACK)
    console = login("console", "mpox-aism/+/events", client_id="console", clean=False)
    wait_until(lambda: console.payloads(), what="the alert queued in the console's session")
    assert console.payloads() == [b"queued for the console"]


# -- persistence ----------------------------------------------------------------------------------
@pytest.mark.parametrize("crash", [False, True], ids=["sigterm", "sigkill-after-autosave"])
def test_an_alert_queued_for_the_console_survives_a_broker_restart(site_broker: Broker, login, crash: bool) -> None:
    """The console is away (persistent session); a kiosk's alert is PUBACKed; the broker stops with
    SIGTERM (saves on exit), or is SIGKILLed once the alert is in its autosaved database (saved on the
    change, not on a timer: Debian's default of 30 minutes would miss the bounded wait)."""
    login("console", "mpox-aism/+/events", client_id="console", clean=False).wait_subscribed().close()
    alert = f"alert {uuid.uuid4().hex}".encode()
    kiosk = login("gate-7")
    assert kiosk.publish("mpox-aism/gate-7/events", alert) == 0
    kiosk.close()
    if crash:
        wait_until(lambda: site_broker.db.exists() and alert in site_broker.db.read_bytes(),
                   what="the alert in the broker's database file")
        site_broker.stop(signal.SIGKILL)
    else:
        site_broker.stop(signal.SIGTERM)
    site_broker.start()
    console = login("console", "mpox-aism/+/events", client_id="console", clean=False)
    wait_until(lambda: console.payloads(), what="the queued alert after the restart")
    assert console.payloads() == [alert]


def test_beyond_the_queue_bound_alerts_for_the_away_console_are_dropped_after_their_puback(
        make_broker: Callable[..., Broker], site: Site, collectors: Callable[..., Collector]) -> None:
    """What max_queued_messages means (lowered from 100,000 to 2 to reach it): the third alert for the
    away console is PUBACKed with success, under MQTT 5 too, and never delivered."""
    b = make_broker(config=lambda b: render(b, site, {"max_queued_messages 100000": "max_queued_messages 2"}))

    def login(account: str, topic: str | None = None, **kw: object) -> Collector:
        return collectors(b.port, topic, username=account, password=site.passwords[account], tls_ca=site.ca, **kw)

    login("console", "mpox-aism/+/events", client_id="console", clean=False).wait_subscribed().close()
    kiosk = login("gate-7", protocol=V5)
    assert [kiosk.publish("mpox-aism/gate-7/events", f"alert {i}".encode()) for i in range(4)] == [0, 0, 0, 0]
    console = login("console", "mpox-aism/+/events", client_id="console", clean=False).wait_subscribed()
    assert kiosk.publish("mpox-aism/gate-7/events", b"after") == 0  # delivered after whatever was queued
    wait_until(lambda: b"after" in console.payloads(), what="the alert sent after the console came back")
    assert console.payloads() == [b"alert 0", b"alert 1", b"after"]
    assert "Outgoing messages are being dropped for client console." in b.log.read_text()


# -- the kiosk daemon's own publisher ---------------------------------------------------------------
def test_the_kiosk_daemon_publishes_through_the_site_broker(site_broker: Broker, site: Site, login, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The example config (user name = station id, TLS pinned to the site CA, password from the systemd
    credential), as the daemon builds its publisher: events, availability and status all allowed."""
    console = login("console", "mpox-aism/#").wait_subscribed()
    cfg = kiosk_config(site, site_broker.port)
    assert cfg["station_id"] == cfg["mqtt"]["username"] == "gate-7"
    pub = daemon_publisher(cfg, tmp_path / "outbox.sqlite3", site.passwords["gate-7"], tmp_path / "creds",
                           monkeypatch)
    try:
        event_id = pub.publish_event("events", {"decision": "suspected"})
        wait_until(lambda: pub.stats()["published"] == 1, what="the event PUBACKed")
        wait_until(lambda: console.payloads("mpox-aism/gate-7/events"), what="the event at the console")
        assert [event_id.encode() in p for p in console.payloads("mpox-aism/gate-7/events")] == [True]
        assert console.last("mpox-aism/gate-7/availability") == b"online"
        assert pub.publish_status("status", {"station_id": "gate-7"})
        wait_until(lambda: console.last("mpox-aism/gate-7/status"), what="the retained status")
    finally:
        pub.close()
    wait_until(lambda: console.last("mpox-aism/gate-7/availability") == b"offline", what="offline on close")


def test_the_kiosk_gets_acks_on_its_one_connection_from_the_consoles_second_account(
        site_broker: Broker, site: Site, login, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One connection per account: the kiosk's acknowledgements come in on its alert publisher's connection
    (a second one would push the first off), and the console sends them as 'console-send', which may write
    acks and nothing of a station's own."""
    console = login("console", "mpox-aism/#", protocol=V5).wait_subscribed()
    sender = login("console-send", "mpox-aism/gate-7/events", protocol=V5).wait_subscribed()
    pub = daemon_publisher(kiosk_config(site, site_broker.port), tmp_path / "outbox.sqlite3", site.passwords["gate-7"],
                           tmp_path / "creds", monkeypatch)
    got: list[tuple[str, bytes]] = []
    pub.subscribe("mpox-aism/gate-7/acks/+", lambda topic, payload: got.append((topic, payload)))
    try:
        wait_until(lambda: pub.connected, what="the kiosk connected")
        assert sender.publish("mpox-aism/gate-7/acks/e9", b"history", retain=True) == 0
        wait_until(lambda: got, what="the ack on the kiosk's connection")
        assert got == [("mpox-aism/gate-7/acks/e9", b"history")]
        assert sender.publish("mpox-aism/gate-7/events", b"forged") == NOT_AUTHORIZED
        pub.publish_event("events", {"decision": "suspected"})
        wait_until(lambda: pub.stats()["published"] == 1, what="the alert PUBACKed on the same connection")
        wait_until(lambda: console.payloads("mpox-aism/gate-7/events"), what="the alert at the console")
        assert sender.payloads() == [] and pub.connected and console.connacks == [0]
    finally:
        pub.close()


def test_an_alert_the_acl_refuses_stays_in_the_outbox(site_broker: Broker, site: Site, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A kiosk logged in as gate-8 but configured as station gate-7 (its topics): every alert is refused."""
    cfg = kiosk_config(site, site_broker.port, username="gate-8")
    pub = daemon_publisher(cfg, tmp_path / "outbox.sqlite3", site.passwords["gate-8"], tmp_path / "creds",
                           monkeypatch)
    try:
        pub.publish_event("events", {"decision": "suspected"})
        wait_until(lambda: pub.stats()["pending"] == 0 or pub.stats()["last_error"], what="an answer to the alert")
        stats = pub.stats()
        assert stats["pending"] == 1 and stats["refused"] >= 1
        assert "not authori" in (stats["last_error"] or "").lower()
    finally:
        pub.close()
