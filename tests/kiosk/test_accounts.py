"""Staff accounts: argon2id hashes, nested roles, disabled not deleted, an audit trail that cannot be rewritten,
weak passwords refused with zxcvbn's reason, a credential epoch that ends sessions from another process."""

from __future__ import annotations

import csv
import io
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from mpox_aism.kiosk.accounts import AccountError, Accounts

ROOT = Path(__file__).resolve().parents[2]
FAST = PasswordHasher(time_cost=1, memory_cost=1024)  # tests only: the shipped defaults cost 64 MiB a hash


def test_add_verify_roles_and_disable(tmp_path: Path) -> None:
    a = Accounts(tmp_path / "staff.sqlite3", hasher=FAST)
    a.add("dr.ng", "a long enough pass", "reviewer")
    a.add("desk-2", "another long pass", "viewer")
    user = a.verify("dr.ng", "a long enough pass")
    assert user is not None and user.may("viewer") and user.may("reviewer") and not user.may("admin")
    viewer = a.verify("desk-2", "another long pass")
    assert viewer is not None and not viewer.may("reviewer")
    assert a.verify("dr.ng", "wrong password!!") is None and a.verify("nobody", "a long enough pass") is None
    a.disable("desk-2")
    assert a.verify("desk-2", "another long pass") is None  # disabled, yet still listed for the audit trail
    assert [(u.name, u.disabled) for u in a.users()] == [("desk-2", True), ("dr.ng", False)]
    a.set_password("dr.ng", "a brand new password")
    assert a.verify("dr.ng", "a long enough pass") is None and a.verify("dr.ng", "a brand new password")
    stored = sqlite3.connect(tmp_path / "staff.sqlite3").execute("SELECT hash FROM users").fetchall()
    assert all(h.startswith("$argon2id$") for (h,) in stored)  # never the password itself


def test_refusals_say_why(tmp_path: Path) -> None:
    a = Accounts(tmp_path / "s.sqlite3", hasher=FAST)
    with pytest.raises(AccountError, match="too short"):
        a.add("x", "short", "viewer")
    with pytest.raises(AccountError, match="unknown role"):
        a.add("x", "long enough password", "root")
    with pytest.raises(AccountError, match="user name"):
        a.add("Robert'); DROP", "long enough password", "viewer")
    a.add("x", "long enough password", "viewer")
    with pytest.raises(AccountError, match="exists"):
        a.add("x", "long enough password", "viewer")
    with pytest.raises(AccountError, match="no user"):
        a.disable("y")
    with pytest.raises(AccountError, match="no user"):
        a.end_sessions("y")


@pytest.mark.parametrize(("name", "password", "why"), [
    ("dr.ng", "password1234", "very common password"),  # long enough, and among the first guesses
    ("dr.ng", "Password123!", "similar to a commonly used password"),
    ("dr.ng", "aaaaaaaaaaaaaaaa", "Repeats"),
    ("dr.ng", "drngmpoxaism2024", "too easy to guess"),  # the account's name and the kiosk's words
    ("gate.keeper", "gatekeeper2025", "too easy to guess"),
])
def test_weak_passwords_are_refused_with_the_estimators_reason(tmp_path: Path, name: str, password: str,
                                                                why: str) -> None:
    a = Accounts(tmp_path / "s.sqlite3", hasher=FAST)
    with pytest.raises(AccountError, match=why) as refused:
        a.add(name, password, "viewer")
    assert "strength" in str(refused.value) and password not in str(refused.value)
    a.add(name, "plum orbit cactus violin", "viewer")  # four unrelated words: accepted
    with pytest.raises(AccountError, match="too easy to guess"):
        a.set_password(name, password)
    assert a.verify(name, "plum orbit cactus violin") is not None  # the refused change changed nothing


def test_the_station_is_a_word_a_guesser_tries(tmp_path: Path) -> None:
    assert Accounts(tmp_path / "a.sqlite3", hasher=FAST).add("x", "zanzibareast2024", "viewer")
    here = Accounts(tmp_path / "b.sqlite3", hasher=FAST, words=["zanzibar-east"])
    with pytest.raises(AccountError, match="too easy to guess"):
        here.add("x", "zanzibareast2024", "viewer")


