"""``mpox-aism users add|passwd|disable|end-sessions|list|audit``: staff accounts in the kiosk's state directory.

Passwords are read without echo (twice, to catch a typo) or, for scripts and systemd, one line from
stdin with ``--password-stdin``; never from the command line, where ``ps`` and shell history see them.
A weak one is refused with zxcvbn's reason (``kiosk.accounts.password_problem``). ``passwd``, ``disable``
and ``end-sessions`` end the account's sessions in the running daemon at their next request.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from mpox_aism.kiosk.accounts import ROLES, AccountError, Accounts

STORE = "staff.sqlite3"


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Manage staff accounts.", add_help=add_help)
    p.add_argument("--db", default=None, help=f"account store (default: $STATE_DIRECTORY/{STORE} or runs/state)")
    sub = p.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="create an account")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--password-stdin", action="store_true", help="read the password from one line of stdin")
    pw = sub.add_parser("passwd", help="set a new password")
    pw.add_argument("name")
    pw.add_argument("--password-stdin", action="store_true")
    sub.add_parser("disable", help="disable an account (kept for the audit trail); ends its sessions").add_argument(
        "name")
    sub.add_parser("end-sessions", help="log an account out everywhere; its password stays").add_argument("name")
    sub.add_parser("list", help="list the accounts")
    au = sub.add_parser("audit", help="the audit trail as CSV")
    au.add_argument("--csv", default="-", help="output file (default: stdout)")
    return p


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise AccountError("the two passwords differ")
    return first


def store(path: str | None) -> Accounts:
    from mpox_aism.kiosk.host import state_dir

    return Accounts(Path(path) if path else state_dir() / STORE)


def main(args: argparse.Namespace) -> int:
    accounts = store(args.db)
    try:
        if args.action == "add":
            user = accounts.add(args.name, _password(args.password_stdin), args.role)
            print(f"added {user.name} ({user.role})")
        elif args.action == "passwd":
            accounts.set_password(args.name, _password(args.password_stdin))
            print(f"password changed for {args.name}; its sessions end at their next request")
        elif args.action == "disable":
            accounts.disable(args.name)
            print(f"disabled {args.name}; its sessions end at their next request")
        elif args.action == "end-sessions":
            accounts.end_sessions(args.name)
            print(f"every session of {args.name} ends at its next request")
        elif args.action == "list":
            for u in accounts.users():
                print(f"{u.name}\t{u.role}\t{'disabled' if u.disabled else 'active'}")
        elif args.action == "audit":
            if args.csv == "-":
                accounts.export_csv(sys.stdout)
            else:
                with open(args.csv, "w", newline="", encoding="utf-8") as f:
                    n = accounts.export_csv(f)
                print(f"{n} audit rows written to {args.csv}")
    except AccountError as e:
        raise SystemExit(f"mpox-aism users {args.action}: {e}") from None
    return 0
