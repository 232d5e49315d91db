"""``mpox-aism bench api``: the diagnosis API under N concurrent clients, and what it costs the camera.

Starts the daemon (``mpox-aism run``) on a looping clip with a fresh API token — or attaches to a
running kiosk with ``--url`` and ``$MPOX_AISM_API_TOKEN`` — measures the camera's frame rate idle,
then runs ``--clients`` threads that each post real photos back to back to ``POST /v1/diagnose`` for
``--seconds``, and reports the status counts, p50/p99 latency of the answered (200) requests, answers
per second, and the camera's frame rate under load (frames counted from ``/healthz``) against its idle rate
(the mean of an idle window before the load and one after it, so that the machine's drift shows), with the
CPU the daemon process and the clients (this process and its ``curl`` children) used in each window. Clients wait
``Retry-After`` when refused, as a well-behaved client does; ``--ignore-retry-after`` makes them
hammer instead (a misbehaving or hostile client); ``--curl`` makes each client a loop of plain ``curl``
processes, as a shell script would (never honouring ``Retry-After``). A benchmark, not a test: it asserts
nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mpox_aism.bench.soak import DEFAULT_CLIP, staff_url
from mpox_aism.contracts.images import list_images

DEFAULT_PHOTOS = Path(__file__).resolve().parents[3] / "shared" / "data" / "skin8"


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Benchmark the diagnosis API against the running kiosk.", add_help=add_help)
    p.add_argument("--clients", type=int, default=1, help="concurrent clients, each posting back to back")
    p.add_argument("--seconds", type=float, default=30.0, help="length of the loaded window")
    p.add_argument("--idle-seconds", type=float, default=20.0, help="window for the camera's idle frame rate")
    p.add_argument("--source", default=str(DEFAULT_CLIP), help="the daemon's camera: a looping video or folder")
    p.add_argument("--photos", default=str(DEFAULT_PHOTOS), help="folder of photos to upload (every 50th is used)")
    p.add_argument("--url", default=None, help="attach to this running kiosk instead (token in $MPOX_AISM_API_TOKEN)")
    p.add_argument("--ignore-retry-after", action="store_true", help="clients retry at once when refused")
    p.add_argument("--clients-nice", type=int, default=0, choices=range(20), metavar="0-19",
                   help="run the client threads at this niceness (Linux): on one machine they stand in for "
                        "phones and desks with CPUs of their own, so they should not take the camera's CPU "
                        "either. 0 (default): as before, comparable with the earlier figures")
    p.add_argument("--curl", action="store_true",
                   help="each client is a loop of plain `curl` processes (one per request, never honouring "
                        "Retry-After), as in the issue's report, instead of a Python client")
    p.add_argument("--json", default=None, help="write the result here")
    return p


def _get(url: str) -> dict[str, Any]:
    import httpx

    return httpx.get(url, timeout=10).json()


def _frames(url: str) -> int:
    return sum(int(c.get("frames", 0)) for c in _get(f"{url}/healthz").get("cameras", {}).values())


def _proc_cpu_s(pid: int | None) -> float | None:
    """A process's user+system CPU seconds so far (Linux ``/proc``); None without one."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def _own_cpu_s() -> float:
    """This process's CPU (the client threads) and its reaped children's (the curl processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class Window:
    """The camera's frames and the CPU spent in one window: the daemon's, and the clients' (this process)."""

    seconds: float
    fps: float
    daemon_cpu_percent: float | None
    clients_cpu_percent: float


def _window(url: str, pid: int | None, seconds: float, during: Callable[[], None] = lambda: None) -> Window:
    f0, c0, o0, t0 = _frames(url), _proc_cpu_s(pid), _own_cpu_s(), time.monotonic()
    during()
    time.sleep(seconds)
    f1, c1, o1, t1 = _frames(url), _proc_cpu_s(pid), _own_cpu_s(), time.monotonic()
    wall = t1 - t0
    return Window(round(wall, 2), round((f1 - f0) / wall, 2),
                  round(100 * (c1 - c0) / wall, 1) if c0 is not None and c1 is not None else None,
                  round(100 * (o1 - o0) / wall, 1))


def _client(url: str, token: str, photos: list[tuple[str, bytes]], stop: threading.Event,
            out: list[tuple[int, float]], offset: int, polite: bool, nice: int = 0) -> None:
    import httpx

    if nice:  # per thread on Linux; absolute, so only ever lowered
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(os.PRIO_PROCESS, tid)))

    # on loopback each client gets its own source address (127.0.0.k), as separate phones or desks would:
    # per-client limits then apply per client, not to all of them together
    local = f"127.0.0.{2 + offset % 250}" if httpx.URL(url).host == "127.0.0.1" else None
    transport = httpx.HTTPTransport(local_address=local) if local else None
    with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"},
                      transport=transport) as c:
        i = offset
        while not stop.is_set():
            name, data = photos[i % len(photos)]
            t0 = time.perf_counter()
            retry_after = 0.0
            try:
                r = c.post("/v1/diagnose", files={"image": (name, data, "image/jpeg")})
                status, retry_after = r.status_code, float(r.headers.get("retry-after", 0) or 0)
            except httpx.HTTPError:
                status = 0  # no answer at all
            out.append((status, 1000 * (time.perf_counter() - t0)))
            i += 1
            if polite and retry_after:
                stop.wait(retry_after)