def test_password_change_disable_and_end_sessions_raise_the_credential_epoch(tmp_path: Path) -> None:
    a = Accounts(tmp_path / "s.sqlite3", hasher=FAST)
    a.add("dr.ng", "a long enough pass", "reviewer")
    epochs = [a.verify("dr.ng", "a long enough pass").epoch]  # type: ignore[union-attr]
    epochs.append(a.set_password("dr.ng", "a brand new password").epoch)
    a.end_sessions("dr.ng")
    epochs.append(a.get("dr.ng").epoch)  # type: ignore[union-attr]
    a.disable("dr.ng")
    epochs.append(a.get("dr.ng").epoch)  # type: ignore[union-attr]
    assert epochs == [0, 1, 2, 3]
    actions = [(r.action, r.detail) for r in a.audit()]
    assert ("sessions ended", "dr.ng: all") in actions and ("user disabled", "dr.ng; its sessions ended") in actions


def test_a_store_from_before_the_epoch_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    with sqlite3.connect(path) as db:  # the schema as it shipped before sessions could be ended from outside
        db.execute("CREATE TABLE users (name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL, "
                   "disabled INTEGER NOT NULL DEFAULT 0, created TEXT NOT NULL)")
        db.execute("INSERT INTO users VALUES ('old', 'viewer', ?, 0, '2026-01-01')",
                   (FAST.hash("a long enough pass"),))
    db.close()
    a = Accounts(path, hasher=FAST)
    assert a.verify("old", "a long enough pass") == a.get("old") and a.get("old").epoch == 0  # type: ignore[union-attr]
    a.end_sessions("old")
    assert a.get("old").epoch == 1  # type: ignore[union-attr]


def test_a_weaker_hash_is_upgraded_at_login(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    Accounts(path, hasher=FAST).add("x", "long enough password", "viewer")
    strong = PasswordHasher(time_cost=2, memory_cost=2048)
    assert Accounts(path, hasher=strong).verify("x", "long enough password") is not None
    (h,) = sqlite3.connect(path).execute("SELECT hash FROM users").fetchone()
    assert not strong.check_needs_rehash(h)


def test_the_audit_trail_is_append_only_and_exports_csv(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    a = Accounts(path, hasher=FAST)
    a.record("dr.ng", "reviewed", event_id="ev-1", detail="looked at it")
    db = sqlite3.connect(path)
    for sql in ("UPDATE audit SET user = 'someone else'", "DELETE FROM audit"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute(sql)
    out = io.StringIO()
    assert a.export_csv(out) == 1
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert rows[0]["user"] == "dr.ng" and rows[0]["event_id"] == "ev-1" and rows[0]["action"] == "reviewed"


def test_the_csv_export_cannot_carry_a_spreadsheet_formula(tmp_path: Path) -> None:
    """A failed log-in's name is what a visitor typed: opened in a spreadsheet, it must stay text."""
    a = Accounts(tmp_path / "s.sqlite3", hasher=FAST)
    a.record('=HYPERLINK("http://x","y")', "login failed", detail="+1 -2 @3")
    out = io.StringIO()
    a.export_csv(out)
    (row,) = csv.DictReader(io.StringIO(out.getvalue()))
    assert row["user"] == '\'=HYPERLINK("http://x","y")' and row["detail"] == "'+1 -2 @3"


def test_cli_reads_the_password_from_stdin_never_argv(tmp_path: Path) -> None:
    db = str(tmp_path / "staff.sqlite3")

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mpox_aism.cli", "users", "--db", db, *args], cwd=ROOT,
                              input=stdin, capture_output=True, text=True, timeout=120)

    assert cli("add", "admin", "--role", "admin", "--password-stdin", stdin="first admin password\n").returncode == 0
    listed = cli("list")
    assert listed.returncode == 0 and listed.stdout.split() == ["admin", "admin", "active"]
    weak = cli("add", "bob", "--role", "viewer", "--password-stdin", stdin="short\n")
    assert weak.returncode != 0 and "too short" in weak.stderr
    common = cli("add", "bob", "--role", "viewer", "--password-stdin", stdin="password1234\n")
    assert common.returncode != 0 and "very common password" in common.stderr
    ended = cli("end-sessions", "admin")
    assert ended.returncode == 0 and "next request" in ended.stdout
    audit = cli("audit")
    assert "user added" in audit.stdout and "admin (admin)" in audit.stdout and "sessions ended" in audit.stdout
    assert "password1234" not in audit.stdout
