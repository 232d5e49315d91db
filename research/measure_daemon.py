"""Measure the daemon as a process: frame → MQTT event latency and RSS over time.

Starts a private mosquitto on a free port, subscribes to the events, runs `mpox-aism run` on a
looping source for --minutes, samples the daemon's RSS every 5 s, then stops it with SIGTERM.
Latency of an event = its arrival at the subscriber − the capture time of the last frame that
contributed to the decision (`frame_time.last`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import yaml

from mpox_aism.bench.soak import proc_sample


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--source", required=True)
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--json", required=True)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mpox-measure-"))
    port = free_port()
    (tmp / "m.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    broker = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(tmp / "m.conf")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    arrivals: list[tuple[float, dict]] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.on_connect = lambda cl, *_: cl.subscribe("mpox-aism/measure/events", qos=1)
    c.on_message = lambda _c, _u, m: arrivals.append((time.time(), json.loads(m.payload)))
    c.connect("127.0.0.1", port)
    c.loop_start()
    cfg = {"station_id": "measure", "cameras": [{"name": "cam", "source": a.source, "loop": True, "hold_frames": 5}],
           "mqtt": {"url": f"mqtt://127.0.0.1:{port}"}, "outbox": {"path": str(tmp / "outbox.sqlite3")},
           "http": {"enabled": False}, "exit_when_done": False}
    (tmp / "k.yaml").write_text(yaml.safe_dump(cfg))
    d = subprocess.Popen([sys.executable, "-m", "mpox_aism.cli", "run", "--config", str(tmp / "k.yaml"),
                          "--summary", str(tmp / "summary.json")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = []
    t0 = time.time()
    while time.time() - t0 < a.minutes * 60 and d.poll() is None:
        samples.append({"t_s": round(time.time() - t0, 1), "rss_mb": proc_sample(d.pid)["rss_mb"]})
        time.sleep(5)
    d.send_signal(signal.SIGTERM)
    t_stop = time.time()
    rc = d.wait(timeout=60)
    stop_s = time.time() - t_stop
    time.sleep(1)
    c.loop_stop()
    broker.terminate()
    lat = np.array([1000 * (t - dt.datetime.fromisoformat(e["frame_time"]["last"]).timestamp()) for t, e in arrivals])
    summary = json.loads((tmp / "summary.json").read_text()) if (tmp / "summary.json").is_file() else {}
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "source": a.source, "minutes": a.minutes,
        "events_received": len(arrivals), "exit_code": rc, "stop_seconds": round(stop_s, 2),
        "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
                       "p99": round(float(np.percentile(lat, 99)), 1) if len(lat) else None},
        "rss_mb": {"first": samples[0]["rss_mb"] if samples else None,
                   "after_60s": next((s["rss_mb"] for s in samples if s["t_s"] >= 60), None),
                   "last": samples[-1]["rss_mb"] if samples else None},
        "summary": {k: summary.get(k) for k in ("frames", "events", "published", "pending", "decisions")},
        "samples": samples,
    }
    Path(a.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))


if __name__ == "__main__":
    main()
