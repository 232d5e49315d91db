"""The console's half of health (issue 29 item 3): parsing, the store's rules, the banners — and end to end,
a real kiosk reporter → a real mosquitto → the console → a real Chromium showing, then dropping, the banner.

The messages are the kiosk's own (``HealthMonitor`` with a fake clock makes them), so both ends share one
contract. No timing asserts: bounded waits only.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

from mpox_aism.console.ingest import HealthActiveIn, HealthIn, Kind, Rejected, parse, parse_topic, subscriptions
from mpox_aism.console.store import NOTICE_SHOWN_S, ConsoleStore, Incoming, Outcome, StationState
from mpox_aism.console.web import station_banners
from mpox_aism.kiosk.config import HealthConfig
from mpox_aism.kiosk.health import (
    HealthEvent,
    HealthMonitor,
    HealthReporter,
    HealthSnapshot,
    ModelVersions,
    iso_utc,
)
from mpox_aism.kiosk.status import KioskStatus, MqttStatus, OutboxStatus
from tests.console.conftest import ROOT
from tests.kiosk.conftest import HealthClocks as Clock
from tests.kiosk.conftest import camera_sample as cam
from tests.kiosk.conftest import health_monitor

ST = "gate-7"
HEALTH = f"{ROOT}/{ST}/health"
ACTIVE = f"{ROOT}/{ST}/health/active"


def monitor(clock: Clock, *, run_id: str = "r1", last: ModelVersions | None = None) -> HealthMonitor:
    return health_monitor(clock, last, run_id=run_id, camera_stall_s=5)


def stall_and_clear(clock: Clock, m: HealthMonitor, name: str = "desk") -> tuple[HealthEvent, HealthEvent]:
    """The kiosk raising ``camera_stalled`` for ``name`` and clearing it, a few seconds apart."""
    m.check([cam(1, name)], None, None)
    clock.t += 5
    (raised,) = m.check([cam(1, name)], None, None)
    clock.t += 3
    (cleared,) = m.check([cam(2, name)], None, None)
    assert (raised.state, cleared.state) == ("raised", "cleared")
    return raised, cleared


def snapshot(clock: Clock, m: HealthMonitor) -> HealthSnapshot:
    return HealthSnapshot(station_id=ST, run_id=m.run_id, time=iso_utc(clock.wall()), raised=m.active())


def _in(topic: str, payload: bytes, at: float = 1.0) -> Incoming:
    return Incoming(topic, parse(ROOT, topic, payload), at)


def ev(e: HealthEvent) -> Incoming:
    return _in(HEALTH, e.wire())


def snap(s: HealthSnapshot) -> Incoming:
    return _in(ACTIVE, s.model_dump_json(by_alias=True).encode())


def raised(store: ConsoleStore) -> list[tuple[str, str]]:
    st = store.station(ST)
    return [] if st is None else [(e.check, e.subject) for e in st.raised]


# ---------------------------------------------------------------------------------------------- ingest
def test_the_console_subscribes_to_health_and_the_snapshot():
    assert {f"{ROOT}/+/health", f"{ROOT}/+/health/active"} <= set(subscriptions(ROOT))
    assert parse_topic(ROOT, HEALTH).kind is Kind.HEALTH
    assert parse_topic(ROOT, ACTIVE).kind is Kind.HEALTH_ACTIVE
    for bad in (f"{ROOT}/{ST}/health/x", f"{ROOT}/{ST}/health/active/x", f"{ROOT}//health"):
        assert parse_topic(ROOT, bad) is None, bad


def test_health_messages_are_the_kiosks_models_and_bad_ones_are_rejected():
    clock = Clock()
    m = monitor(clock)
    r, _ = stall_and_clear(clock, m)
    got = parse(ROOT, HEALTH, r.wire())
    assert isinstance(got, HealthIn) and got.event == r and got.time_ts == clock.wall() - 3
    s = snapshot(clock, m)
    assert isinstance(parse(ROOT, ACTIVE, s.model_dump_json(by_alias=True).encode()), HealthActiveIn)
    other = r.model_copy(update={"station_id": "gate-8"})
    bad = {
        "another station's topic": (f"{ROOT}/gate-8/health", r.wire()),
        "payload names another station": (HEALTH, other.wire()),
        "not json": (HEALTH, b"nope"),
        "unknown check": (HEALTH, r.wire().replace(b"camera_stalled", b"disk_full")),
        "a raised notice": (HEALTH, r.model_copy(update={"check": "model_changed"}).wire()),
        "unreadable time": (HEALTH, r.model_copy(update={"time": "yesterday"}).wire()),
        "snapshot of another station": (ACTIVE, s.model_copy(update={"station_id": "gate-8"}).model_dump_json(
            by_alias=True).encode()),
        "snapshot with another station's raise": (ACTIVE, s.model_copy(update={"raised": [other]}).model_dump_json(
            by_alias=True).encode()),
        "snapshot with a clear": (ACTIVE, s.model_copy(update={"raised": [_]}).model_dump_json(
            by_alias=True).encode()),
        "empty snapshot": (ACTIVE, b""),
    }
    for why, (topic, payload) in bad.items():
        assert isinstance(parse(ROOT, topic, payload), Rejected), why


def test_a_bad_health_message_is_counted_never_a_crash(tmp_path):
    with ConsoleStore(tmp_path / "c.sqlite3") as s:
        assert s.apply([_in(HEALTH, b"{}"), _in(ACTIVE, b"[]")]) == [Outcome.REJECTED] * 2
        assert s.counts().invalid == 2 and s.stations() == []


# ---------------------------------------------------------------------------------------------- the store's rules
def test_raise_then_clear_and_a_duplicate_changes_nothing(tmp_path):
    clock = Clock()
    r, c = stall_and_clear(clock, monitor(clock))
    with ConsoleStore(tmp_path / "c.sqlite3") as s:
        assert s.apply([ev(r)]) == [Outcome.STORED]
        assert raised(s) == [("camera_stalled", "desk")] and s.station(ST).raised == (r,)
        before = s.stations()
        assert s.apply([ev(r)]) == [Outcome.DUPLICATE]  # a QoS 1 re-send
        assert s.stations() == before
        assert s.apply([ev(c)]) == [Outcome.STORED]
        assert raised(s) == []
        assert s.apply([ev(r), ev(c)]) == [Outcome.STALE, Outcome.DUPLICATE]  # re-delivered: still cleared
        assert raised(s) == [] and s.counts().duplicates == 0  # the events' counter is the events'


def test_out_of_order_settles_on_the_newest(tmp_path):
    clock = Clock()
    m = monitor(clock)
    r1, c1 = stall_and_clear(clock, m)
    clock.t += 10
    r2, _ = stall_and_clear(clock, m)  # stalled again, then cleared (that clear is not sent here)
    with ConsoleStore(tmp_path / "c.sqlite3") as s:
        # the clear before its raise (a queue drained after an outage, in any order): stays cleared
        assert s.apply([ev(c1), ev(r1)]) == [Outcome.STORED, Outcome.STALE]
        assert raised(s) == []
        # the second raise, then the first clear arriving late again: the second raise stands
        assert s.apply([ev(r2), ev(c1)]) == [Outcome.STORED, Outcome.STALE]
        assert s.station(ST).raised == (r2,)


def test_checks_are_kept_apart_by_check_and_subject(tmp_path):
    clock = Clock()
    m = monitor(clock)
    m.check([cam(1, "desk"), cam(1, "door")], None, None)
    clock.t += 5
    desk, door = m.check([cam(1, "desk"), cam(1, "door")], None, None)
    clock.t += 1
    (door_clear,) = m.check([cam(1, "desk"), cam(2, "door")], None, None)
    with ConsoleStore(tmp_path / "c.sqlite3") as s:
        s.apply([ev(desk), ev(door), ev(door_clear)])
        assert raised(s) == [("camera_stalled", "desk")]
        s.apply([_in(f"{ROOT}/gate-8/health", desk.model_copy(update={"station_id": "gate-8"}).wire())])
        assert raised(s) == [("camera_stalled", "desk")]  # gate-8's desk is gate-8's
        assert [(e.check, e.subject) for e in s.station("gate-8").raised] == [("camera_stalled", "desk")]


def test_a_snapshot_replaces_the_raised_set_unless_something_newer_set_a_check(tmp_path):
    clock = Clock()
    m = monitor(clock)
    r, c = stall_and_clear(clock, m)
    with ConsoleStore(tmp_path / "c.sqlite3") as s:
        # a console that starts late: the retained snapshot is all it gets, and it shows what is raised
        m2 = monitor(clock, run_id="r2")
        m2.check([cam(0, "door")], None, None)
        clock.t += 5
        (door,) = m2.check([cam(0, "door")], None, None)
        assert s.apply([snap(snapshot(clock, m2))]) == [Outcome.UPDATED]
        assert s.station(ST).raised == (door,)
        assert s.apply([snap(snapshot(clock, m2))]) == [Outcome.STALE]  # the same one at the next subscribe
        # the raise it listed arrives after it: nothing changes; an older raise of another check: stale too
        assert s.apply([ev(door), ev(r)]) == [Outcome.DUPLICATE, Outcome.STALE]
        assert raised(s) == [("camera_stalled", "door")]
        # the door's clear was lost; the next snapshot (nothing raised) corrects it
        clock.t += 30
        m2.check([cam(1, "door")], None, None)
        assert m2.active() == []
        assert s.apply([snap(snapshot(clock, m2))]) == [Outcome.UPDATED]
        assert raised(s) == []
        # an old snapshot (retained before; delivered late) changes nothing
        old = HealthSnapshot(station_id=ST, run_id="r0", time=iso_utc(clock.wall() - 60), raised=[r])
        assert s.apply([snap(old)]) == [Outcome.STALE] and raised(s) == []
        assert c.state == "cleared"


def test_a_raise_newer_than_the_snapshot_survives_it(tmp_path):
    clock = Clock()
    m = monitor(clock)
    m.check([cam(1)], None, None)
    early = snapshot(clock, m)  # nothing raised yet
    clock.t += 5
    (r,) = m.check([cam(1)], None, None)
    with ConsoleStore(tmp_path / "c.sqlite3") as s:
        s.apply([ev(r), snap(early)])  # the snapshot arrives after a newer raise: the raise stands
        assert s.station(ST).raised == (r,)


def test_a_kiosk_restart_clears_the_old_runs_checks_by_its_first_snapshot(tmp_path):
    clock = Clock()
    m = monitor(clock)
    m.check([cam(1)], None, None)
    clock.t += 5
    (r,) = m.check([cam(1)], None, None)
    with ConsoleStore(tmp_path / "c.sqlite3") as s:
        s.apply([ev(r)])
        clock.t += 60  # restarted; the new run's camera works, so it never sends a clear
        fresh = monitor(clock, run_id="r2")
        fresh.check([cam(1)], None, None)
        s.apply([snap(snapshot(clock, fresh))])
        assert raised(s) == []


def test_notices_are_kept_once_and_shown_for_a_day(tmp_path):
    clock = Clock()
    (n,) = monitor(clock, last=ModelVersions("m1")).check([], None, ModelVersions("m2"))
    now = [1000.0]
    with ConsoleStore(tmp_path / "c.sqlite3", clock=lambda: now[0]) as s:
        received = _in(HEALTH, n.wire(), at=now[0])  # the console's clock at arrival (the kiosk's time differs)
        assert s.apply([received, received]) == [Outcome.STORED, Outcome.DUPLICATE]
        assert s.station(ST).notices == (n,) and raised(s) == []
        now[0] += NOTICE_SHOWN_S - 1
        assert s.station(ST).notices == (n,)
        now[0] += 2
        assert s.station(ST).notices == ()
        assert s.apply([ev(n)]) == [Outcome.DUPLICATE]  # kept, so a late re-send does not show it again


# ---------------------------------------------------------------------------------------------- banners
def _station(**kw: Any) -> StationState:
    base: dict[str, Any] = dict(station_id=ST, first_seen=0.0, online=True, availability_at=0.0, status=None,
                                status_at=None, last_event_ts=None, last_event_id=None, events=0)
    return StationState(**(base | kw))


def test_banners_critical_first_one_per_stalled_camera_and_notices_last():
    clock = Clock()
    m = monitor(clock, last=ModelVersions("m1"))
    m.check([cam(1)], None, None)
    clock.t += 5
    (r,) = m.check([cam(1)], None, None)
    (n,) = m.check([cam(2)], None, ModelVersions("m2"))[1:]
    status = KioskStatus(down=["camera:desk", "mqtt"], station_id=ST, run_id="r1", model_version="m2", cameras={},
                         mqtt=MqttStatus(configured=True, connected=False, published=0, last_error=None),
                         outbox=OutboxStatus(depth=0, dropped=0, oldest_age_s=None, unsaved=0, unsaved_dropped=0,
                                             write_error=None))
    banners = station_banners(_station(status=status, raised=(r,), notices=(n,)))
    assert [(b.kind, b.subject, b.severity) for b in banners] == [
        ("camera_stalled", "desk", "critical"), ("down", "mqtt", "warning"), ("model_changed", "model", "notice")]
    stalled = banners[0]
    assert stalled.text.startswith(f"{ST}: camera desk has stopped since ") and r.detail in stalled.text
    assert stalled.since == dt.datetime.fromtimestamp(clock.wall() - 5, dt.UTC)  # the last frame
    assert "m1 → m2" in banners[2].text
    off = station_banners(_station(online=False, raised=(r,)))
    assert [b.kind for b in off] == ["offline", "camera_stalled"] and "offline" in off[1].text


# ---------------------------------------------------------------------------------------------- end to end
class _Cam:
    """The CameraState fields the reporter reads; ``frames`` moved by the test."""

    def __init__(self) -> None:
        self.frames, self.done, self.live, self.last_error = 1, False, True, None


def test_a_camera_that_stops_is_a_banner_on_the_console_until_it_clears(tmp_path, make_broker, browser):
    """The kiosk's own HealthReporter, outbox and publisher → a real mosquitto → the console (its service, in a
    thread) → real Chromium: the banner names the station and the camera, and goes when the kiosk clears it."""
    pytest.importorskip("httpx")
    from selenium.webdriver.common.by import By

    from mpox_aism.kiosk.mqtt import MqttPublisher
    from mpox_aism.kiosk.outbox import Outbox
    from tests.console.conftest import browser_login, console_service
    from tests.kiosk.conftest import wait_until
    from tests.kiosk.web.chromium import wait

    broker = make_broker()
    clock = Clock()  # the monitor's monotonic clock, moved by hand; its messages carry real wall-clock times
    mon = HealthMonitor(HealthConfig(camera_stall_s=5), station_id=ST, run_id="r1", clock=clock.mono, wall=time.time)
    cams: dict[str, Any] = {"desk": _Cam()}
    sel = f'#banners p[data-station="{ST}"][data-kind="camera_stalled"][data-subject="desk"]'
    with console_service(tmp_path / "console", broker, "console-health") as site, \
            Outbox(tmp_path / "kiosk-outbox.sqlite3") as outbox:
        pub = MqttPublisher(outbox, host="127.0.0.1", port=broker.port, client_id=f"kiosk-{ST}",
                            topic_prefix=f"{ROOT}/{ST}", reconnect_max_s=2)
        rep = HealthReporter(mon, outbox=outbox, topic=f"{ROOT}/{ST}/health", publisher=pub, metrics=None,
                             record_path=tmp_path / "health-models.json")
        pub.start()
        try:
            wait_until(lambda: pub.connected, 30, what="the kiosk's connection")
            rep.tick(cams, None)  # nothing raised: the first snapshot, which makes the station known
            browser_login(browser, site.url, "dr.console")
            wait(browser, 60, "the station on the page", lambda d: d.find_elements(
                By.CSS_SELECTOR, f'#stations li[data-station="{ST}"]'))
            assert browser.find_elements(By.CSS_SELECTOR, sel) == []
            clock.t += 5  # the desk camera produced nothing for camera_stall_s
            assert [(e.check, e.state) for e in rep.tick(cams, None)] == [("camera_stalled", "raised")]
            wait(browser, 60, "the camera_stalled banner", lambda d: d.find_elements(By.CSS_SELECTOR, sel))
            banner = browser.find_element(By.CSS_SELECTOR, sel)
            assert f"{ST}: camera desk has stopped" in banner.text and "critical" in banner.get_attribute("class")
            cams["desk"].frames += 1  # frames again
            assert [(e.check, e.state) for e in rep.tick(cams, None)] == [("camera_stalled", "cleared")]
            wait(browser, 60, "the banner gone", lambda d: not d.find_elements(By.CSS_SELECTOR, sel))
            with ConsoleStore(site.store, readonly=True) as s:
                assert s.counts().invalid == 0 and s.station(ST).raised == ()
        finally:
            pub.close(timeout=2)
