"""Daemon start-up time and memory with a given backend, measured from outside the process.

Runs ``mpox-aism run --keep-serving`` on the embedded demo (or ``--config``), with the backend
forced by a temporary config, and records: seconds from exec to the "mpox-aism running" line,
seconds until ``/healthz`` answers, RSS then, RSS after ``--settle`` seconds of serving, and
whether torch's shared library is mapped into the process (``/proc/PID/maps``: what the process
really carries, not what a test imported). Then SIGTERM, and the exit code.

    .venv/bin/python -m research.measure_startup --backend onnxruntime --json runs/startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def torch_mapped(pid: int) -> bool:
    return "libtorch_cpu" in Path(f"/proc/{pid}/maps").read_text()


def measure(backend: str, config: str | None, settle_s: float, images: bool) -> dict:
    from mpox_aism.kiosk.config import load_config
    from mpox_aism.kiosk.run import demo_config

    cfg = (load_config(config) if config else demo_config()).model_dump(mode="json")
    cfg["classifier"]["backend"] = backend
    cfg["http"]["port"] = 0
    cfg["exit_when_done"] = False
    cfg["privacy"]["publish_crops"] = images  # images on: Grad-CAM (torch) is loaded at the first flagged crop
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "kiosk.yaml")
        path.write_text(yaml.safe_dump(cfg))
        env = {**os.environ, "STATE_DIRECTORY": tmp}
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "mpox_aism.cli", "run", "--config", str(path)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        try:
            assert proc.stdout is not None
            line = ""
            while "mpox-aism running" not in line:
                line = proc.stdout.readline()
                if not line and proc.poll() is not None:
                    raise SystemExit(f"daemon exited with {proc.returncode} before it was running")
            t_running = time.perf_counter() - t0
            url = re.search(r"staff page (\S+)", line)
            t_healthy = None
            if url:
                while t_healthy is None:
                    try:
                        urllib.request.urlopen(url.group(1) + "healthz", timeout=2).read()
                        t_healthy = time.perf_counter() - t0
                    except OSError:
                        time.sleep(0.05)
            at_ready = rss_mb(proc.pid), torch_mapped(proc.pid)
            time.sleep(settle_s)
            settled = rss_mb(proc.pid), torch_mapped(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=60)
    return {"backend": backend, "config": config or "embedded demo", "publish_crops": images,
            "running_s": round(t_running, 2),
            "healthz_s": None if t_healthy is None else round(t_healthy, 2),
            "rss_mb_ready": round(at_ready[0], 1), "torch_mapped_ready": at_ready[1],
            "settle_s": settle_s, "rss_mb_settled": round(settled[0], 1), "torch_mapped_settled": settled[1],
            "exit_code": rc}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "torch", "auto"))
    p.add_argument("--config", default=None, help="kiosk YAML (default: the embedded demo)")
    p.add_argument("--settle", type=float, default=20.0, help="seconds to keep serving before the second sample")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-images", action="store_true", help="privacy.publish_crops: false (no Grad-CAM)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    runs = [measure(a.backend, a.config, a.settle, not a.no_images) for _ in range(a.repeat)]
    doc = {"runs": runs, "running_s_median": sorted(r["running_s"] for r in runs)[len(runs) // 2]}
    text = json.dumps(doc, indent=2)
    print(text)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
