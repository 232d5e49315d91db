"""Acknowledgements both ways, end to end: a real mosquitto, three kiosks and one console, real Chromium.

Each kiosk is the kiosk's own code minus the cameras: its staff app (``add_staff_routes``) served by uvicorn,
its outbox and MQTT publisher, and ``KioskAcks`` (what ``Daemon.run`` starts via ``start_acks``). The console is
``mpox_aism.console.service.run`` itself, in a thread: subscriber, relay, outbox, publisher, staff page. No
timing asserts: bounded waits only.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx", reason="httpx not installed: pip install httpx")
pytest.importorskip("fastapi", reason="fastapi not installed")

import paho.mqtt.client as mqtt  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from mpox_aism.bench.fleet import synthetic_event  # noqa: E402
from mpox_aism.console.store import ConsoleStore  # noqa: E402
from mpox_aism.kiosk.accounts import Accounts  # noqa: E402
from mpox_aism.kiosk.acks import KioskAcks  # noqa: E402
from mpox_aism.kiosk.actions import Action, ActionHistory, ReviewStore, new_action_id, settled, utc_iso  # noqa: E402
from mpox_aism.kiosk.mqtt import MqttPublisher  # noqa: E402
from mpox_aism.kiosk.outbox import Outbox  # noqa: E402
from mpox_aism.kiosk.web.auth import CSRF_HEADER  # noqa: E402
from mpox_aism.kiosk.web.server import ServerThread  # noqa: E402
from mpox_aism.kiosk.web.staff import add_staff_routes  # noqa: E402
from tests.console.conftest import PASSWORD, ROOT, browser_login, console_service, post_review  # noqa: E402
from tests.console.conftest import api_login as login  # noqa: E402
from tests.kiosk.conftest import MOSQUITTO, Broker, wait_until  # noqa: E402
from tests.kiosk.web.test_auth import FAST  # noqa: E402

STATIONS = ("gate-1", "gate-2", "gate-3")
CONSOLE_ID = "console-a"
WAIT_S = 30.0


@dataclass
class Kiosk:
    station_id: str
    outbox: Outbox
    publisher: MqttPublisher
    acks: KioskAcks
    server: ServerThread
    reviews: ReviewStore
    accounts: Accounts
    events: list[dict[str, Any]]

    def emit(self) -> str:
        e = synthetic_event(self.station_id, len(self.events), "acks-test")
        self.events.append(e.payload())
        self.outbox.put(f"{ROOT}/{self.station_id}/events", e.wire())  # as the kiosk's EventSink does
        self.publisher.wake()
        return e.event_id


@dataclass
class Site:
    broker: Broker
    kiosks: dict[str, Kiosk]
    console_url: str
    console_store: Path
    console_actions: ReviewStore
    console_accounts: Path


def make_kiosk(root: Path, broker: Broker, st: str) -> Kiosk:
    d = root / st
    outbox = Outbox(d / "outbox.sqlite3")
    pub = MqttPublisher(outbox, host="127.0.0.1", port=broker.port, client_id=f"kiosk-{st}",
                        topic_prefix=f"{ROOT}/{st}", reconnect_max_s=2)
    pub.start()
    accounts = Accounts(d / "staff.sqlite3", hasher=FAST)
    accounts.add(f"nurse.{st}", PASSWORD, "reviewer")
    events: list[dict[str, Any]] = []
    app = FastAPI()
    reviews = add_staff_routes(app, events_provider=lambda: list(events), frame_provider=lambda c: None,
                               cameras=lambda: [], reviews_path=d / "reviews.sqlite3", accounts=accounts,
                               station_id=st)
    server = ServerThread(app).start()
    acks = KioskAcks(ReviewStore(d / "reviews.sqlite3", origin=st), outbox, station_id=st, topic_prefix=f"{ROOT}/{st}",
                     accounts=accounts, waker=pub).start()
    return Kiosk(st, outbox, pub, acks, server, reviews, accounts, events)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto not installed: apt-get install -y mosquitto")
    root = tmp_path_factory.mktemp("acks")
    broker = Broker(root / "broker").start()
    kiosks = {st: make_kiosk(root, broker, st) for st in STATIONS}
    with console_service(root / "console", broker, CONSOLE_ID) as c:
        try:
            yield Site(broker, kiosks, c.url, c.store, ReviewStore(c.store, origin=CONSOLE_ID, table="actions"),
                       c.accounts)
        finally:
            for k in kiosks.values():
                k.acks.close()
                k.server.stop()
                k.publisher.close(timeout=2)
                k.outbox.close()
            broker.stop()


def console_events(site: Site, **params: str) -> list[dict[str, Any]]:
    c, _ = login(site.console_url, "dr.console")
    return c.get("/api/events", params=params).json()


def review_on(url: str, user: str, event_id: str) -> dict[str, Any]:
    c, _ = login(url, user)
    return next(e for e in c.get("/api/events").json() if e["event_id"] == event_id)


def stored(site: Site) -> set[str]:
    with ConsoleStore(site.console_store, readonly=True) as s:
        return s.event_ids()


def test_console_page_queues_every_station_and_acknowledgements_travel_both_ways(site: Site, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from tests.kiosk.web.chromium import wait

    ids = {st: k.emit() for st, k in site.kiosks.items()}
    wait_until(lambda: set(ids.values()) <= stored(site), WAIT_S, what="every station's event at the console")

    # the console's page: one queue across stations, the stations online, a filter by station
    browser_login(browser, site.console_url, "dr.console")
    rows = "#events li"
    wait(browser, WAIT_S, "three stations' events", lambda d: {
        e.get_attribute("data-station") for e in d.find_elements(By.CSS_SELECTOR, rows)} >= set(STATIONS))
    wait(browser, WAIT_S, "three stations online", lambda d: len([e for e in d.find_elements(
        By.CSS_SELECTOR, "#stations li .availability") if e.text.startswith("online")]) == 3)
    wait(browser, WAIT_S, "the station filter's choices", lambda d: len(d.find_elements(
        By.CSS_SELECTOR, "#filter-station option")) == 4)
    Select(browser.find_element(By.ID, "filter-station")).select_by_value("gate-2")
    wait(browser, WAIT_S, "only gate-2", lambda d: {e.get_attribute("data-station") for e in
                                                    d.find_elements(By.CSS_SELECTOR, rows)} == {"gate-2"})
    assert [e["station_id"] for e in console_events(site, station="gate-2")] == ["gate-2"]

    # console → kiosk: acknowledged on the console's page, shown by the kiosk's API and page, audited there
    ev = ids["gate-2"]
    sel = f'li[data-event-id="{ev}"]'
    browser.find_element(By.CSS_SELECTOR, sel).find_element(By.CSS_SELECTOR, "button.ack").click()
    wait(browser, WAIT_S, "the state on the console", lambda d: "acknowledged by dr.console on console-a" in
         d.find_element(By.CSS_SELECTOR, f"{sel} .state").text)
    k2 = site.kiosks["gate-2"]
    wait_until(lambda: (review_on(k2.server.url, "nurse.gate-2", ev)["review"] or {}).get("by") == "dr.console",
               WAIT_S, what="the console's acknowledgement on the kiosk")
    on_kiosk = review_on(k2.server.url, "nurse.gate-2", ev)["review"]
    assert on_kiosk["origin"] == CONSOLE_ID and on_kiosk["action"] == "acknowledged"
    audit = [r for r in k2.accounts.audit() if r.event_id == ev]
    assert [(r.user, r.action, r.detail) for r in audit] == [("dr.console", "acknowledged (remote)",
                                                              "origin console-a")]
    browser_login(browser, k2.server.url, "nurse.gate-2")
    wait(browser, WAIT_S, "the console's acknowledgement on the kiosk's page", lambda d: d.find_elements(
        By.CSS_SELECTOR, sel) and "acknowledged by dr.console on console-a" in d.find_element(
        By.CSS_SELECTOR, f"{sel} .state").text)

    # kiosk → console: reviewed on the kiosk's page, shown on the console; the same history on both
    browser.find_element(By.CSS_SELECTOR, sel).find_element(By.CSS_SELECTOR, "button.mark-reviewed").click()
    wait(browser, WAIT_S, "reviewed on the kiosk's page", lambda d: "reviewed by nurse.gate-2 on gate-2" in
         d.find_element(By.CSS_SELECTOR, f"{sel} .state").text)
    wait_until(lambda: (console_events(site, station="gate-2")[0]["review"] or {}).get("by") == "nurse.gate-2",
               WAIT_S, what="the kiosk's review on the console")
    browser_login(browser, site.console_url, "dr.console")
    wait(browser, WAIT_S, "the kiosk's review on the console's page", lambda d: d.find_elements(
        By.CSS_SELECTOR, sel) and "reviewed by nurse.gate-2 on gate-2" in d.find_element(
        By.CSS_SELECTOR, f"{sel} .state").text)
    console_history = console_events(site, station="gate-2")[0]["history"]
    wait_until(lambda: review_on(k2.server.url, "nurse.gate-2", ev)["history"] == console_history, WAIT_S,
               what="one history on kiosk and console")
    assert [(a["action"], a["origin"]) for a in console_history] == [("acknowledged", CONSOLE_ID),
                                                                      ("reviewed", "gate-2")]
    # the state filter: gate-2's event is reviewed now, the others still open
    assert {e["event_id"] for e in console_events(site, state="reviewed")} == {ev}
    assert {e["event_id"] for e in console_events(site, state="open")} >= {ids["gate-1"], ids["gate-3"]}
    rows = [r for r in Accounts(site.console_accounts).audit() if r.event_id == ev]  # the console's audit
    assert ("nurse.gate-2", "reviewed (remote)", "origin gate-2") in [(r.user, r.action, r.detail) for r in rows]
    assert ("dr.console", "acknowledged", "") in [(r.user, r.action, r.detail) for r in rows]


def _publish(broker: Broker, messages: list[tuple[str, bytes, bool]]) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="acks-test-injector", protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        for topic, payload, retain in messages:
            c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(30)
    finally:
        c.disconnect()
        c.loop_stop()


def test_the_same_action_delivered_twice_is_recorded_once(site: Site) -> None:
    k = site.kiosks["gate-1"]
    ev = k.emit()
    wait_until(lambda: ev in stored(site), WAIT_S, what="the event at the console")
    a = Action(action_id=new_action_id(), event_id=ev, station_id="gate-1", action="acknowledged", by="nurse.gate-1",
               at=utc_iso(), origin="gate-1")
    topic = f"{ROOT}/gate-1/actions"
    _publish(site.broker, [(topic, a.wire(), False), (topic, a.wire(), False)])  # a re-send after a reconnect
    h = ActionHistory(event_id=ev, station_id="gate-1", actions=[a]).wire()
    wait_until(lambda: [x.action_id for x in site.console_actions.history(ev)] == [a.action_id], WAIT_S,
               what="the action at the console")
    # the console publishes the history; the kiosk gets it (and a second copy) and records the action once
    _publish(site.broker, [(f"{ROOT}/gate-1/acks/{ev}", h, True)])
    wait_until(lambda: k.reviews.history(ev) == [a], WAIT_S, what="the action on the kiosk")
    assert k.acks.receive(f"{ROOT}/gate-1/acks/{ev}", h) == 0  # once more by hand: nothing new
    assert k.reviews.history(ev) == [a] and site.console_actions.history(ev) == [a]
    # the console's own retained history of it: exactly that action
    got: list[bytes] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="acks-test-reader", protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, m: got.append(bytes(m.payload))
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{ROOT}/gate-1/acks/{ev}", qos=1)
    sub.connect("127.0.0.1", site.broker.port)
    sub.loop_start()
    try:
        wait_until(lambda: got, WAIT_S, what="the retained history")
    finally:
        sub.disconnect()
        sub.loop_stop()
    assert [x.action_id for x in ActionHistory.model_validate_json(got[-1]).actions] == [a.action_id]


def test_two_people_at_once_are_settled_by_the_rule_everywhere(site: Site) -> None:
    k = site.kiosks["gate-3"]
    ev = k.emit()
    wait_until(lambda: ev in stored(site), WAIT_S, what="the event at the console")
    # a review on the kiosk and an acknowledgement on the console at the same moment, and the console's
    # acknowledgement is the later one: the rule keeps the event reviewed, whoever's message lands last
    done: list[dict[str, Any]] = []
    barrier = threading.Barrier(2)

    def act(url: str, user: str, action: str) -> None:
        c, csrf = login(url, user)
        barrier.wait(30)
        r = c.post(f"/api/events/{ev}/review", json={"action": action, "note": ""}, headers={CSRF_HEADER: csrf})
        assert r.status_code == 200, r.text
        done.append(r.json())

    threads = [threading.Thread(target=act, args=(k.server.url, "nurse.gate-3", "reviewed")),
               threading.Thread(target=act, args=(site.console_url, "dr.console", "acknowledged"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(done) == 2
    want = sorted(a["action_id"] for a in done)
    wait_until(lambda: sorted(a.action_id for a in site.console_actions.history(ev)) == want and
               sorted(a.action_id for a in k.reviews.history(ev)) == want, WAIT_S,
               what="both actions on the kiosk and the console")
    assert site.console_actions.history(ev) == k.reviews.history(ev)  # one history, one order
    for history in (site.console_actions.history(ev), k.reviews.history(ev)):
        assert settled(history).action == "reviewed"  # type: ignore[union-attr]
    assert review_on(k.server.url, "nurse.gate-3", ev)["review"]["action"] == "reviewed"
    assert console_events(site, station="gate-3")[0]["review"]["action"] == "reviewed"
    # and a second review from the console, later: it wins the state (two reviews: the later one)
    later = post_review(site.console_url, "dr.console", ev, "reviewed")
    wait_until(lambda: review_on(k.server.url, "nurse.gate-3", ev)["review"]["action_id"] == later["action_id"],
               WAIT_S, what="the later review as the kiosk's state")


def test_a_kiosk_away_gets_the_histories_when_it_reconnects(site: Site, tmp_path: Path) -> None:
    k = site.kiosks["gate-1"]
    ev = k.emit()
    wait_until(lambda: ev in stored(site), WAIT_S, what="the event at the console")
    k.acks.close()
    k.publisher.close()  # the kiosk is away (a clean session: the broker keeps nothing for it)
    acted = post_review(site.console_url, "dr.console", ev, "reviewed")

    def retained() -> bool:
        got: list[bytes] = []
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="acks-test-peek", protocol=mqtt.MQTTv5)
        c.on_message = lambda cl, u, m: got.append(bytes(m.payload))
        c.connect("127.0.0.1", site.broker.port)
        c.subscribe(f"{ROOT}/gate-1/acks/{ev}", qos=1)
        c.loop_start()
        try:
            wait_until(lambda: got, 10, what="a retained message")
        except AssertionError:
            return False
        finally:
            c.disconnect()
            c.loop_stop()
        return acted["action_id"] in json.loads(got[-1])["actions"].__str__()

    wait_until(retained, WAIT_S, what="the console's retained history")
    assert k.reviews.history(ev) == []
    k.publisher = MqttPublisher(k.outbox, host="127.0.0.1", port=site.broker.port, client_id="kiosk-gate-1",
                                topic_prefix=f"{ROOT}/gate-1", reconnect_max_s=2)
    k.publisher.start()
    k.acks = KioskAcks(ReviewStore(k.reviews.path, origin="gate-1"), k.outbox, station_id="gate-1",
                       topic_prefix=f"{ROOT}/gate-1", accounts=k.accounts, waker=k.publisher).start()
    wait_until(lambda: [a.action_id for a in k.reviews.history(ev)] == [acted["action_id"]], WAIT_S,
               what="the history after the reconnect")


def test_retained_histories_are_cleared_once_after_the_retention_horizon(tmp_path: Path) -> None:
    """An event nobody acted on for acks.retain_days gets an empty retained message (the broker forgets the
    history) once; a recent one keeps its history."""
    import datetime as dt

    from mpox_aism.console.acks import ConsoleActions

    store = ReviewStore(tmp_path / "console.sqlite3", origin=CONSOLE_ID, table="actions")
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    now = dt.datetime.now(dt.UTC)

    def acted(event_id: str, days_ago: float) -> Action:
        return Action(action_id=new_action_id(), event_id=event_id, station_id="gate-1", action="reviewed",
                      by="dr.console", at=utc_iso(now - dt.timedelta(days=days_ago)), origin=CONSOLE_ID)

    store.merge([acted("old-event", 40), acted("new-event", 2)], sent=True)
    relay = ConsoleActions(store, outbox, root=ROOT, retain_days=30)
    assert relay.expire() == 1
    (cleared,) = outbox.pending()
    assert (cleared.topic, cleared.payload, cleared.retain) == (f"{ROOT}/gate-1/acks/old-event", b"", True)
    assert relay.expire() == 0  # cleared once, not every hour
    outbox.close()


def test_two_consoles_acting_at_once_end_with_one_history_everywhere(tmp_path: Path) -> None:
    """Two consoles act on one event at once: each publishes the retained history it holds, the broker keeps
    the last one, and a console that sees a history lacking its own action publishes the union — so both
    consoles and the kiosk end with both actions, in the same order, and the retained history holds both."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto not installed: apt-get install -y mosquitto")
    broker = Broker(tmp_path / "broker").start()
    kiosk = make_kiosk(tmp_path, broker, "gate-9")
    try:
        with console_service(tmp_path / "a", broker, "console-a") as a, \
                console_service(tmp_path / "b", broker, "console-b") as b:
            stores = {c.url: ReviewStore(c.store, origin=cid, table="actions") for c, cid in
                      ((a, "console-a"), (b, "console-b"))}
            ev = kiosk.emit()

            def at_both() -> bool:
                return all(ev in ConsoleStore(c.store, readonly=True).event_ids() for c in (a, b))

            wait_until(at_both, WAIT_S, what="the event at both consoles")
            acked = post_review(a.url, "dr.console", ev, "acknowledged")
            reviewed = post_review(b.url, "dr.console", ev, "reviewed")
            want = sorted([acked["action_id"], reviewed["action_id"]])

            def ids(store: ReviewStore) -> list[str]:
                return sorted(x.action_id for x in store.history(ev))

            wait_until(lambda: all(ids(s) == want for s in [*stores.values(), kiosk.reviews]), WAIT_S,
                       what="both actions at both consoles and the kiosk")
            histories = [s.history(ev) for s in [*stores.values(), kiosk.reviews]]
            assert histories[0] == histories[1] == histories[2]  # one history, one order, everywhere
            assert settled(histories[0]).action == "reviewed"  # type: ignore[union-attr]

            def retained_ids() -> list[str]:
                got: list[bytes] = []
                c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="two-consoles-peek", protocol=mqtt.MQTTv5)
                c.on_message = lambda cl, u, m: got.append(bytes(m.payload))
                c.connect("127.0.0.1", broker.port)
                c.subscribe(f"{ROOT}/gate-9/acks/{ev}", qos=1)
                c.loop_start()
                try:
                    wait_until(lambda: got, 10, what="the retained history")
                finally:
                    c.disconnect()
                    c.loop_stop()
                return sorted(x.action_id for x in ActionHistory.model_validate_json(got[-1]).actions)

            wait_until(lambda: retained_ids() == want, WAIT_S, what="both actions in the retained history")
    finally:
        kiosk.acks.close()
        kiosk.server.stop()
        kiosk.publisher.close(timeout=2)
        kiosk.outbox.close()
        broker.stop()
