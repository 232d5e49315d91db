"""Persistent outbox: every alert is committed to SQLite before anyone tries to publish it.

The MQTT publisher drains this queue in id order and deletes a row only after the broker's PUBACK,
so an alert survives a broker outage, a process kill and a power cut. The queue is bounded (count
and age) because a kiosk disk is finite; what the bound drops is counted in a persistent `dropped`
counter so a loss is never silent.

Durability choice: WAL with ``synchronous=FULL``. In WAL mode ``NORMAL`` already survives a process
crash (SIGKILL), but a power cut can roll back the last commits; ``FULL`` fsyncs the WAL on every
commit, so ``put()`` returning means the alert is on the disk. At alert rates (a few per minute) the
cost, one fsync per put/ack, is negligible.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids never reused, so order is put order
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL DEFAULT 1,
    retain INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_created ON outbox(created_at);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters(name, value) VALUES ('dropped', 0);
"""


@dataclass(frozen=True)
class Message:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created_at: float
    attempts: int


class Outbox:
    """A bounded, thread-safe, crash-safe FIFO of MQTT messages in one SQLite file.

    One connection guarded by a lock: SQLite serialises writers anyway, and a single connection
    keeps the WAL/synchronous settings in one place. ``created_at`` is wall-clock time (it must mean
    something after a restart); ``clock`` is injectable for tests.
    """

    def __init__(self, path: str | Path, *, max_messages: int = 10_000, max_age_s: float = 7 * 24 * 3600,
                 clock: Callable[[], float] = time.time) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        if max_age_s <= 0:
            raise ValueError(f"max_age_s must be > 0, got {max_age_s}")
        self.path = Path(path)
        self.max_messages = max_messages
        self.max_age_s = float(max_age_s)
        self._clock = clock
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # alerts name flagged travellers: create the file owner-only (SQLite gives -wal/-shm the same mode)
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a commit happens exactly where we say
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        with self._lock:
            self._db.executescript(_SCHEMA)

    # -- writing ------------------------------------------------------------------------------
    def put(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> int:
        """Append one message; returns its id only after the commit is on disk."""
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos}")
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        with self._tx() as db:
            cur = db.execute("INSERT INTO outbox(topic, payload, qos, retain, created_at) VALUES (?, ?, ?, ?, ?)",
                             (topic, data, qos, int(retain), self._clock()))
            msg_id = cur.lastrowid
            dropped = self._enforce_locked()
        if dropped:
            log.warning("outbox bound reached: dropped %d oldest message(s) (max_messages=%d, max_age_s=%.0f)",
                        dropped, self.max_messages, self.max_age_s)
        assert msg_id is not None
        return msg_id

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock: committed as a whole or rolled back."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite has already rolled back after some errors (SQLITE_FULL, IOERR): a second ROLLBACK
                # would raise "no transaction is active" and hide the real error (the disk-full fault
                # test found this)
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def ack(self, msg_id: int) -> None:
        """Delete a message the broker acknowledged (a no-op if it is already gone)."""
        self.ack_many([msg_id])

    def ack_many(self, ids: Iterable[int]) -> None:
        """Delete several acknowledged messages in one transaction (one fsync)."""
        rows = [(int(i),) for i in ids]
        if not rows:
            return
        with self._tx() as db:
            db.executemany("DELETE FROM outbox WHERE id = ?", rows)

    def discard(self, msg_id: int) -> bool:
        """Delete a message that can never be sent and count it as dropped; False if already gone."""
        with self._tx() as db:
            n = db.execute("DELETE FROM outbox WHERE id = ?", (int(msg_id),)).rowcount
            if n:
                db.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped'", (n,))
        return n > 0

    def note_attempts(self, ids: Iterable[int]) -> None:
        """Count a send attempt for each id (diagnostics: a message that never gets acked shows here)."""
        rows = [(int(i),) for i in ids]
        if not rows:
            return
        with self._tx() as db:
            db.executemany("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", rows)

    def expire(self) -> int:
        """Apply the bound now (the publisher calls this periodically, so age applies without puts)."""
        with self._tx():
            dropped = self._enforce_locked()
        if dropped:
            log.warning("outbox bound reached: dropped %d oldest message(s) (max_messages=%d, max_age_s=%.0f)",
                        dropped, self.max_messages, self.max_age_s)
        return dropped

    def _enforce_locked(self) -> int:
        """Drop expired then surplus messages, oldest first, inside the caller's transaction."""
        cutoff = self._clock() - self.max_age_s
        n_old = self._db.execute("DELETE FROM outbox WHERE created_at < ?", (cutoff,)).rowcount
        (depth,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        n_over = 0
        if depth > self.max_messages:
            n_over = self._db.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)",
                (depth - self.max_messages,)).rowcount
        dropped = max(n_old, 0) + max(n_over, 0)
        if dropped:
            self._db.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped'", (dropped,))
        return dropped

    # -- reading ------------------------------------------------------------------------------
    def pending(self, limit: int = 100, *, after_id: int = 0) -> list[Message]:
        """Up to ``limit`` messages with id > ``after_id``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain, created_at, attempts FROM outbox "
                "WHERE id > ? ORDER BY id LIMIT ?", (after_id, int(limit))).fetchall()
        return [Message(r[0], r[1], bytes(r[2]), r[3], bool(r[4]), r[5], r[6]) for r in rows]

    def depth(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def stats(self) -> dict[str, float | int | None]:
        """{depth, dropped (all-time, persistent), oldest_age_s (None when empty)}."""
        with self._lock:
            depth, oldest = self._db.execute("SELECT COUNT(*), MIN(created_at) FROM outbox").fetchone()
            (dropped,) = self._db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        age = None if oldest is None else max(0.0, self._clock() - oldest)
        return {"depth": int(depth), "dropped": int(dropped), "oldest_age_s": age}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
