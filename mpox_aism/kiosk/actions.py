"""Staff actions on events — acknowledged / reviewed — and the one rule that settles them everywhere.

An :class:`Action` (``docs/schema/action-v1.json``) is one person's act on one event, made on a kiosk's
page or on a console's. It travels between them over MQTT (``mpox_aism.kiosk.acks``,
``mpox_aism.console.acks``) and is stored in an append-only log (:class:`ReviewStore`), the same class on
the kiosk (``reviews.sqlite3``, table ``reviews``) and on the console (its store, table ``actions``).

Why the rule is what it is (issue 29: "two people acting at once is settled by a stated rule, not by luck"):

- ``action_id`` (a uuid4 made where the person clicked) is the identity: an action delivered twice, or
  arriving by two paths (its origin's message and a console's retained history), is recorded once.
- An event's **history** is the set of its actions, ordered by ``(at, action_id)``: every place holding
  the same set shows the same list, whatever order the messages arrived in. Sets only grow, so merging
  two histories is their union and no delivery order can lose an action.
- Its **state** is the greatest action under ``(rank, at, action_id)`` with ``reviewed`` ranked above
  ``acknowledged``: the latest action wins, except that a ``reviewed`` is never undone by a later
  ``acknowledged`` (someone acknowledging an alert a colleague already reviewed, from a page that had
  not refreshed yet, must not send it back to "needs review"). Two reviews at once: the later ``at``
  wins the state (``action_id`` breaks an exact tie); both stay in the history.
- ``at`` is the acting machine's clock, normalised to UTC microseconds (so the ISO strings sort as
  times); a skewed clock can only reorder actions within its skew, never lose one.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mpox_aism.kiosk.accounts import Accounts

SCHEMA = "mpox-aism/action@1"
HISTORY_SCHEMA = "mpox-aism/action-history@1"
ActionKind = Literal["acknowledged", "reviewed"]
RANK: dict[str, int] = {"acknowledged": 0, "reviewed": 1}
UUID = r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$"
NAME = r"^[A-Za-z0-9_.-]{1,64}$"  # a station id or console id: one MQTT topic level, no wildcards
EVENT_ID = r"^[^/+#\x00]{1,200}$"  # one topic level too (<root>/<station>/acks/<event_id>)


def utc_iso(t: dt.datetime | None = None) -> str:
    """ISO 8601 UTC with microseconds, the one form ``at`` takes (so the strings sort as times, and two clicks
    in a row on one machine never tie)."""
    return (t or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat(timespec="microseconds")


class Action(BaseModel):
    """One staff action on one event, as stored and as sent (``<root>/<station>/actions``, and inside histories)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["mpox-aism/action@1"] = Field(SCHEMA, alias="schema", description="Payload version.")
    action_id: str = Field(pattern=UUID, description="uuid made where the person acted: the de-duplication key.")
    event_id: str = Field(pattern=EVENT_ID, description="The event acted on.")
    station_id: str = Field(pattern=NAME, description="The kiosk whose event it is.")
    action: ActionKind
    by: str = Field(min_length=1, max_length=100, description="The staff account that acted.")
    at: str = Field(description="When, ISO 8601 UTC (normalised to microseconds, +00:00): the acting machine's "
                    "clock.")
    origin: str = Field(pattern=NAME, description="Where it was done: a station id (the kiosk's page) or a "
                        "console's client id.")
    note: str = Field("", max_length=2000)

    @field_validator("at")
    @classmethod
    def _utc(cls, v: str) -> str:
        t = dt.datetime.fromisoformat(v)
        if t.tzinfo is None:
            raise ValueError("at needs a time zone (UTC)")
        return utc_iso(t)

    @property
    def order(self) -> tuple[str, str]:
        return (self.at, self.action_id)

    def wire(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class ActionHistory(BaseModel):
    """Every action on one event: the retained message on ``<root>/<station>/acks/<event_id>``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["mpox-aism/action-history@1"] = Field(HISTORY_SCHEMA, alias="schema")
    event_id: str = Field(pattern=EVENT_ID)
    station_id: str = Field(pattern=NAME)
    actions: list[Action] = Field(min_length=1, description="Ordered by (at, action_id).")

    def wire(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


def ordered(actions: Iterable[Action]) -> list[Action]:
    """The history: each action once (by ``action_id``), ordered by ``(at, action_id)``."""
    return sorted({a.action_id: a for a in actions}.values(), key=lambda a: a.order)


def settled(actions: Iterable[Action]) -> Action | None:
    """The event's state under the rule (module docstring); None when nobody acted."""
    return max(actions, key=lambda a: (RANK[a.action], a.at, a.action_id), default=None)


def new_action_id() -> str:
    return str(uuid.uuid4())


class ReviewStore:
    """Append-only action log in SQLite, idempotent by ``action_id``; ``sent_at`` NULL: not yet handed to MQTT.

    One class for the kiosk (``table="reviews"``, its own file) and the console (``table="actions"`` in its
    store). A connection per call: the endpoints run in the threadpool and a sqlite3 connection must not be
    shared between threads; opening one on a local file costs far less than the page's poll interval.
    ``origin``: this machine's name in the actions it records (the station id, or the console's client id).
    """

    def __init__(self, path: Path, *, origin: str, table: str = "reviews") -> None:
        if table not in ("reviews", "actions"):
            raise ValueError(f"unknown action table {table!r}")
        self.path, self.origin, self.table = Path(path), origin, table
        self.path.parent.mkdir(parents=True, exist_ok=True)
        t = table
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")  # readers (the page's polls) never block a writer
            con.execute(f"""CREATE TABLE IF NOT EXISTS {t} (
                               id INTEGER PRIMARY KEY AUTOINCREMENT,
                               event_id TEXT NOT NULL, action TEXT NOT NULL, by TEXT NOT NULL,
                               note TEXT NOT NULL, time TEXT NOT NULL)""")
            cols = {r[1] for r in con.execute(f"PRAGMA table_info({t})")}
            # a kiosk's reviews.sqlite3 from before actions travelled: its rows become this kiosk's actions
            for col, decl in (("action_id", "TEXT"), ("station_id", "TEXT NOT NULL DEFAULT ''"),
                              ("origin", "TEXT NOT NULL DEFAULT ''"), ("sent_at", "REAL")):
                if col not in cols:
                    con.execute(f"ALTER TABLE {t} ADD COLUMN {col} {decl}")
            for (rid,) in con.execute(f"SELECT id FROM {t} WHERE action_id IS NULL").fetchall():
                con.execute(f"UPDATE {t} SET action_id = ?, origin = ?, station_id = ? WHERE id = ?",
                            (new_action_id(), origin, origin, rid))
            con.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {t}_action_id ON {t} (action_id)")
            con.execute(f"CREATE INDEX IF NOT EXISTS {t}_event ON {t} (event_id, id)")
            con.execute(f"CREATE INDEX IF NOT EXISTS {t}_unsent ON {t} (sent_at) WHERE sent_at IS NULL")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=10)) as con, con:  # inner `con`: commit or roll back
            con.execute("PRAGMA synchronous=FULL")  # a recorded action survives a power cut
            yield con

    _COLS = "action_id, event_id, station_id, action, by, time, origin, note"

    @staticmethod
    def _row(r: tuple[str, ...]) -> Action:
        return Action(action_id=r[0], event_id=r[1], station_id=r[2], action=r[3], by=r[4], at=r[5],  # type: ignore[arg-type]
                      origin=r[6], note=r[7])

    def record(self, *, event_id: str, station_id: str, action: ActionKind, by: str, note: str = "") -> Action:
        """A person's action here (origin = this machine), to be sent (``sent_at`` NULL)."""
        a = Action(action_id=new_action_id(), event_id=event_id, station_id=station_id, action=action, by=by,
                   at=utc_iso(), origin=self.origin, note=note)
        self.merge([a], sent=False)
        return a

    def merge(self, actions: Iterable[Action], *, sent: bool) -> list[Action]:
        """Insert the actions not yet known (by ``action_id``); returns those that were new.

        ``sent``: they are already on the broker (they came from it), so nothing here sends them again.
        """
        new: list[Action] = []
        now = time.time() if sent else None
        with self._connect() as con:
            for a in actions:
                cur = con.execute(f"INSERT OR IGNORE INTO {self.table} ({self._COLS}, sent_at) "
                                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                  (a.action_id, a.event_id, a.station_id, a.action, a.by, a.at, a.origin, a.note,
                                   now))
                if cur.rowcount:
                    new.append(a)
        return new

    def history(self, event_id: str) -> list[Action]:
        with self._connect() as con:
            rows = con.execute(f"SELECT {self._COLS} FROM {self.table} WHERE event_id = ?", (event_id,)).fetchall()
        return ordered(self._row(r) for r in rows)

    def histories(self, event_ids: Iterable[str]) -> dict[str, list[Action]]:
        ids = list(dict.fromkeys(event_ids))
        out: dict[str, list[Action]] = {}
        with self._connect() as con:
            for i in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
                chunk = ids[i:i + 500]
                marks = ",".join("?" * len(chunk))
                for r in con.execute(f"SELECT {self._COLS} FROM {self.table} WHERE event_id IN ({marks})", chunk):
                    out.setdefault(r[1], []).append(self._row(r))
        return {k: ordered(v) for k, v in out.items()}

    def latest(self, event_ids: Iterable[str]) -> dict[str, Action]:
        """Each given event's state under the rule (only events somebody acted on)."""
        return {k: a for k, v in self.histories(event_ids).items() if (a := settled(v)) is not None}

    def unsent(self, limit: int = 500) -> list[Action]:
        with self._connect() as con:
            rows = con.execute(f"SELECT {self._COLS} FROM {self.table} WHERE sent_at IS NULL ORDER BY id LIMIT ?",
                               (limit,)).fetchall()
        return [self._row(r) for r in rows]

    def mark_sent(self, action_ids: Iterable[str], sent: bool = True) -> None:
        """Handed to the MQTT outbox (``sent=False``: send again, e.g. a history on the broker lacks them)."""
        ids = list(action_ids)
        with self._connect() as con:
            con.executemany(f"UPDATE {self.table} SET sent_at = ? WHERE action_id = ?",
                            [(time.time() if sent else None, i) for i in ids])

    def last_acted(self) -> list[tuple[str, str, str]]:
        """(event_id, station_id, newest ``at``) of every event with actions: what a retention horizon reads."""
        with self._connect() as con:
            return [(r[0], r[1], r[2]) for r in con.execute(
                f"SELECT event_id, MAX(station_id), MAX(time) FROM {self.table} GROUP BY event_id")]


def record_remote(accounts: Accounts, actions: Iterable[Action]) -> None:
    """Actions made on another page (a console's, the kiosk's): in this audit trail as such, origin named."""
    for a in actions:
        accounts.record(a.by, f"{a.action} (remote)", event_id=a.event_id,
                        detail=f"origin {a.origin}" + (f": {a.note}" if a.note else ""))
