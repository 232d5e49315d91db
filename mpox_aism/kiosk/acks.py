"""The kiosk's half of "acknowledgements travel both ways" (issue 29): consoles' actions in, its page's out.

Topics (``<prefix>`` = ``mpox-aism/<station_id>``; the ACL lets the kiosk write its own subtree and read
only ``<prefix>/acks/#``):

- **Out, ``<prefix>/actions``** (QoS 1, not retained): one :class:`~mpox_aism.kiosk.actions.Action` per
  message, each action a person takes on this kiosk's page. It goes through the kiosk's persistent
  outbox, like an alert, so a broker outage or a restart loses none: the page records it in the review
  store with ``sent_at`` NULL, the relay thread here puts it in the outbox (committed) and only then
  marks it sent — a crash in between sends it twice, which ``action_id`` makes harmless. The consoles
  read it on their persistent sessions.
- **In, ``<prefix>/acks/<event_id>``** (QoS 1, **retained**, written by consoles only): the event's whole
  history (:class:`~mpox_aism.kiosk.actions.ActionHistory`). Retained, so this kiosk — a clean session,
  like its publisher — gets every event's history again at each (re)connect, however long it was away;
  whole histories, so the broker's last-write-wins on a retained topic cannot drop an action (a console
  that sees a history lacking one of its actions publishes the union again). Merged by ``action_id``:
  delivered twice, recorded once. An action another place made is written to this kiosk's audit trail
  as such (``acknowledged (remote)``, origin named). An empty retained message is a console clearing the
  topic after its retention horizon: nothing to merge.

The histories come in on the alert publisher's own connection (``MqttPublisher.subscribe``): the site
broker allows one connection per account, and a kiosk has one account. paho acknowledges a message when
its handler returns, and the merge commits inside it: acknowledged after commit.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from mpox_aism.kiosk.accounts import Accounts
from mpox_aism.kiosk.actions import ActionHistory, ReviewStore, record_remote
from mpox_aism.kiosk.config import KioskConfig
from mpox_aism.kiosk.host import state_dir
from mpox_aism.kiosk.mqtt import MqttPublisher
from mpox_aism.kiosk.outbox import Outbox

log = logging.getLogger(__name__)
ACTIONS, ACKS = "actions", "acks"
RELAY_EVERY_S = 0.5  # a page's action reaches the outbox this late at most


def parse_history(station_id: str, event_id: str, payload: bytes) -> ActionHistory | None:
    """A retained history for this station's ``event_id``; None for a cleared topic. Raises ValueError if it is
    not one (bad JSON, another station's or another event's actions)."""
    if not payload:
        return None
    try:
        h = ActionHistory.model_validate_json(payload)
    except ValidationError as e:
        raise ValueError(f"not an action history: {e.errors()[0]['msg']}") from None
    if h.event_id != event_id or any(a.event_id != event_id for a in h.actions):
        raise ValueError(f"history of another event (topic says {event_id!r})")
    if h.station_id != station_id or any(a.station_id != station_id for a in h.actions):
        raise ValueError(f"history of another station (this is {station_id!r})")
    return h


class KioskAcks:
    """Relay thread (page → outbox) and subscriber (retained histories → review store). Never raises for the broker."""

    def __init__(self, store: ReviewStore, outbox: Outbox, *, station_id: str, topic_prefix: str,
                 accounts: Accounts | None = None, waker: MqttPublisher | None = None) -> None:
        """``waker``: the kiosk's publisher, woken when an action is in the outbox; its connection also carries
        the histories in. None (no broker configured): the relay only, the actions wait in the outbox."""
        self.store, self.outbox, self.accounts, self.waker = store, outbox, accounts, waker
        self.station_id, self.prefix = station_id, topic_prefix.strip("/")
        self.merged = 0  # remote actions recorded (a second copy of one is not counted)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._relay_loop, name="acks-relay", daemon=True)
    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> KioskAcks:
        """The relay; and the histories, on the publisher's own connection (one per kiosk account)."""
        self._thread.start()
        if self.waker is not None:
            self.waker.subscribe(f"{self.prefix}/{ACKS}/+", self.on_history)  # retained: all again at each connect
        return self

    def wake(self) -> None:
        """A page recorded an action: hand it to the outbox now."""
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)
        self.relay()  # what the page recorded last

    # -- out: the page's actions -------------------------------------------------------------------
    def relay(self) -> int:
        """This kiosk's unsent actions → the outbox (committed), then marked sent; how many."""
        mine = [a for a in self.store.unsent() if a.origin == self.station_id]
        for a in mine:
            self.outbox.put(f"{self.prefix}/{ACTIONS}", a.wire(), qos=1, retain=False)
            self.store.mark_sent([a.action_id])
        if mine and self.waker is not None:
            self.waker.wake()
        return len(mine)

    def _relay_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.relay()
            except Exception as e:  # disk full: the rows stay unsent and are tried again
                log.error("could not hand the page's actions to the outbox: %s: %s", type(e).__name__, e)
            self._wake.wait(RELAY_EVERY_S)
            self._wake.clear()

    # -- in: the consoles' histories -----------------------------------------------------------------
    def on_history(self, topic: str, payload: bytes) -> None:
        """A retained history arrived (paho's thread): merged, never raising into it; a failed merge comes back
        with the retained message at the next connect."""
        try:
            self.receive(topic, payload)
        except Exception as e:
            log.error("acks: could not record %s: %s: %s", topic, type(e).__name__, e)

    def receive(self, topic: str, payload: bytes) -> int:
        """Merge one retained history; returns how many of its actions were new here."""
        event_id = topic.rsplit("/", 1)[-1]
        try:
            history = parse_history(self.station_id, event_id, payload)
        except ValueError as e:
            log.warning("acks: ignored %s: %s", topic, e)
            return 0
        if history is None:
            return 0
        new = self.store.merge(history.actions, sent=True)
        remote = [a for a in new if a.origin != self.station_id]
        if remote and self.accounts is not None:
            record_remote(self.accounts, remote)
        self.merged += len(new)
        if new:
            log.info("acks: %d new action(s) on event %s from %s", len(new), event_id,
                     ", ".join(sorted({a.origin for a in new})))
        return len(new)


class KioskHost(Protocol):
    """What :func:`start_acks` reads of the daemon."""

    config: KioskConfig
    outbox: Outbox | None
    publisher: MqttPublisher | None

    @property
    def topic_prefix(self) -> str: ...


def start_acks(host: KioskHost, *, directory: Path | None = None) -> KioskAcks | None:
    """The daemon's hook: the relay and, with a broker configured, the subscriber. None (logged) on a store error."""
    c, d = host.config, directory or state_dir()
    if host.outbox is None:
        return None
    try:
        store = ReviewStore(d / "reviews.sqlite3", origin=c.station_id)
        accounts = Accounts(d / "staff.sqlite3", words=[c.station_id])
    except Exception as e:  # the alerts matter more than the acknowledgements
        log.error("acknowledgements not relayed: %s: %s", type(e).__name__, e)
        return None
    return KioskAcks(store, host.outbox, station_id=c.station_id, topic_prefix=host.topic_prefix, accounts=accounts,
                     waker=host.publisher).start()
