"""``mpox-aism run`` and ``mpox-aism validate-config``: thin argument layers over the daemon and config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mpox_aism.kiosk.config import ConfigError, KioskConfig, load_config, parse_config


def demo_config() -> KioskConfig:
    """The embedded default: no camera, no broker. A still-image source built from real photos that
    ship inside dependencies; events wait in the outbox until a broker is configured."""
    from mpox_aism.contracts.sample import builtin_sample_dir

    folder = builtin_sample_dir() / "normal"
    return parse_config({"station_id": "demo", "cameras": [{"name": "demo", "source": str(folder),
                                                           "hold_frames": 10, "detect_stride": 1,
                                                           "classify_stride": 1}]}, "embedded demo config")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Run the kiosk daemon.", add_help=add_help)
    p.add_argument("--config", default=None, help="YAML config (default: an embedded demo, no camera or broker)")
    p.add_argument("--source", default=None,
                   help="run this source alone, with the first camera's settings (the config's other cameras are "
                        "not started)")
    p.add_argument("--mqtt-url", default=None, help="override mqtt.url (mqtt://host:port)")
    p.add_argument("--http-port", type=int, default=None, help="override http.port")
    p.add_argument("--summary", default=None, help="write a JSON summary here on exit")
    p.add_argument("--keep-serving", action="store_true",
                   help="keep serving HTTP after file sources end (exit_when_done: false)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                   help="debug also shows native library output (MediaPipe/LiteRT), otherwise kept out")
    p.add_argument("--log-format", default="text", choices=("text", "json"),
                   help="json: one object per line, for journald / Loki")
    return p


def apply_overrides(cfg: KioskConfig, args: argparse.Namespace) -> KioskConfig:
    """Command-line overrides. ``--source`` runs that source *alone*: replacing only the first camera's
    source left the others (an absent ``/dev/video0``) reconnecting for ever after the clip was done."""
    data = cfg.model_dump()
    if args.source:
        first, others = data["cameras"][0], [c["name"] for c in data["cameras"][1:]]
        data["cameras"] = [{**first, "source": args.source}]
        if others:
            print(f"mpox-aism run: --source {args.source} runs alone as camera {first['name']!r}; not started: "
                  f"{', '.join(others)}", file=sys.stderr)
    if args.mqtt_url:
        data["mqtt"]["url"] = args.mqtt_url
    if args.http_port is not None:
        data["http"]["port"] = args.http_port
    if args.keep_serving:
        data["exit_when_done"] = False
    return parse_config(data, "command-line overrides")


def main(args: argparse.Namespace) -> int:
    from mpox_aism.kiosk.daemon import Daemon
    from mpox_aism.kiosk.logs import configure, quiet_native_stderr

    configure("debug" if getattr(args, "verbose", False) else args.log_level, args.log_format)
    quiet_native_stderr()

    try:
        cfg = load_config(args.config) if args.config else demo_config()
        cfg = apply_overrides(cfg, args)
    except ConfigError as e:
        raise SystemExit(f"mpox-aism run: {e}") from None
    rc = Daemon(cfg, summary_path=args.summary).run()
    if rc:
        raise SystemExit(rc)
    return rc


def validate_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Check a kiosk config file.", add_help=add_help)
    p.add_argument("file", help="YAML config")
    return p


def validate_main(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.file)
    except ConfigError as e:
        print(f"invalid: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{Path(args.file)}: valid ({len(cfg.cameras)} camera(s), station {cfg.station_id})")
    return 0
