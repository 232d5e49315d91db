"""The console's SQLite store: every event once (by ``event_id``), each station's state, the counters.

Idempotent by design, because MQTT QoS 1 is at-least-once: a kiosk re-sends after a reconnect and the
broker re-delivers what the console had not acknowledged, so the same event arrives more than once.
``INSERT OR IGNORE`` on the ``event_id`` primary key stores the first copy; a later one changes nothing
but the ``duplicates`` counter (and ``conflicts``, loudly, if its bytes differ: the kiosk's ids are
stable uuid5s of the decision, so a different payload under the same id is a bug or a forgery).

Durability: WAL with ``synchronous=FULL``, like the kiosk's outbox — the subscriber acknowledges a
message to the broker only after :meth:`ConsoleStore.apply` returns, so the commit must be on disk
when it returns (a power cut after the PUBACK must not lose the alert). One transaction per batch
(one fsync for up to ``receive_maximum`` messages). ``stored_at`` is taken just before COMMIT: the
commit time to within that commit's fsync.

Tables: ``events`` (the wire payload unchanged, plus the columns a page filters on), ``stations``
(availability, last status, last event), ``rejected`` (bounded: the newest ``MAX_REJECTED``, payload
kept so a rejected alert can be recovered by hand), ``counters``, ``meta`` (the console's own session:
last subscription, whether the broker still had its session), and ``actions`` — the staff's actions on
events, from this console's page, the kiosks' pages and other consoles: the kiosk's own action log
(``mpox_aism.kiosk.actions.ReviewStore``, table ``actions`` in this file, its schema defined there);
``sent_at`` NULL marks one not yet handed to the MQTT outbox (``mpox_aism.console.acks``).

Health (``mpox_aism.kiosk.health``; what the page's banners show). Tables ``health`` (one row per
``(station, check, subject)``: its current state, raised or cleared, and the message that set it),
``health_snapshots`` (the newest snapshot applied per station) and ``health_notices`` (``model_changed``).
The rules, and why:

- **Ordered by the message's own ``time``** (the kiosk's clock, the only one its messages share): a raise or
  a clear changes a row only when it is strictly newer than the row's ``as_of`` and than the station's last
  applied snapshot. QoS 1 re-sends and a queue drained after an outage arrive late and out of order; so a
  raise re-delivered after its clear, or arriving after a snapshot that no longer lists it, changes nothing
  (:attr:`Outcome.STALE`), and the same ``health_id`` again is a :attr:`Outcome.DUPLICATE`. Either way the
  check settles on the kiosk's latest word whatever the arrival order. (A kiosk clock stepped back hides its
  transitions until it passes the stored time again: the snapshot every 30 s shares that clock.)
- **The retained snapshot is the truth as of its time**: one newer than the station's last replaces the
  station's raised set — each check it lists is raised, each one it omits is cleared — except a row set by a
  message newer than the snapshot. It is how a console that starts late learns what is raised now, how a
  lost clear is corrected (the kiosk re-sends its snapshot every 30 s), and how a kiosk restart (whose new
  run never clears the old run's checks) removes them.
- **Notices** (``model_changed``) are kept once per ``health_id`` and shown for ``NOTICE_SHOWN_S`` (24 h)
  after the console received them, not after the kiosk's ``time``: a notice that waited in the broker while
  the console was down still gets its day; nobody has to acknowledge it (the kiosk's page and status name
  the model in use). Rows older than ``NOTICES_KEPT_S`` are deleted.

A server database instead (PostgreSQL), for several consoles or a larger fleet: the same tables;
``INSERT … ON CONFLICT (event_id) DO NOTHING RETURNING event_id`` replaces ``INSERT OR IGNORE`` (no row
back = duplicate); counters become ``UPDATE … SET value = value + 1`` in the same transaction (or are
derived from an ``deliveries`` log); station updates use ``ON CONFLICT (station_id) DO UPDATE`` with
``GREATEST`` for the last-event time so concurrent writers never move it back. Several consoles can
then share one database, each with its own MQTT client id (its own persistent session, so each gets
every message, or an MQTT v5 shared subscription ``$share/consoles/<root>/+/events`` so each message
goes to one of them); idempotence by ``event_id`` makes either safe. ``synchronous_commit = on`` is the
counterpart of ``synchronous=FULL``: the acknowledgement must still follow the commit.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from mpox_aism.console.ingest import (
    ActionIn,
    AvailabilityIn,
    EventIn,
    HealthActiveIn,
    HealthIn,
    HistoryIn,
    Parsed,
    Rejected,
    StatusIn,
)
from mpox_aism.kiosk.health import HealthEvent
from mpox_aism.kiosk.status import KioskStatus

MAX_REJECTED = 1000
NOTICE_SHOWN_S = 24 * 3600.0  # a model_changed notice is a banner this long after the console received it
NOTICES_KEPT_S = 30 * 24 * 3600.0  # then kept this long (beyond any broker queue: a re-delivery is still a duplicate)
COUNTERS = ("duplicates", "conflicts", "invalid")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,      -- arrival order at the console
    event_id TEXT NOT NULL UNIQUE,              -- the de-duplication key
    station_id TEXT NOT NULL,
    camera TEXT NOT NULL,
    decision TEXT NOT NULL,                     -- suspected | review | other_condition
    reason TEXT,
    label TEXT NOT NULL,
    probability REAL NOT NULL,
    model_version TEXT NOT NULL,
    event_time TEXT NOT NULL,                   -- the kiosk's "time" (ISO 8601, UTC)
    event_ts REAL,                              -- the same in epoch seconds (NULL: unparseable)
    received_at REAL NOT NULL,                  -- handed to the console by the MQTT client
    stored_at REAL NOT NULL,                    -- committed (see the module docstring)
    topic TEXT NOT NULL,
    payload BLOB NOT NULL                       -- the wire bytes, unchanged
);
CREATE INDEX IF NOT EXISTS events_station_time ON events(station_id, event_ts);
CREATE TABLE IF NOT EXISTS stations (
    station_id TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    online INTEGER,                             -- 1 online, 0 offline, NULL never said
    availability_at REAL,                       -- when the console learned it (a retained one: at subscribe)
    status_json TEXT,                           -- the last KioskStatus, as sent
    status_at REAL,
    last_event_ts REAL,                         -- the newest event's own time
    last_event_id TEXT,
    events INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    received_at REAL NOT NULL,
    error TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters(name, value) VALUES ('duplicates', 0), ('conflicts', 0), ('invalid', 0);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS health (             -- each check's current state (see the module docstring)
    station_id TEXT NOT NULL,
    check_name TEXT NOT NULL,                   -- camera_stalled | outbox_filling
    subject TEXT NOT NULL,                      -- the camera's name, 'outbox'
    state TEXT NOT NULL,                        -- raised | cleared
    health_id TEXT,                             -- the message that set it (NULL: cleared by a snapshot)
    as_of_ts REAL NOT NULL,                     -- that message's (or snapshot's) own time: nothing older wins
    payload TEXT,                               -- that HealthEvent (NULL: cleared by a snapshot)
    updated_at REAL NOT NULL,                   -- when the console received it
    PRIMARY KEY (station_id, check_name, subject)
);
CREATE TABLE IF NOT EXISTS health_snapshots (   -- the newest retained snapshot applied, per station
    station_id TEXT PRIMARY KEY,
    time_ts REAL NOT NULL,
    run_id TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS health_notices (     -- model_changed, once per health_id
    health_id TEXT PRIMARY KEY,
    station_id TEXT NOT NULL,
    time_ts REAL NOT NULL,
    received_at REAL NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS health_notices_received ON health_notices(received_at);
"""


class Outcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"  # a duplicate whose bytes differ from the stored copy
    UPDATED = "updated"  # availability, status, or a health snapshot applied
    STALE = "stale"  # a health message older than what is stored: nothing changes
    REJECTED = "rejected"
    ACTION = "action"  # a staff action or history: stored by mpox_aism.console.acks, not here


@dataclass(frozen=True)
class Incoming:
    """What the subscriber hands the store: the parsed message and when it arrived."""

    topic: str
    parsed: Parsed
    received_at: float


@dataclass(frozen=True)
class Counts:
    events: int
    duplicates: int
    conflicts: int
    invalid: int


@dataclass(frozen=True)
class StationState:
    station_id: str
    first_seen: float
    online: bool | None
    availability_at: float | None
    status: KioskStatus | None
    status_at: float | None
    last_event_ts: float | None
    last_event_id: str | None
    events: int
    raised: tuple[HealthEvent, ...] = ()  # the raise of every check raised now, oldest first
    notices: tuple[HealthEvent, ...] = ()  # model_changed received in the last NOTICE_SHOWN_S, newest first


@dataclass(frozen=True)
class RejectedRow:
    topic: str
    received_at: float
    error: str
    payload: bytes


class ConsoleStore:
    """One SQLite file; one connection guarded by a lock (SQLite serialises writers anyway).

    ``readonly=True`` opens it for another process (the fleet benchmark, a report) while the console
    writes: WAL lets readers and the writer proceed together.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        if readonly:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                       check_same_thread=False, timeout=10.0)
            self._db.execute("PRAGMA busy_timeout=10000")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # alerts name flagged travellers: owner-only, like the kiosk's outbox
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            cols = {r[1] for r in self._db.execute("PRAGMA table_info(actions)")}
            if "actor" in cols and not self._db.execute("SELECT 1 FROM actions LIMIT 1").fetchone():
                self._db.execute("DROP TABLE actions")  # the first console's placeholder, never written
            self._db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled back already (disk full)
                    self._db.execute("ROLLBACK")
                raise

    # -- writing ------------------------------------------------------------------------------
    def apply(self, batch: Sequence[Incoming]) -> list[Outcome]:
        """Store a batch in one transaction; returns only once it is committed (then ack them)."""
        outcomes: list[Outcome] = []
        with self._tx() as db:
            (before,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
            for item in batch:
                outcomes.append(self._apply_one(db, item))
            if Outcome.STORED in outcomes:  # this batch's stored_at: as close to the COMMIT as SQL can say
                db.execute("UPDATE events SET stored_at = ? WHERE seq > ?", (self._clock(), before))
        return outcomes

    def _apply_one(self, db: sqlite3.Connection, item: Incoming) -> Outcome:
        p, now = item.parsed, self._clock()
        if isinstance(p, Rejected):
            db.execute("INSERT INTO rejected(topic, received_at, error, payload) VALUES (?, ?, ?, ?)",
                       (p.topic, item.received_at, p.error, p.payload))
            db.execute("DELETE FROM rejected WHERE id <= (SELECT MAX(id) FROM rejected) - ?", (MAX_REJECTED,))
            self._count(db, "invalid")
            return Outcome.REJECTED
        if isinstance(p, ActionIn | HistoryIn):
            return Outcome.ACTION
        self._station(db, p.station_id, now)
        if isinstance(p, AvailabilityIn):
            db.execute("UPDATE stations SET online = ?, availability_at = ? WHERE station_id = ?",
                       (int(p.online), item.received_at, p.station_id))
            return Outcome.UPDATED
        if isinstance(p, StatusIn):
            db.execute("UPDATE stations SET status_json = ?, status_at = ? WHERE station_id = ?",
                       (p.payload.decode(), item.received_at, p.station_id))
            return Outcome.UPDATED
        if isinstance(p, HealthIn):
            return self._health(db, p, item.received_at)
        if isinstance(p, HealthActiveIn):
            return self._snapshot(db, p, item.received_at)
        return self._event(db, p, item, now)

    def _health(self, db: sqlite3.Connection, p: HealthIn, received_at: float) -> Outcome:
        """One transition, by the rules of the module docstring."""
        e = p.event
        if e.state == "notice":
            cur = db.execute("INSERT OR IGNORE INTO health_notices(health_id, station_id, time_ts, received_at, "
                             "payload) VALUES (?, ?, ?, ?, ?)",
                             (e.health_id, p.station_id, p.time_ts, received_at, e.wire().decode()))
            db.execute("DELETE FROM health_notices WHERE received_at < ?", (received_at - NOTICES_KEPT_S,))
            return Outcome.STORED if cur.rowcount else Outcome.DUPLICATE
        row = db.execute("SELECT health_id, as_of_ts FROM health WHERE station_id = ? AND check_name = ? AND "
                         "subject = ?", (p.station_id, e.check, e.subject)).fetchone()
        if row is not None and row[0] == e.health_id:
            return Outcome.DUPLICATE
        if p.time_ts <= max(row[1] if row else -math.inf, self._snapshot_ts(db, p.station_id)):
            return Outcome.STALE
        self._set_health(db, p.station_id, e, p.time_ts, received_at)
        return Outcome.STORED

    def _snapshot(self, db: sqlite3.Connection, p: HealthActiveIn, received_at: float) -> Outcome:
        """The station's raised set as of the snapshot's time, unless a newer message set a check since."""
        if p.time_ts <= self._snapshot_ts(db, p.station_id):
            return Outcome.STALE  # the same retained snapshot again (every subscribe), or an older one
        db.execute("INSERT INTO health_snapshots(station_id, time_ts, run_id, received_at) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT(station_id) DO UPDATE SET time_ts = excluded.time_ts, run_id = excluded.run_id, "
                   "received_at = excluded.received_at",
                   (p.station_id, p.time_ts, p.snapshot.run_id, received_at))
        raised = {(e.check, e.subject): e for e in p.snapshot.raised}
        stored = {(r[0], r[1]): (r[2], r[3]) for r in db.execute(
            "SELECT check_name, subject, state, as_of_ts FROM health WHERE station_id = ?", (p.station_id,))}
        for key in raised.keys() | stored.keys():
            state, as_of = stored.get(key, ("", -math.inf))
            if as_of >= p.time_ts:
                continue  # set by a message newer than the snapshot
            if key in raised:
                self._set_health(db, p.station_id, raised[key], p.time_ts, received_at)
            elif state == "raised":
                db.execute("UPDATE health SET state = 'cleared', health_id = NULL, payload = NULL, as_of_ts = ?, "
                           "updated_at = ? WHERE station_id = ? AND check_name = ? AND subject = ?",
                           (p.time_ts, received_at, p.station_id, *key))
        return Outcome.UPDATED

    @staticmethod
    def _snapshot_ts(db: sqlite3.Connection, station_id: str) -> float:
        row = db.execute("SELECT time_ts FROM health_snapshots WHERE station_id = ?", (station_id,)).fetchone()
        return -math.inf if row is None else float(row[0])

    @staticmethod
    def _set_health(db: sqlite3.Connection, station_id: str, e: HealthEvent, as_of: float,
                    received_at: float) -> None:
        db.execute("INSERT INTO health(station_id, check_name, subject, state, health_id, as_of_ts, payload, "
                   "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(station_id, check_name, subject) DO "
                   "UPDATE SET state = excluded.state, health_id = excluded.health_id, as_of_ts = excluded.as_of_ts, "
                   "payload = excluded.payload, updated_at = excluded.updated_at",
                   (station_id, e.check, e.subject, e.state, e.health_id, as_of, e.wire().decode(), received_at))

    def _event(self, db: sqlite3.Connection, p: EventIn, item: Incoming, now: float) -> Outcome:
        e = p.event
        cur = db.execute(
            "INSERT OR IGNORE INTO events(event_id, station_id, camera, decision, reason, label, probability, "
            "model_version, event_time, event_ts, received_at, stored_at, topic, payload) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (e.event_id, p.station_id, e.camera, e.decision, e.reason, e.label, e.probability, e.model_version,
             e.time, p.event_ts, item.received_at, now, item.topic, p.payload))
        if cur.rowcount == 0:
            (stored,) = db.execute("SELECT payload FROM events WHERE event_id = ?", (e.event_id,)).fetchone()
            self._count(db, "duplicates")
            if bytes(stored) != p.payload:
                self._count(db, "conflicts")
                return Outcome.CONFLICT
            return Outcome.DUPLICATE
        db.execute("UPDATE stations SET events = events + 1, "
                   "last_event_id = CASE WHEN last_event_ts IS NULL OR ? >= last_event_ts THEN ? "
                   "ELSE last_event_id END, "
                   "last_event_ts = MAX(COALESCE(last_event_ts, ?), ?) WHERE station_id = ?",
                   (p.event_ts or now, e.event_id, p.event_ts or now, p.event_ts or now, p.station_id))
        return Outcome.STORED

    @staticmethod
    def _station(db: sqlite3.Connection, station_id: str, now: float) -> None:
        db.execute("INSERT OR IGNORE INTO stations(station_id, first_seen) VALUES (?, ?)", (station_id, now))

    @staticmethod
    def _count(db: sqlite3.Connection, name: str, n: int = 1) -> None:
        db.execute("UPDATE counters SET value = value + ? WHERE name = ?", (n, name))

    def set_meta(self, **values: object) -> None:
        """The console's own state (JSON values), e.g. when it last subscribed."""
        with self._tx() as db:
            db.executemany("INSERT INTO meta(key, value) VALUES (?, ?) "
                           "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                           [(k, json.dumps(v)) for k, v in values.items()])

    # -- reading ------------------------------------------------------------------------------
    def counts(self) -> Counts:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM events").fetchone()
            c = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        return Counts(events=int(n), duplicates=int(c.get("duplicates", 0)), conflicts=int(c.get("conflicts", 0)),
                      invalid=int(c.get("invalid", 0)))

    def stations(self) -> list[StationState]:
        """Every station, with its raised checks and the notices still shown (``NOTICE_SHOWN_S``, this clock)."""
        raised: dict[str, list[HealthEvent]] = defaultdict(list)
        notices: dict[str, list[HealthEvent]] = defaultdict(list)
        with self._lock:
            rows = self._db.execute(
                "SELECT station_id, first_seen, online, availability_at, status_json, status_at, last_event_ts, "
                "last_event_id, events FROM stations ORDER BY station_id").fetchall()
            for station, payload in self._db.execute(
                    "SELECT station_id, payload FROM health WHERE state = 'raised' ORDER BY as_of_ts"):
                raised[station].append(HealthEvent.model_validate_json(payload))
            for station, payload in self._db.execute(
                    "SELECT station_id, payload FROM health_notices WHERE received_at >= ? "
                    "ORDER BY time_ts DESC", (self._clock() - NOTICE_SHOWN_S,)):
                notices[station].append(HealthEvent.model_validate_json(payload))
        return [StationState(station_id=r[0], first_seen=r[1], online=None if r[2] is None else bool(r[2]),
                             availability_at=r[3],
                             status=None if r[4] is None else KioskStatus.model_validate_json(r[4]),
                             status_at=r[5], last_event_ts=r[6], last_event_id=r[7], events=r[8],
                             raised=tuple(sorted(raised[r[0]], key=lambda e: e.since)),
                             notices=tuple(notices[r[0]])) for r in rows]

    def station(self, station_id: str) -> StationState | None:
        return next((s for s in self.stations() if s.station_id == station_id), None)

    def event_ids(self, station_id: str | None = None) -> set[str]:
        with self._lock:
            if station_id is None:
                rows = self._db.execute("SELECT event_id FROM events").fetchall()
            else:
                rows = self._db.execute("SELECT event_id FROM events WHERE station_id = ?", (station_id,)).fetchall()
        return {r[0] for r in rows}

    def event_payloads(self, limit: int = 1000) -> list[dict[str, object]]:
        """The newest events (by their own time) as the kiosks sent them, for the staff page."""
        with self._lock:
            rows = self._db.execute("SELECT payload FROM events ORDER BY COALESCE(event_ts, stored_at) DESC, seq DESC "
                                    "LIMIT ?", (limit,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def station_of(self, event_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT station_id FROM events WHERE event_id = ?", (event_id,)).fetchone()
        return None if row is None else str(row[0])

    def ingest_latencies_ms(self) -> list[float]:
        """Event creation (the kiosk's ``time``) → commit at the console, per stored event, in ms."""
        with self._lock:
            rows = self._db.execute("SELECT (stored_at - event_ts) * 1000 FROM events "
                                    "WHERE event_ts IS NOT NULL").fetchall()
        return [float(r[0]) for r in rows]

    def rejected(self) -> list[RejectedRow]:
        with self._lock:
            rows = self._db.execute("SELECT topic, received_at, error, payload FROM rejected ORDER BY id").fetchall()
        return [RejectedRow(r[0], r[1], r[2], bytes(r[3])) for r in rows]

    def meta(self, key: str) -> object | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ConsoleStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
