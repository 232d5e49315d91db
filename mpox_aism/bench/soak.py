"""``mpox-aism bench soak``: the daemon on a looping clip for N minutes; does anything grow?

The daemon runs as its own process (what systemd runs), so what is sampled is the real thing and the
sampler does not perturb it: every ``--interval`` seconds, its resident memory (VmRSS), open file
descriptors (``/proc/PID/fd``), threads (native, ``/proc/PID/status``) and, from ``/healthz``, frames
read and events made. Growth is reported after a warm-up (models load, caches and allocator arenas
fill): first → last sample, the maximum, and a least-squares slope per hour. The clip is read as fast
as the box can process it (harder than a 30 fps camera). A benchmark, not a test:
it asserts nothing; read the slope next to the run's length. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mpox_aism.contracts.machine import describe_machine

DEFAULT_CLIP = Path(__file__).resolve().parents[3] / "shared" / "data" / "video" / "short_hamilton_clip.mp4"


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Soak the kiosk daemon on a looping clip; report RSS/fd/thread growth.",
                                add_help=add_help)
    p.add_argument("--minutes", type=float, required=True, help="length of the run")
    p.add_argument("--source", default=str(DEFAULT_CLIP), help="video file (looped) or image folder")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds excluded from the growth figures")
    p.add_argument("--mqtt-url", default=None, help="publish events to this broker (default: outbox only)")
    p.add_argument("--json", default=None, help="write samples and summary here")
    return p


def staff_url(log_text: str) -> str | None:
    """The daemon's HTTP base URL from its start-up line (``... staff page http://host:port/ , ...``)."""
    m = re.search(r"staff page (http://\S+?)/? ,", log_text)
    return m.group(1) if m else None


def proc_sample(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1)) / 1024  # type: ignore[union-attr]
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    return {"rss_mb": round(rss, 1), "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": threads}


def health(url: str | None) -> dict[str, Any]:
    if not url:
        return {}
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
            body = json.load(r)
    except (OSError, ValueError):
        return {}
    cams = body.get("cameras", {})
    return {"frames": sum(c.get("frames", 0) for c in cams.values()),
            "events": sum(c.get("events", 0) for c in cams.values()),
            "outbox_depth": body.get("outbox", {}).get("depth")}


def growth(samples: list[dict[str, Any]], key: str, warmup: float) -> dict[str, float | None]:
    kept = [s for s in samples if s["t"] >= warmup and s.get(key) is not None] or samples
    t = np.array([s["t"] for s in kept], float)
    v = np.array([s[key] for s in kept], float)
    slope = float(np.polyfit(t / 3600, v, 1)[0]) if len(kept) >= 3 and np.ptp(t) > 0 else None
    return {"first": float(v[0]), "last": float(v[-1]), "max": float(v.max()), "growth": float(v[-1] - v[0]),
            "slope_per_hour": None if slope is None else round(slope, 2), "from_s": float(t[0])}


def main(args: argparse.Namespace) -> dict[str, Any]:
    if not sys.platform.startswith("linux"):
        raise SystemExit("bench soak: needs Linux (/proc)")
    source = Path(args.source)
    if not source.exists():
        raise SystemExit(f"bench soak: source {source} not found (give --source a video file or image folder)")
    work = Path(tempfile.mkdtemp(prefix="mpox-aism-soak-"))
    cfg = {"station_id": "soak",
           "cameras": [{"name": "soak", "source": str(source), "loop": True}],
           "outbox": {"path": str(work / "outbox.sqlite3"), "flush_timeout_s": 5},
           "http": {"enabled": True, "port": 0},
           "exit_when_done": False}
    if args.mqtt_url:
        cfg["mqtt"] = {"url": args.mqtt_url}
    (work / "kiosk.yaml").write_text(yaml.safe_dump(cfg))
    log_path, summary_path = work / "daemon.log", work / "summary.json"
    env = {**os.environ, "STATE_DIRECTORY": str(work)}
    cmd = [sys.executable, "-m", "mpox_aism.cli", "run", "--config", str(work / "kiosk.yaml"),
           "--summary", str(summary_path)]
    print(f"soak: {args.minutes:g} min on {source}; daemon log {log_path}", flush=True)
    samples: list[dict[str, Any]] = []
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    t0 = time.monotonic()
    url = None
    try:
        while time.monotonic() - t0 < 60 * args.minutes and proc.poll() is None:
            if url is None:
                url = staff_url(log_path.read_text(errors="replace"))
            s = {"t": round(time.monotonic() - t0, 1), **proc_sample(proc.pid), **health(url)}
            samples.append(s)
            print("  ".join(f"{k}={v}" for k, v in s.items()), flush=True)
            time.sleep(args.interval)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
    if proc.returncode not in (0, None) and not samples:
        raise SystemExit(f"bench soak: the daemon exited with {proc.returncode}; see {log_path}")
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    result = {
        "benchmark": "soak", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "mpox-aism bench soak " + shlex.join(sys.argv[3:] if sys.argv[1:3] == ["bench", "soak"]
                                                          else sys.argv[1:]),
        "machine": asdict(describe_machine()), "source": str(source), "minutes": args.minutes, "warmup_s": args.warmup,
        "exit_code": proc.returncode,
        "growth": {k: growth(samples, k, args.warmup) for k in ("rss_mb", "fds", "threads")} if samples else {},
        "daemon_summary": summary, "samples": samples,
    }
    g = result["growth"]
    if g:
        print("after warm-up: " + "; ".join(
            f"{k} {v['first']:g} → {v['last']:g} (max {v['max']:g}, slope {v['slope_per_hour']}/h)"
            for k, v in g.items()) + f"; daemon exit {proc.returncode}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result
