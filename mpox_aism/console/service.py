"""``mpox-aism console --config FILE``: the long-running console service.

Opens the store, starts the subscriber (which connects, and keeps retrying, by itself), the relay of staff
actions back to the kiosks (``console.acks``: its own outbox and publisher) and the staff page
(``console.web``, on ``http.host:port``), tells systemd READY=1, then pings its watchdog once a second while
the writer thread is alive; if the writer dies the process exits 1 so systemd restarts it (the broker keeps
whatever was not acknowledged).
SIGTERM/SIGINT: commit and acknowledge what has arrived, disconnect (the session stays on the broker).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from dataclasses import asdict
from types import FrameType
from typing import Any

from mpox_aism.console.acks import ConsoleActions
from mpox_aism.console.config import ConsoleConfig, load_console_config
from mpox_aism.console.store import ConsoleStore
from mpox_aism.console.subscriber import ConsoleSubscriber
from mpox_aism.kiosk.actions import ReviewStore
from mpox_aism.kiosk.config import secret
from mpox_aism.kiosk.host import sd_notify
from mpox_aism.kiosk.mqtt import MqttPublisher
from mpox_aism.kiosk.outbox import Outbox

log = logging.getLogger(__name__)
REPORT_EVERY_S = 300.0


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Collect every kiosk's events, availability and status from the broker "
                                "into the console's store.", add_help=add_help)
    p.add_argument("--config", required=True, help="console YAML file (see README, 'The console')")
    return p


def run(cfg: ConsoleConfig, stop: threading.Event) -> int:
    path = cfg.store.resolved()
    store = ConsoleStore(path)
    password = secret(cfg.mqtt.password_env, "mqtt-password") if cfg.mqtt.username else None
    m = cfg.mqtt
    actions = ReviewStore(path, origin=m.client_id, table="actions")
    outbox = Outbox(cfg.beside_store(cfg.acks.outbox))
    # a second connection, with its own account where the broker allows one connection per account
    send_user, send_password = m.username, password
    if m.send_username is not None:
        send_user, send_password = m.send_username, secret(m.send_password_env, "mqtt-send-password")
    sender = MqttPublisher(outbox, host=m.host, port=m.port, client_id=f"{m.client_id}-send"[:64],
                           topic_prefix=f"{m.topic_root}/console/{m.client_id}", username=send_user,
                           password=send_password, tls=m.tls.model_dump() if m.tls else None, keepalive=m.keepalive_s)
    sender.start()
    accounts = console_accounts(cfg) if cfg.http.enabled else None
    relay = ConsoleActions(actions, outbox, root=m.topic_root, accounts=accounts, waker=sender,
                           retain_days=cfg.acks.retain_days).start()
    sub = ConsoleSubscriber(m, store, password=password, actions=relay)
    sub.start()
    server = start_page(cfg, store, actions, accounts, relay) if accounts is not None else None
    log.info("console: store %s; broker %s as %r, topics %s; staff page %s", path, m.url, m.client_id,
             ", ".join(sub.topics), server.url + "/" if server else "off")
    if server is not None:
        print(f"mpox-aism console: staff page {server.url}/", flush=True)
    sd_notify("READY=1")
    rc, next_report = 0, time.monotonic() + REPORT_EVERY_S
    try:
        while not stop.wait(1.0):
            if not sub.alive:
                log.error("the console's writer thread ended; exiting so the service is restarted")
                rc = 1
                break
            sd_notify("WATCHDOG=1")
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + REPORT_EVERY_S
                log.info("console: %s; %s", asdict(store.counts()), asdict(sub.stats()))
    finally:
        sd_notify("STOPPING=1")
        if server is not None:
            server.stop()
        sub.close()
        relay.close()
        sender.close()
        outbox.close()
        log.info("console stopped: %s", asdict(store.counts()))
        store.close()
    return rc


def console_accounts(cfg: ConsoleConfig) -> Any:
    """The console's own staff accounts (``mpox-aism users --db`` that file); the first admin as on a kiosk."""
    from mpox_aism.kiosk.web.server import staff_accounts

    return staff_accounts(cfg.beside_store(cfg.http.accounts), station_id="console")


def start_page(cfg: ConsoleConfig, store: ConsoleStore, actions: ReviewStore, accounts: Any,
               relay: ConsoleActions) -> Any:
    from mpox_aism.console.web import create_console_app
    from mpox_aism.kiosk.web.server import ServerThread

    tls = cfg.http.tls
    app = create_console_app(store, actions, accounts, sessions=cfg.http.sessions, secure=tls is not None,
                             on_action=lambda a: relay.wake())
    return ServerThread(app, host=cfg.http.host, port=cfg.http.port, certfile=tls.certfile if tls else None,
                        keyfile=tls.keyfile if tls else None).start()


def main(args: argparse.Namespace) -> None:
    cfg = load_console_config(args.config)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rc = run(cfg, stop)
    if rc:
        raise SystemExit(rc)
