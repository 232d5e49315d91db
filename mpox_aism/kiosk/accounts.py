"""Staff accounts and the audit trail, in the kiosk's SQLite state: who may look, who may decide.

People are not machines: the diagnosis API keeps its bearer token, staff get accounts. Passwords are
hashed with argon2id (argon2-cffi's defaults: 64 MiB, 3 passes; a hash made with weaker parameters is
upgraded at the next good login). Roles nest — ``viewer`` (live view, events) < ``reviewer``
(acknowledge, mark reviewed, label crops, upload) < ``admin`` (also reads the audit trail) — and an account is
disabled, never deleted, so the audit trail keeps naming real accounts. The ``audit`` table is
append-only: SQLite triggers refuse UPDATE and DELETE, so a record of who reviewed what cannot be
rewritten through this store or by a careless query.
"""

from __future__ import annotations

import csv
import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

Role = Literal["viewer", "reviewer", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "reviewer", "admin")
MIN_PASSWORD = 12
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-@")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, user TEXT NOT NULL, action TEXT NOT NULL,
    event_id TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '');
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"""


class AccountError(ValueError):
    """A request the store refuses (unknown user, weak password, bad role…); the message says why."""


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    disabled: bool = False

    def may(self, role: Role) -> bool:
        """Does this account hold ``role`` (or a higher one)?"""
        return not self.disabled and ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True)
class AuditRow:
    id: int
    time: str
    user: str
    action: str
    event_id: str
    detail: str


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class Accounts:
    def __init__(self, path: str | Path, *, hasher: PasswordHasher | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.hasher = hasher or PasswordHasher()
        self._lock = threading.Lock()
        with self._db() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        # a connection per call: the web threadpool must not share one; the lock orders writers
        with self._lock, closing(sqlite3.connect(self.path, timeout=10)) as db, db:
            yield db

    # ----------------------------------------------------------------------------------- accounts
    @staticmethod
    def _check(name: str, password: str | None = None, role: str | None = None) -> None:
        if not name or not set(name) <= NAME_CHARS or len(name) > 64:
            raise AccountError(f"user name {name!r}: use 1-64 of a-z 0-9 . _ - @")
        if password is not None and len(password) < MIN_PASSWORD:
            raise AccountError(f"password too short: at least {MIN_PASSWORD} characters")
        if role is not None and role not in ROLES:
            raise AccountError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")

    def add(self, name: str, password: str, role: str) -> User:
        self._check(name, password, role)
        try:
            with self._db() as db:
                db.execute("INSERT INTO users(name, role, hash, created) VALUES (?, ?, ?, ?)",
                           (name, role, self.hasher.hash(password), _now()))
        except sqlite3.IntegrityError:
            raise AccountError(f"user {name!r} exists; use `mpox-aism users passwd` to change the password") from None
        self.record("cli", "user added", detail=f"{name} ({role})")
        return User(name, role)  # type: ignore[arg-type]

    def set_password(self, name: str, password: str) -> None:
        self._check(name, password)
        with self._db() as db:
            if db.execute("UPDATE users SET hash = ? WHERE name = ?", (self.hasher.hash(password), name)).rowcount == 0:
                raise AccountError(f"no user {name!r}")
        self.record("cli", "password changed", detail=name)

    def disable(self, name: str) -> None:
        with self._db() as db:
            if db.execute("UPDATE users SET disabled = 1 WHERE name = ?", (name,)).rowcount == 0:
                raise AccountError(f"no user {name!r}")
        self.record("cli", "user disabled", detail=name)

    def users(self) -> list[User]:
        with self._db() as db:
            rows = db.execute("SELECT name, role, disabled FROM users ORDER BY name").fetchall()
        return [User(n, r, bool(d)) for n, r, d in rows]

    def get(self, name: str) -> User | None:
        with self._db() as db:
            row = db.execute("SELECT role, disabled FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None else User(name, row[0], bool(row[1]))

    def verify(self, name: str, password: str) -> User | None:
        """The account when ``password`` is right and it is enabled; else None (no hint which was wrong)."""
        with self._db() as db:
            row = db.execute("SELECT role, hash, disabled FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            self.hasher.hash(password)  # the same work either way: timing does not tell which names exist
            return None
        role, stored, disabled = row
        try:
            self.hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if disabled:
            return None
        if self.hasher.check_needs_rehash(stored):
            with self._db() as db:
                db.execute("UPDATE users SET hash = ? WHERE name = ?", (self.hasher.hash(password), name))
        return User(name, role)

    # -------------------------------------------------------------------------------------- audit
    def record(self, user: str, action: str, *, event_id: str = "", detail: str = "") -> None:
        with self._db() as db:
            db.execute("INSERT INTO audit(time, user, action, event_id, detail) VALUES (?, ?, ?, ?, ?)",
                       (_now(), user, action, event_id, detail))

    def audit(self) -> list[AuditRow]:
        with self._db() as db:
            rows = db.execute("SELECT id, time, user, action, event_id, detail FROM audit ORDER BY id").fetchall()
        return [AuditRow(*r) for r in rows]

    def export_csv(self, out: IO[str]) -> int:
        rows = self.audit()
        w = csv.writer(out)
        w.writerow(["id", "time", "user", "action", "event_id", "detail"])
        for r in rows:
            w.writerow([r.id, r.time, r.user, r.action, r.event_id, r.detail])
        return len(rows)