def _curl_client(url: str, token: str, photos: list[Path], stop: threading.Event, out: list[tuple[int, float]],
                 offset: int, nice: int = 0) -> None:
    """A shell's ``while true; do curl -F image=@photo …; done``: one process per request, Retry-After ignored."""
    local = ["--interface", f"127.0.0.{2 + offset % 250}"] if "://127.0.0.1:" in url else []
    i = offset
    while not stop.is_set():
        cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}", *local, "--max-time", "60",
               "-H", "@-", "-F", f"image=@{photos[i % len(photos)]};type=image/jpeg", f"{url}/v1/diagnose"]
        if nice:
            cmd = ["nice", "-n", str(nice), *cmd]
        # the token on stdin, never on a command line that other users of the machine can read
        done = subprocess.run(cmd, input=f"Authorization: Bearer {token}\n", capture_output=True, text=True,
                              check=False)
        code, _, seconds = done.stdout.partition(" ")
        out.append((int(code) if code.isdigit() else 0, 1000 * float(seconds or 0)))
        i += 1


def _start_daemon(source: str, token: str) -> tuple[subprocess.Popen, str, Path]:
    work = Path(tempfile.mkdtemp(prefix="mpox-aism-bench-api-"))
    cfg = {"station_id": "bench", "cameras": [{"name": "bench", "source": source, "loop": True}],
           "outbox": {"path": str(work / "outbox.sqlite3"), "flush_timeout_s": 2},
           "http": {"enabled": True, "port": 0}, "exit_when_done": False}
    (work / "kiosk.yaml").write_text(yaml.safe_dump(cfg))
    log_path = work / "daemon.log"
    env = {**os.environ, "STATE_DIRECTORY": str(work), "MPOX_AISM_API_TOKEN": token}
    with log_path.open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mpox_aism.cli", "run", "--config", str(work / "kiosk.yaml")],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        url = staff_url(log_path.read_text(errors="replace"))
        if url:
            return proc, url, log_path
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"bench api: the daemon did not come up; see {log_path}")


def main(args: argparse.Namespace) -> dict[str, Any]:
    import logging

    from mpox_aism.contracts.machine import describe_machine

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the report

    files = list_images(args.photos)[::50] if Path(args.photos).is_dir() else []
    if not files:
        raise SystemExit(f"bench api: no photos under {args.photos} (give --photos a folder of images)")
    if args.curl and shutil.which("curl") is None:
        raise SystemExit("bench api: --curl needs curl on the PATH (apt-get install curl)")
    photos = [(p.name, p.read_bytes()) for p in files]
    token = os.environ.get("MPOX_AISM_API_TOKEN", "") if args.url else secrets.token_urlsafe(24)
    proc = None
    if args.url:
        url = args.url.rstrip("/")
    else:
        proc, url, log_path = _start_daemon(args.source, token)
        print(f"bench api: daemon at {url}, log {log_path}", flush=True)
    try:
        time.sleep(5 if proc else 0)  # the camera's first frames and the detector's warm-up
        pid = proc.pid if proc is not None else None
        before = _window(url, pid, args.idle_seconds)
        stop, out = threading.Event(), []
        polite = not args.ignore_retry_after
        if args.curl:
            threads = [threading.Thread(target=_curl_client, args=(url, token, files, stop, out, k, args.clients_nice),
                                        daemon=True) for k in range(args.clients)]
        else:
            threads = [threading.Thread(target=_client, args=(url, token, photos, stop, out, k, polite,
                                                              args.clients_nice), daemon=True)
                       for k in range(args.clients)]
        loaded = _window(url, pid, args.seconds, during=lambda: [t.start() for t in threads])
        stop.set()
        for t in threads:
            t.join(70)
        if any(t.is_alive() for t in threads):
            print("bench api: a client is still waiting for an answer: the idle window after is not idle", flush=True)
        after = _window(url, pid, args.idle_seconds)  # idle again: the machine's drift shows in before/after
        limits = _get(f"{url}/healthz")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    idle = (before.fps + after.fps) / 2  # the mean of the idle windows either side of the load
    answered = np.array([ms for s, ms in out if s == 200]) if out else np.zeros(0)
    result = {
        "benchmark": "api", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "mpox-aism bench api " + shlex.join(sys.argv[3:] if sys.argv[1:3] == ["bench", "api"]
                                                         else sys.argv[1:]),
        "machine": asdict(describe_machine()), "clients": args.clients, "seconds": args.seconds, "photos": len(photos),
        "clients_honour_retry_after": not (args.ignore_retry_after or args.curl), "clients_nice": args.clients_nice,
        "clients_kind": "curl" if args.curl else "python",
        "statuses": dict(sorted(Counter(str(s) for s, _ in out).items())),
        "answered_p50_ms": round(float(np.percentile(answered, 50)), 1) if answered.size else None,
        "answered_p99_ms": round(float(np.percentile(answered, 99)), 1) if answered.size else None,
        "answers_per_s": round(answered.size / loaded.seconds, 2),
        "refused_p50_ms": round(float(np.median([ms for s, ms in out if s in (429, 503)])), 1)
        if any(s in (429, 503) for s, _ in out) else None,
        "camera_fps_idle": round(idle, 2), "camera_fps_loaded": loaded.fps,
        "camera_fps_ratio": round(loaded.fps / idle, 3) if idle else None,
        "windows": {"idle_before": asdict(before), "loaded": asdict(loaded), "idle_after": asdict(after)},
        "model_version": limits.get("model_version"),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result
