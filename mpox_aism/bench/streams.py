"""``mpox-aism bench streams``: how many cameras can one box serve? The daemon's own workers on N streams.

N looped copies of one source (cameras ``cam1``..``camN``, default strides, no broker, no HTTP) run in
*this* process through :class:`~mpox_aism.kiosk.daemon.Daemon` itself — the same classifier, sink and
``CameraWorker`` threads as ``mpox-aism run``, not a copy of the pipeline — and are stopped after
``--seconds``. In-process rather than as a child daemon because the figures wanted (each camera's
frames, each worker's latency percentiles) live in the daemon's ``CameraState`` objects, which
``/healthz`` does not expose, and because the process's own CPU and peak RSS then are the daemon's.

File sources are read as fast as the box can process them (no pacing), so ``fps`` is each stream's
*processing* rate; a 30 fps camera would be real time when it is ≥ 30. ``fps`` and CPU are measured
from the moment every stream has processed its first frame (models loaded) to the stop; latency
(capture → last stage, from each worker's pipeline stats) covers every processed frame. ``cpu_percent``
is user+sys CPU over wall time for the whole process, 100 = one core busy (so up to 100 × cores). A benchmark,
not a test: it asserts nothing. Linux only for peak RSS (``/proc/self/status`` VmHWM, reset per run).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shlex
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpox_aism.contracts.machine import describe_machine

if TYPE_CHECKING:
    from mpox_aism.kiosk.daemon import Daemon

DEFAULT_CLIP = Path(__file__).resolve().parents[3] / "shared" / "data" / "video" / "short_hamilton_clip.mp4"
FIND_MAX_STEPS = (1, 2, 4, 6, 8, 12)
START_TIMEOUT_S = 180.0  # models load and every stream reaches its first frame within this, or the run stops

Measure = Callable[[int], dict[str, Any]]


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Run the daemon's camera workers on N looped copies of a source; "
                                "report per-stream fps, latency, CPU and peak RSS.", add_help=add_help)
    p.add_argument("--source", default=str(DEFAULT_CLIP), help="video file or image folder (looped)")
    p.add_argument("--streams", type=int, default=1, help="number of cameras (ignored with --find-max)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run (after start-up)")
    p.add_argument("--find-max", action="store_true",
                   help=f"try N = {', '.join(map(str, FIND_MAX_STEPS))} in order; stop at the first N where a "
                   "stream falls under --min-fps")
    p.add_argument("--min-fps", type=float, default=10.0, help="the fps every stream must keep (--find-max)")
    p.add_argument("--frames-at-once", type=int, default=None,
                   help="the config's load.frames_at_once (cameras working on a frame at once); default: unset")
    p.add_argument("--batch-wait-ms", type=float, default=None,
                   help="the config's classifier.batch_wait_ms; default: unset")
    p.add_argument("--json", required=True, help="output JSON file")
    return p


def peak_rss_mb() -> float | None:
    """The process's peak resident memory (VmHWM) in MB; None off Linux."""
    try:
        m = re.search(r"^VmHWM:\s+(\d+)", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return round(int(m.group(1)) / 1024, 1) if m else None


def reset_peak_rss() -> None:
    """Start VmHWM again from the current RSS, so each run of ``--find-max`` reports its own peak."""
    with contextlib.suppress(OSError):  # not Linux, or not allowed: the peak is then the process's so far
        Path("/proc/self/clear_refs").write_text("5")


def camera_threads(n: int) -> list[threading.Thread]:
    """The daemon's worker threads for cam1..camN still alive (named ``camera-<name>`` by the daemon)."""
    names = {f"camera-cam{i}" for i in range(1, n + 1)}
    return [t for t in threading.enumerate() if t.name in names and t.is_alive()]


def run_streams(source: str, streams: int, seconds: float, *, frames_at_once: int | None = None,
                batch_wait_ms: float | None = None) -> dict[str, Any]:
    """One run: the daemon on ``streams`` looped copies of ``source`` for ``seconds``; every thread joined."""
    from mpox_aism.kiosk.config import parse_config
    from mpox_aism.kiosk.daemon import Daemon

    if streams < 1:
        raise ValueError("--streams must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="mpox-aism-streams-"))
    cfg = parse_config({"station_id": "bench-streams",
                        "cameras": [{"name": f"cam{i}", "source": source, "loop": True}
                                    for i in range(1, streams + 1)],
                        "outbox": {"path": str(work / "outbox.sqlite3"), "flush_timeout_s": 1},
                        "http": {"enabled": False}, "labels": {"enabled": False},
                        "load": {"frames_at_once": frames_at_once}, "exit_when_done": False,
                        **({"classifier": {"batch_wait_ms": batch_wait_ms}} if batch_wait_ms is not None else {})},
                       "bench streams config")
    daemon = Daemon(cfg)
    window: dict[str, Any] = {}

    def stopper() -> None:
        """Start the clock once every stream runs (model loading excluded), stop the daemon after ``seconds``."""
        cams = daemon.cameras.values()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(c.frames or c.done for c in cams) and time.monotonic() < deadline:
            if daemon.stop_event.wait(0.05):
                return
        window.update(t0=time.monotonic(), cpu0=os.times(), frames0={n: c.frames for n, c in daemon.cameras.items()})
        daemon.stop_event.wait(seconds)
        window.update(t1=time.monotonic(), cpu1=os.times(), frames1={n: c.frames for n, c in daemon.cameras.items()})
        daemon.request_stop()

    # the daemon sets state (outbox, label store, installed models) under $STATE_DIRECTORY and signal handlers:
    # point the first at a scratch folder (no installed model slot: the default model) and restore both after
    old_state = os.environ.get("STATE_DIRECTORY")
    old_handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    os.environ["STATE_DIRECTORY"] = str(work)
    reset_peak_rss()
    watcher = threading.Thread(target=stopper, name="bench-streams-stopper", daemon=True)
    watcher.start()
    try:
        daemon.run()
    finally:
        daemon.request_stop()
        watcher.join()
        for t in camera_threads(streams):  # run() waits 5 s per worker; a slow frame must not outlive us
            t.join()
        for s, h in old_handlers.items():
            signal.signal(s, h)
        if old_state is None:
            os.environ.pop("STATE_DIRECTORY", None)
        else:
            os.environ["STATE_DIRECTORY"] = old_state
    if "t1" not in window:
        raise RuntimeError("bench streams: the run stopped before it was measured")
    wall = max(1e-9, window["t1"] - window["t0"])
    cpu = sum(getattr(window["cpu1"], k) - getattr(window["cpu0"], k) for k in ("user", "system"))
    cams = daemon.cameras
    return {
        "streams": streams, "seconds": round(wall, 2), "frames_at_once": daemon.config.load.frames_at_once,
        "fps": [round((window["frames1"][n] - window["frames0"][n]) / wall, 2) for n in cams],
        "latency_p50_ms": [c.summary.get("latency_ms", {}).get("p50") for c in cams.values()],
        "latency_p99_ms": [c.summary.get("latency_ms", {}).get("p99") for c in cams.values()],
        "stage_ms": [c.summary.get("stage_ms") for c in cams.values()],  # wall ms per frame, CPU waits included
        "stride_scale": [c.stride_scale for c in cams.values()],  # at the stop
        "dropped_frames": [c.source.dropped_frames for c in cams.values()],
        "frames": [c.frames for c in cams.values()],
        "errors": [c.errors for c in cams.values()],
        "cpu_percent": round(100 * cpu / wall, 1), "rss_mb": peak_rss_mb(),
        "inference": _inference(daemon),
    }


def _inference(daemon: Daemon) -> dict[str, Any] | None:
    """The shared inference worker's totals for the whole run (start-up included): batches and crops per batch."""
    service = daemon.inference
    if service is None:
        return None
    s = service.stats()
    return {"batches": s.batches, "crops": s.crops, "crops_per_batch": round(s.crops_per_batch, 2),
            "failed": sum(s.failed.values())}


def find_max(measure: Measure, min_fps: float, steps: Iterable[int] = FIND_MAX_STEPS) -> tuple[int, list[dict]]:
    """The largest N in ``steps`` (tried in order) whose every stream keeps ``min_fps``; 0 when even the first
    fails. Stops at the first failure: more streams on the same cores only get slower."""
    best, runs = 0, []
    for n in steps:
        r = measure(n)
        ok = len(r["fps"]) == n and all(f >= min_fps for f in r["fps"])
        runs.append({**r, "ok": ok})
        if not ok:
            break
        best = n
    return best, runs


def main(args: argparse.Namespace) -> dict[str, Any]:
    if not Path(args.source).exists():
        raise SystemExit(f"bench streams: source {args.source} not found (give --source a video file or folder)")

    def measure(n: int) -> dict[str, Any]:
        r = run_streams(args.source, n, args.seconds, frames_at_once=args.frames_at_once,
                        batch_wait_ms=args.batch_wait_ms)
        print(f"streams {n}: fps {r['fps']}, p99 {r['latency_p99_ms']} ms, CPU {r['cpu_percent']}%, "
              f"peak RSS {r['rss_mb']} MB", flush=True)
        return r

    if args.find_max:
        best, runs = find_max(measure, args.min_fps)
        last_ok = next((r for r in reversed(runs) if r["ok"]), runs[-1])
        report: dict[str, Any] = {**{k: v for k, v in last_ok.items() if k != "ok"}, "max_streams": best,
                                  "min_fps": args.min_fps, "runs": runs}
    else:
        report = measure(args.streams)
    report.update(source=args.source, command="mpox-aism " + shlex.join(sys.argv[1:]),
                  date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), machine=asdict(describe_machine()))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report
