"""``mpox-aism console --config FILE``: the long-running console service.

Opens the store, starts the subscriber (which connects, and keeps retrying, by itself), tells systemd
READY=1, then pings its watchdog once a second while the writer thread is alive; if the writer dies
the process exits 1 so systemd restarts it (the broker keeps whatever was not acknowledged).
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

from mpox_aism.console.config import ConsoleConfig, load_console_config
from mpox_aism.console.store import ConsoleStore
from mpox_aism.console.subscriber import ConsoleSubscriber
from mpox_aism.kiosk.config import secret
from mpox_aism.kiosk.host import sd_notify

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
    sub = ConsoleSubscriber(cfg.mqtt, store, password=password)
    sub.start()
    log.info("console: store %s; broker %s as %r, topics %s", path, cfg.mqtt.url, cfg.mqtt.client_id,
             ", ".join(sub.topics))
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
        sub.close()
        log.info("console stopped: %s", asdict(store.counts()))
        store.close()
    return rc


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
