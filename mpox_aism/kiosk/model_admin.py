"""``mpox-aism models install DIR | promote | rollback | status``: the model slots of the kiosk's state directory.

Who acts goes into the audit trail: ``--by NAME``, else the login that ran ``sudo`` (``$SUDO_USER``), else
``$USER`` unless that is root — "root" names no person, so then ``--by`` is required. Refusals (not a
model, failed checks, another backbone, nothing to promote or roll back) exit 2 with the reason.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mpox_aism.kiosk.models import ModelError, ModelStore, Slots


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Install a model in shadow, promote it, roll it back.", add_help=add_help)
    p.add_argument("--config", default=None, help="kiosk config: its classifier.model is the current model until "
                   "a promote (default: the shipped models/default)")
    p.add_argument("--state-dir", default=None, help="the kiosk's state directory (default: $STATE_DIRECTORY or "
                   "runs/state)")
    p.add_argument("--by", default=None, help="who does it, for the audit trail (default: $SUDO_USER, else $USER "
                   "unless root)")
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("install", help="copy a model directory in, checked, as the shadow").add_argument("dir")
    sub.add_parser("promote", help="the shadow decides; the current one becomes previous")
    sub.add_parser("rollback", help="the previous model decides again")
    sub.add_parser("status", help="print the slots")
    return p


def who(by: str | None) -> str:
    """The person the audit trail names (module docstring)."""
    if by:
        return by
    if os.environ.get("SUDO_USER"):
        return os.environ["SUDO_USER"]
    user = os.environ.get("USER", "")
    if user and user != "root":
        return user
    raise ModelError("say who does this: --by NAME (it goes into the audit trail; 'root' names no person)")


def _configured_model(config: str | None) -> str | None:
    if not config:
        return None
    from mpox_aism.kiosk.config import ConfigError, load_config

    try:
        return load_config(config).classifier.model
    except ConfigError as e:
        raise ModelError(str(e)) from None


def format_slots(slots: Slots, store: ModelStore, configured: str | None) -> str:
    cur = slots.current or f"(none installed: the configured model {configured or 'models/default'} decides)"
    lines = [f"current:  {cur}", f"shadow:   {slots.shadow or '-'}", f"previous: {slots.previous or '-'}"]
    return "\n".join(lines) + f"\n(slots in {store.active_path})"


def main(args: argparse.Namespace) -> int:
    from mpox_aism.kiosk.host import state_dir

    store = ModelStore(Path(args.state_dir) if args.state_dir else state_dir())
    configured = _configured_model(args.config)
    if args.action == "status":
        print(format_slots(store.slots(), store, configured))
        return 0
    by = who(args.by)
    if args.action == "install":
        change = store.install(args.dir, by=by, fallback=configured)
    elif args.action == "promote":
        change = store.promote(by=by, fallback=configured)
    else:
        change = store.rollback(by=by)
    print(change.message)
    return 0


__all__ = ["ModelError", "get_args_parser", "main", "who"]
