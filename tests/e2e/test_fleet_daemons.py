"""Three real kiosk daemons and one console through a real mosquitto, seen in a real headless Chromium.

Each kiosk is ``mpox-aism run`` itself (a child process) on the embedded demo's photos with its own station id,
state directory, staff page and outbox; the decision threshold is raised to 0.99 so that the demo's healthy
photos end in ``review`` (low confidence) and become events, which is what the console queues. ``gate-3`` also
has a camera on an rtsp:// URL nobody serves, so its ``camera_stalled`` health event reaches the console as a
banner. The console is ``mpox_aism.console.service.run`` (subscriber, relay, staff page) in a thread.
Checked: the console's page shows all three stations' events; an acknowledgement on the console reaches the
kiosk's page, and a review on a kiosk reaches the console; the stopped camera shows as a banner.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

httpx = pytest.importorskip("httpx", reason="httpx not installed: pip install httpx")

from mpox_aism.contracts.sample import builtin_sample_dir  # noqa: E402
from mpox_aism.kiosk.accounts import Accounts  # noqa: E402
from tests.conftest import REPO, default_model_or_skip  # noqa: E402
from tests.console.conftest import PASSWORD, browser, browser_login, console_service, post_review  # noqa: E402, F401 - browser: a fixture
from tests.console.conftest import api_login as login  # noqa: E402
from tests.kiosk.conftest import MOSQUITTO, Broker, free_port, wait_until  # noqa: E402
from tests.kiosk.web.test_auth import FAST  # noqa: E402

STATIONS = ("gate-1", "gate-2", "gate-3")
WAIT_S = 180.0  # three daemons load their models on two cores


@dataclass
class KioskDaemon:
    station_id: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


def start_kiosk(root: Path, broker: Broker, station: str) -> KioskDaemon:
    state = root / station
    state.mkdir(parents=True)
    Accounts(state / "staff.sqlite3", hasher=FAST).add(f"nurse.{station}", PASSWORD, "reviewer")
    port = free_port()
    cameras = [{"name": "desk", "source": str(builtin_sample_dir() / "normal"), "hold_frames": 10,
                "detect_stride": 1, "classify_stride": 1, "loop": True}]
    if station == "gate-3":
        cameras.append({"name": "lane", "source": f"rtsp://127.0.0.1:{free_port()}/nobody"})
    cfg = {"station_id": station, "cameras": cameras, "exit_when_done": False,
           "decision": {"threshold": 0.99},  # the demo's healthy photos then end in review: events for the console
           "mqtt": {"url": f"mqtt://127.0.0.1:{broker.port}", "status_interval_s": 2.0},
           "http": {"port": port}, "health": {"camera_stall_s": 3}}
    (state / "kiosk.yaml").write_text(yaml.safe_dump(cfg))
    log = state / "daemon.log"
    with log.open("ab") as f:
        proc = subprocess.Popen([sys.executable, "-m", "mpox_aism.cli", "run", "--config", str(state / "kiosk.yaml")],
                                cwd=REPO, env={**os.environ, "STATE_DIRECTORY": str(state)}, stdout=f,
                                stderr=subprocess.STDOUT)
    return KioskDaemon(station, f"http://127.0.0.1:{port}", proc, log)


def events(url: str, user: str) -> list[dict[str, Any]]:
    try:
        c, _ = login(url, user)
        return c.get("/api/events").json()
    except (httpx.HTTPError, KeyError, ValueError):
        return []  # the page is not up yet


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[dict[str, KioskDaemon], Any]]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto not installed: apt-get install -y mosquitto")
    default_model_or_skip()
    broker = Broker(tmp_path / "broker").start()
    kiosks: dict[str, KioskDaemon] = {}
    try:
        with console_service(tmp_path / "console", broker, "console-e2e") as console:
            kiosks = {st: start_kiosk(tmp_path, broker, st) for st in STATIONS}
            yield kiosks, console
    finally:
        for k in kiosks.values():
            if k.proc.poll() is None:
                k.proc.send_signal(signal.SIGTERM)
            try:
                k.proc.wait(60)
            except subprocess.TimeoutExpired:
                k.proc.kill()
        broker.stop()


def test_three_kiosk_daemons_one_console(fleet: tuple[dict[str, KioskDaemon], Any],
                                         browser: Any) -> None:  # noqa: F811 - the imported fixture
    from selenium.webdriver.common.by import By

    from tests.kiosk.web.chromium import wait

    kiosks, console = fleet

    def console_stations() -> set[str]:
        for k in kiosks.values():
            assert k.proc.poll() is None, k.log.read_text(errors="replace")[-3000:]
        return {e["station_id"] for e in events(console.url, "dr.console")}

    wait_until(lambda: console_stations() >= set(STATIONS), WAIT_S, what="every station's events at the console")

    browser_login(browser, console.url, "dr.console")
    rows = "#events li"
    wait(browser, 60, "three stations' events on the console's page", lambda d: {
        e.get_attribute("data-station") for e in d.find_elements(By.CSS_SELECTOR, rows)} >= set(STATIONS))
    wait(browser, 60, "gate-3's stopped camera as a banner", lambda d: any(
        "gate-3" in b.text and "lane" in b.text for b in d.find_elements(By.CSS_SELECTOR, "#banners *")))

    # the console acknowledges a gate-1 event: it reaches gate-1's own page
    ev1 = next(e["event_id"] for e in events(console.url, "dr.console") if e["station_id"] == "gate-1")
    acted = post_review(console.url, "dr.console", ev1, "acknowledged")
    wait_until(lambda: any(e["event_id"] == ev1 and (e.get("review") or {}).get("action_id") == acted["action_id"]
                           for e in events(kiosks["gate-1"].url, "nurse.gate-1")), 60,
               what="the console's acknowledgement on gate-1's page")

    # a nurse reviews a gate-2 event on the kiosk: it reaches the console
    ev2 = next(e["event_id"] for e in events(kiosks["gate-2"].url, "nurse.gate-2"))
    done = post_review(kiosks["gate-2"].url, "nurse.gate-2", ev2, "reviewed")
    wait_until(lambda: any(e["event_id"] == ev2 and (e.get("review") or {}).get("action_id") == done["action_id"]
                           for e in events(console.url, "dr.console")), 60, what="gate-2's review at the console")
