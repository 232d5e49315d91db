"""Staff accounts: argon2id hashes, nested roles, disabled not deleted, an audit trail that cannot be rewritten."""

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
    audit = cli("audit")
    assert "user added" in audit.stdout and "admin (admin)" in audit.stdout
