"""Staff accounts and the audit trail, in the kiosk's SQLite state: who may look, who may decide.

People are not machines: the diagnosis API keeps its bearer token, staff get accounts. Passwords are
hashed with argon2id (argon2-cffi's defaults: 64 MiB, 3 passes; a hash made with weaker parameters is
upgraded at the next good login), and a new one must be long (``MIN_PASSWORD``) and hard to guess: zxcvbn, a
maintained strength estimator, scores it against common passwords, names, keyboard walks and dates, and
against the words of this account and this kiosk, so "mpoxaism2024" is refused and the reason given.
Roles nest — ``viewer`` (live view, events) < ``reviewer``
(acknowledge, mark reviewed, label crops, upload) < ``admin`` (also reads the audit trail) — and an account is
disabled, never deleted, so the audit trail keeps naming real accounts. The ``audit`` table is
append-only: SQLite triggers refuse UPDATE and DELETE, so a record of who reviewed what cannot be
rewritten through this store or by a careless query.

Each account has a ``credential_epoch``, raised by a password change, ``disable`` and ``end_sessions``.
A web session remembers the epoch it was made under and ends at its next request when the row's differs:
that is how ``mpox-aism users passwd|disable`` — another process — ends the daemon's sessions at once.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import socket
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from zxcvbn import zxcvbn

Role = Literal["viewer", "reviewer", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "reviewer", "admin")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # the login form's limit too
# zxcvbn's scale: 3 is "moderate protection from an offline slow-hash attack" (< 10^10 guesses), 4 "strong". The
# hashes sit on a box at a checkpoint that can be carried off, so 4: with 12 characters, random ones or three
# unrelated words already reach it; what falls short is a pattern ("summer2024!!", "mpoxaism2024").
MIN_STRENGTH = 4
ZXCVBN_MAX = 72  # zxcvbn refuses longer input; a strong first 72 characters make a strong password
KIOSK_WORDS = ("mpox", "aism", "mpox-aism", "mpoxaism", "kiosk", "staff", "checkpoint", "border", "screening")
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-@")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL, credential_epoch INTEGER NOT NULL DEFAULT 0);
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
    epoch: int = 0  # the row's credential_epoch when read: a session made under an older one has ended

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


def password_problem(name: str, password: str, words: Iterable[str] = ()) -> str | None:
    """Why ``password`` is too weak for account ``name`` (zxcvbn's own words), or None when it will do.

    ``words``: more that a guesser would try first (the station id, the host name); the account name, its
    parts and the kiosk's words are always tried.
    """
    if len(password) < MIN_PASSWORD:
        return f"password too short: at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"password too long: at most {MAX_PASSWORD} characters"
    inputs = list(KIOSK_WORDS)
    for word in (name, *words):  # "dr.ng" and "gate-7" are tried whole, in parts and run together
        inputs += [word, re.sub(r"[._@-]+", "", word), *re.split(r"[._@-]+", word)]
    result = zxcvbn(password[:ZXCVBN_MAX], user_inputs=[w.lower() for w in inputs if w])
    if result["score"] >= MIN_STRENGTH:
        return None
    feedback = result["feedback"]
    why = " ".join(x for x in (feedback.get("warning") or "", *feedback.get("suggestions", [])) if x)
    return (f"password too easy to guess (strength {result['score']} of 4, at least {MIN_STRENGTH} needed): "
            + (why or "avoid names, dates, words of this kiosk and common passwords; add another uncommon word."))


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _inert(cell: str) -> str:
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


class Accounts:
    """The account store; ``words``: more words a guesser would try first (the station id), for the strength check."""

    def __init__(self, path: str | Path, *, hasher: PasswordHasher | None = None, words: Iterable[str] = ()) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.hasher = hasher or PasswordHasher()
        self.words = (socket.gethostname(), *words)
        self._lock = threading.Lock()
        with self._db() as db:
            db.executescript(SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(users)")}
            if "credential_epoch" not in columns:  # a store made before sessions could be ended from outside
                db.execute("ALTER TABLE users ADD COLUMN credential_epoch INTEGER NOT NULL DEFAULT 0")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        # a connection per call: the web threadpool must not share one; the lock orders writers
        with self._lock, closing(sqlite3.connect(self.path, timeout=10)) as db, db:
            yield db

    # ----------------------------------------------------------------------------------- accounts
    def _check(self, name: str, password: str | None = None, role: str | None = None) -> None:
        if not name or not set(name) <= NAME_CHARS or len(name) > 64:
            raise AccountError(f"user name {name!r}: use 1-64 of a-z 0-9 . _ - @")
        if role is not None and role not in ROLES:
            raise AccountError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
        if password is not None and (problem := password_problem(name, password, self.words)):
            raise AccountError(problem)

    def add(self, name: str, password: str, role: str, *, by: str = "cli") -> User:
        self._check(name, password, role)
        digest = self.hasher.hash(password)  # outside the lock: 64 MiB of work that readers need not wait for
        try:
            with self._db() as db:
                db.execute("INSERT INTO users(name, role, hash, created) VALUES (?, ?, ?, ?)",
                           (name, role, digest, _now()))
        except sqlite3.IntegrityError:
            raise AccountError(f"user {name!r} exists; use `mpox-aism users passwd` to change the password") from None
        self.record(by, "user added", detail=f"{name} ({role})")
        return User(name, role)  # type: ignore[arg-type]

    def _new_epoch(self, db: sqlite3.Connection, name: str, assignments: str = "", *args: object) -> int:
        """Raise the account's credential epoch (ending its sessions), with more ``assignments``; the new epoch."""
        row = db.execute(f"UPDATE users SET {assignments}credential_epoch = credential_epoch + 1 WHERE name = ? "
                         "RETURNING credential_epoch", (*args, name)).fetchone()
        if row is None:
            raise AccountError(f"no user {name!r}")
        return int(row[0])

    def set_password(self, name: str, password: str, *, by: str = "cli", detail: str = "") -> User:
        """A new password; every session of the account made before it ends (the caller may keep its own)."""
        self._check(name, password)
        digest = self.hasher.hash(password)
        with self._db() as db:
            self._new_epoch(db, name, "hash = ?, ", digest)
        self.record(by, "password changed", detail=f"{name}{detail}")
        user = self.get(name)
        assert user is not None  # just updated; accounts are never deleted
        return user

    def disable(self, name: str, *, by: str = "cli") -> None:
        with self._db() as db:
            self._new_epoch(db, name, "disabled = 1, ")
        self.record(by, "user disabled", detail=f"{name}; its sessions ended")

    def end_sessions(self, name: str, *, by: str = "cli") -> None:
        """End every session of ``name`` at its next request, in whichever process holds it; the password stays."""
        with self._db() as db:
            self._new_epoch(db, name)
        self.record(by, "sessions ended", detail=f"{name}: all")

    def users(self) -> list[User]:
        with self._db() as db:
            rows = db.execute("SELECT name, role, disabled, credential_epoch FROM users ORDER BY name").fetchall()
        return [User(n, r, bool(d), e) for n, r, d, e in rows]

    def get(self, name: str) -> User | None:
        """The account as it is now: one primary-key read, cheap enough for every web request."""
        with self._db() as db:
            row = db.execute("SELECT role, disabled, credential_epoch FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None else User(name, row[0], bool(row[1]), row[2])

    def verify(self, name: str, password: str) -> User | None:
        """The account when ``password`` is right and it is enabled; else None (no hint which was wrong)."""
        with self._db() as db:
            row = db.execute("SELECT role, hash, disabled, credential_epoch FROM users WHERE name = ?",
                             (name,)).fetchone()
        if row is None:
            self.hasher.hash(password)  # the same work either way: timing does not tell which names exist
            return None
        role, stored, disabled, epoch = row
        try:
            self.hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if disabled:
            return None
        if self.hasher.check_needs_rehash(stored):
            digest = self.hasher.hash(password)
            with self._db() as db:  # only if unchanged meanwhile: never undo a password set in between
                db.execute("UPDATE users SET hash = ? WHERE name = ? AND hash = ?", (digest, name, stored))
        return User(name, role, epoch=epoch)

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
        """The audit trail as CSV; a text cell a spreadsheet would run as a formula (a failed log-in's name is
        whatever a visitor typed) is written with a leading ``'`` (OWASP's CSV-injection rule)."""
        rows = self.audit()
        w = csv.writer(out)
        w.writerow(["id", "time", "user", "action", "event_id", "detail"])
        for r in rows:
            w.writerow([r.id, r.time, *map(_inert, (r.user, r.action, r.event_id, r.detail))])
        return len(rows)
