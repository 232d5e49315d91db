"""The console's half of "acknowledgements travel both ways" (issue 29); the kiosk's is ``mpox_aism.kiosk.acks``.

Topics, QoS and retain (the design, with why):

- ``<root>/<station>/actions`` (kiosk → consoles, QoS 1, not retained): one action from a kiosk's page, sent
  through the kiosk's outbox; every console gets it on its persistent session, even after an outage.
- ``<root>/<station>/acks/<event_id>`` (consoles → kiosk and other consoles, QoS 1, **retained**): the event's
  whole :class:`~mpox_aism.kiosk.actions.ActionHistory` — this console's actions, the kiosk's, other consoles'.
  Retained per event, so a kiosk (a clean session) or a new console gets every history at connect however
  long it was away; the whole history rather than one action, so the broker's last-write-wins on a retained
  topic cannot lose one: a console that receives a history lacking actions it holds marks those unsent and
  publishes the union again. Histories only grow, so this stops as soon as the consoles agree (at most one
  extra round per concurrent writer).
- Clearing: once an event's newest action is older than ``acks.retain_days``, the console publishes an empty
  retained message on its topic (the broker deletes a retained message so), once per such state; a kiosk
  away for longer than that sees no history for events that old (its page has long dropped them).

Nothing sent is lost while the broker is away: a console action is recorded in the store's ``actions`` table
with ``sent_at`` NULL (the table is the outbox of what still needs publishing); :meth:`ConsoleActions.relay`
puts each touched event's history in a persistent :class:`~mpox_aism.kiosk.outbox.Outbox` (committed) and
only then marks its actions sent, and the kiosk's :class:`~mpox_aism.kiosk.mqtt.MqttPublisher` drains that
outbox (QoS 1, deleted at PUBACK, re-sent after any reconnect), on its own connection (client id
``<client_id>-send``; its availability on ``<root>/console/<client_id>/availability``).

The order of the rule (``mpox_aism.kiosk.actions``) makes every place show the same history and state
whatever order the messages arrive in. Actions made elsewhere are written to this console's audit trail
as such (``acknowledged (remote)``, origin named).
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import threading
import time
from collections import defaultdict
from contextlib import closing

from mpox_aism.console.ingest import ActionIn, HistoryIn
from mpox_aism.console.store import Outcome
from mpox_aism.kiosk.accounts import Accounts
from mpox_aism.kiosk.actions import Action, ActionHistory, ReviewStore, record_remote, utc_iso
from mpox_aism.kiosk.mqtt import MqttPublisher
from mpox_aism.kiosk.outbox import Outbox

log = logging.getLogger(__name__)
RELAY_EVERY_S = 1.0
EXPIRE_EVERY_S = 3600.0


class ConsoleActions:
    """Merges incoming actions/histories into the store; relays unsent ones as retained histories."""

    def __init__(self, store: ReviewStore, outbox: Outbox, *, root: str, accounts: Accounts | None = None,
                 waker: MqttPublisher | None = None, retain_days: float = 30.0) -> None:
        self.store, self.outbox, self.root, self.accounts, self.waker = store, outbox, root, accounts, waker
        self.retain_s = retain_days * 86400.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        with closing(sqlite3.connect(store.path, timeout=10)) as con, con:
            con.execute("CREATE TABLE IF NOT EXISTS acks_cleared (event_id TEXT PRIMARY KEY, last_at TEXT NOT NULL)")

    # -- in ------------------------------------------------------------------------------------------
    def apply(self, parsed: ActionIn | HistoryIn) -> Outcome:
        """One message the subscriber received (committed before it is acknowledged)."""
        if isinstance(parsed, ActionIn):
            new = self.store.merge([parsed.action], sent=False)  # unsent: it goes into the retained history
            self._audit(new)
            if new:
                self.wake()
            return Outcome.STORED if new else Outcome.DUPLICATE
        if parsed.history is None:  # a console cleared the topic
            return Outcome.UPDATED
        h = parsed.history
        new = self.store.merge(h.actions, sent=True)
        self._audit(new)
        theirs = {a.action_id for a in h.actions}
        missing = [a.action_id for a in self.store.history(h.event_id) if a.action_id not in theirs]
        if missing:  # the retained history lacks actions held here (a concurrent write won): publish the union
            self.store.mark_sent(missing, sent=False)
            self.wake()
        return Outcome.STORED if new else Outcome.DUPLICATE

    def _audit(self, new: list[Action]) -> None:
        remote = [a for a in new if a.origin != self.store.origin]
        if remote and self.accounts is not None:
            record_remote(self.accounts, remote)

    # -- out -----------------------------------------------------------------------------------------
    def topic(self, station_id: str, event_id: str) -> str:
        return f"{self.root}/{station_id}/acks/{event_id}"

    def relay(self) -> int:
        """Each event with unsent actions → its whole history into the outbox, then those marked sent; how many."""
        by_event: dict[str, list[Action]] = defaultdict(list)
        for a in self.store.unsent():
            by_event[a.event_id].append(a)
        for event_id, unsent in by_event.items():
            actions = self.store.history(event_id)
            station = unsent[0].station_id
            h = ActionHistory(event_id=event_id, station_id=station, actions=actions)
            self.outbox.put(self.topic(station, event_id), h.wire(), qos=1, retain=True)
            self.store.mark_sent(a.action_id for a in unsent)
        if by_event and self.waker is not None:
            self.waker.wake()
        return len(by_event)

    def expire(self, now: float | None = None) -> int:
        """Clear the retained history of events nobody acted on for ``retain_days``; how many."""
        t = (time.time() if now is None else now) - self.retain_s
        cutoff = utc_iso(dt.datetime.fromtimestamp(t, dt.UTC))
        with closing(sqlite3.connect(self.store.path, timeout=10)) as con, con:
            done = dict(con.execute("SELECT event_id, last_at FROM acks_cleared").fetchall())
            n = 0
            for event_id, station, last_at in self.store.last_acted():
                if last_at < cutoff and done.get(event_id, "") < last_at:
                    self.outbox.put(self.topic(station, event_id), b"", qos=1, retain=True)
                    con.execute("INSERT INTO acks_cleared(event_id, last_at) VALUES (?, ?) "
                                "ON CONFLICT(event_id) DO UPDATE SET last_at = excluded.last_at", (event_id, last_at))
                    n += 1
        if n and self.waker is not None:
            self.waker.wake()
        return n

    # -- thread --------------------------------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    def start(self) -> ConsoleActions:
        self._thread = threading.Thread(target=self._loop, name="console-acks", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        self.relay()

    def _loop(self) -> None:
        next_expire = 0.0
        while not self._stop.is_set():
            try:
                self.relay()
                if time.monotonic() >= next_expire:
                    next_expire = time.monotonic() + EXPIRE_EVERY_S
                    self.expire()
            except Exception as e:  # disk full: the rows stay unsent and are tried again
                log.error("could not relay staff actions to the outbox: %s: %s", type(e).__name__, e)
            self._wake.wait(RELAY_EVERY_S)
            self._wake.clear()

