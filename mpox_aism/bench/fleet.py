"""``mpox-aism bench fleet``: N simulated kiosks → a real mosquitto → the console; is anything lost?

Everything on the alert path is the real thing: each kiosk is the kiosk's own ``Outbox`` +
``MqttPublisher`` (its own station id, client id and outbox file), publishing ``Event`` objects (no
images: the privacy settings may withhold them, and the model does not need them) at ``--rate`` events/s;
the broker is mosquitto (persistence on, autosave every second); the console is ``mpox-aism console`` in
a child process, so it can be SIGKILLed and restarted. The kiosks run as threads (two each: paho's loop and
the outbox drain) of shard processes, ``KIOSKS_PER_SHARD`` to a process: paho waits on its sockets with
``select()``, which takes no descriptor numbered 1024 or more, and a kiosk holds about six (its socket, paho's
wake-up pair, its SQLite outbox and journal): one process with 200 kiosks left 31 of them unable ever to
connect. The figure to watch for a shard that cannot keep up is ``achieved_rate`` against ``rate``.

Faults: ``--restart-console`` SIGKILLs the console at 2/3 of the run and starts it again ``--console-down-s``
later (5 s: systemd's ``RestartSec``): with
its persistent session and acknowledge-after-commit, ``lost`` must be 0 (what it had committed but not
acknowledged comes back as ``duplicates``). ``--restart-broker`` stops mosquitto at 1/3 of the run with
``--broker-signal`` (default ``kill``) and starts it again on the same port. SIGTERM is a clean
restart: mosquitto saves its state first, so ``lost`` must be 0. SIGKILL is a crash, and what it shows
is where the guarantee ends: a kiosk deletes an alert from its outbox at the broker's PUBACK, so the
outbox protects only what the broker had not yet accepted; what the broker had accepted, not yet got
the console's PUBACK for, and not yet autosaved is gone (and so is the console's session, if it had never
been saved: then nothing is queued for the console until it subscribes again). ``lost`` > 0 there
measures the broker's durability window, not a console bug; a broker that must survive a crash needs
persistence written before it acknowledges (or a bridge/cluster), which mosquitto does not offer.

``lost`` is counted from the console's store (the published ids missing from it), never assumed.
``ingest_*_ms``: the event's ``time`` (made by the kiosk) → the console's commit (``stored_at``), same
clock. ``console_cpu_percent``: the console processes' CPU time over the run's wall time (100 = one core).
"""

from __future__ import annotations

import argparse
import datetime as dt
import heapq
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import mpox_aism
from mpox_aism.bench.mosquitto import Mosquitto
from mpox_aism.console.store import ConsoleStore
from mpox_aism.contracts.machine import describe_machine
from mpox_aism.kiosk.events import NAMESPACE, Event, FrameTime
from mpox_aism.kiosk.mqtt import MqttPublisher
from mpox_aism.kiosk.outbox import Outbox
from mpox_aism.kiosk.status import KioskStatus, MqttStatus, OutboxStatus

ROOT = "mpox-aism"
KIOSKS_PER_SHARD = 100  # ~600 descriptors: under select()'s 1024 with room for the process's own
SHARD_START_S = 15.0  # at most this for the shards' kiosks to connect before the common start time
PROJECT = Path(mpox_aism.__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="N simulated kiosks publish through a real mosquitto to the console; "
                                "report lost, duplicates and ingest latency.", add_help=add_help)
    p.add_argument("--kiosks", type=int, required=True, help="simulated kiosks (distinct stations)")
    p.add_argument("--seconds", type=float, required=True, help="how long the kiosks publish")
    p.add_argument("--rate", type=float, default=1.0, help="events per second per kiosk")
    p.add_argument("--json", default=None, help="write the result here")
    p.add_argument("--restart-broker", action="store_true", help="stop mosquitto at 1/3 of the run and restart it")
    p.add_argument("--broker-signal", choices=("term", "kill"), default="kill",
                   help="how --restart-broker stops it: term (clean, saves state) or kill (a crash)")
    p.add_argument("--restart-console", action="store_true", help="SIGKILL the console at 2/3 and restart it")
    p.add_argument("--console-down-s", type=float, default=5.0,
                   help="--restart-console: seconds the console stays dead before it is started again (5: the "
                   "unit's RestartSec)")
    p.add_argument("--broker-max-queued", type=int, default=0,
                   help="mosquitto's max_queued_messages (per disconnected session; 0 = no limit). Its default, "
                   "1000, drops what a console that is away longer gets beyond it: try it with --restart-console")
    p.add_argument("--drain-timeout", type=float, default=120.0,
                   help="after publishing, seconds to wait for every outbox to empty and the console to store all")
    p.add_argument("--workdir", default=None, help="keep the broker, console and outbox files here (default: temp)")
    return p


def synthetic_event(station_id: str, seq: int, run_id: str, now: float | None = None) -> Event:
    """A real ``Event`` as a kiosk makes it, without images (what a kiosk sends when privacy withholds them)."""
    t = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC).isoformat(timespec="milliseconds")
    return Event(event_id=str(uuid.uuid5(NAMESPACE, f"{station_id}|fleet|{run_id}|{seq}")), station_id=station_id,
                 camera="desk", track_id=seq + 1, decision="suspected", label="mpox", probability=0.91,
                 probabilities={"mpox": 0.91, "chickenpox": 0.05, "normal": 0.04}, region_kinds=["hand"],
                 n_crops=3, unfamiliar_crops=0, model_version="fleet-bench", time=t,
                 frame_time=FrameTime(first=t, last=t), final=True)


def kiosk_status(station_id: str, run_id: str, pub: MqttPublisher) -> KioskStatus:
    """The retained status a kiosk sends (no cameras: the simulated kiosk has none)."""
    s, ob = pub.stats(), pub.outbox.stats()
    return KioskStatus(down=[], station_id=station_id, run_id=run_id, model_version="fleet-bench", cameras={},
                       mqtt=MqttStatus(configured=True, connected=bool(s["connected"]), published=int(s["published"]),
                                       last_error=s["last_error"]),
                       outbox=OutboxStatus(depth=int(ob["depth"] or 0), dropped=int(ob["dropped"] or 0),
                                           oldest_age_s=ob["oldest_age_s"], unsaved=0, unsaved_dropped=0,
                                           write_error=None))


@dataclass
class SimKiosk:
    station_id: str
    outbox: Outbox
    publisher: MqttPublisher
    topic: str
    put: list[str] = field(default_factory=list)  # event ids the outbox accepted

    def emit(self, seq: int, run_id: str) -> None:
        event = synthetic_event(self.station_id, seq, run_id)
        self.outbox.put(self.topic, event.wire())  # exactly what the kiosk's EventSink does
        self.publisher.wake()
        self.put.append(event.event_id)


@dataclass
class ShardResult:
    """What one shard of kiosks published: the event ids their outboxes accepted, and whether they drained."""

    put: list[str]
    publish_s: float
    drained: bool
    dropped: int


def run_shard(first: int, count: int, *, port: int, work: Path, run_id: str, rate: float, seconds: float,
              start_at: float, drain_timeout: float) -> ShardResult:
    """Kiosks ``fleet-<first>`` … in this process: connect, publish from ``start_at`` (epoch s) for ``seconds``
    (a retained status every 5 s, as kiosks send theirs), wait until every outbox is empty, then keep the
    connections until ``work/close`` exists (the parent counts who is online first)."""
    kiosks: list[SimKiosk] = []
    for i in range(first, first + count):
        station = f"fleet-{i:03d}"
        ob = Outbox(work / "kiosks" / f"{station}.sqlite3")
        pub = MqttPublisher(ob, host="127.0.0.1", port=port, client_id=f"mpox-aism-{station}",
                            topic_prefix=f"{ROOT}/{station}", reconnect_max_s=2)
        pub.start()
        kiosks.append(SimKiosk(station, ob, pub, f"{ROOT}/{station}/events"))
    wait_for(lambda: all(k.publisher.connected for k in kiosks), 60)
    time.sleep(max(0.0, start_at - time.time()))
    pub_t0 = time.monotonic()
    # one scheduler for every kiosk: due times in a heap, phases spread so puts do not bunch
    period = 1.0 / rate
    due = [(pub_t0 + period * (j / count), j, 0) for j in range(count)]
    heapq.heapify(due)
    next_status = pub_t0
    while due:
        when, j, seq = due[0]
        if when - pub_t0 >= seconds:
            break
        delay = when - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        heapq.heapreplace(due, (when + period, j, seq + 1))
        kiosks[j].emit(seq, run_id)
        if time.monotonic() >= next_status:
            next_status = time.monotonic() + 5.0
            for k in kiosks:
                k.publisher.publish_status("status", kiosk_status(k.station_id, run_id, k.publisher)
                                           .model_dump(mode="json"))
    publish_s = time.monotonic() - pub_t0
    drained = wait_for(lambda: not any(k.outbox.depth() for k in kiosks), drain_timeout, 0.5)
    result = ShardResult([e for k in kiosks for e in k.put], publish_s, drained,
                         sum(int(k.outbox.stats()["dropped"] or 0) for k in kiosks))
    (work / "shards" / f"{first}.json").write_text(json.dumps(asdict(result)))
    wait_for(lambda: (work / "close").exists(), drain_timeout + 600, 0.5)
    for k in kiosks:
        k.publisher.close(timeout=2)
        k.outbox.close()
    return result


def _shard_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description="one shard of bench fleet's kiosks (started by bench fleet)")
    for name, kind in (("--first", int), ("--count", int), ("--port", int), ("--work", Path), ("--run-id", str),
                       ("--rate", float), ("--seconds", float), ("--start-at", float), ("--drain-timeout", float)):
        p.add_argument(name, type=kind, required=True)
    a = p.parse_args(argv)
    run_shard(a.first, a.count, port=a.port, work=a.work, run_id=a.run_id, rate=a.rate, seconds=a.seconds,
              start_at=a.start_at, drain_timeout=a.drain_timeout)


class ConsoleProcess:
    """``mpox-aism console`` as a child process; its CPU time is summed over restarts."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.cpu_s_done = 0.0  # CPU seconds of console processes that have ended
        self._last_cpu = 0.0
        self.rss_mb_max = 0.0
        self.rss_mb_last = 0.0

    def start(self) -> None:
        with self.log.open("ab") as f:
            self.proc = subprocess.Popen([sys.executable, "-m", "mpox_aism.cli", "console", "--config",
                                          str(self.config)], stdout=f, stderr=subprocess.STDOUT, env=child_env())
        self._last_cpu = 0.0

    def sample(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return
        self._last_cpu = (int(stat[11]) + int(stat[12])) / CLK_TCK  # utime + stime
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                self.rss_mb_last = int(line.split()[1]) / 1024
                self.rss_mb_max = max(self.rss_mb_max, self.rss_mb_last)

    def stop(self, sig: int) -> int | None:
        if self.proc is None:
            return None
        self.sample()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.cpu_s_done += self._last_cpu
        self._last_cpu = 0.0
        return self.proc.returncode

    def cpu_s(self) -> float:
        return self.cpu_s_done + self._last_cpu

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


def child_env() -> dict[str, str]:
    """This process's environment with this checkout first on the path: the children run the same code."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))}


def wait_for(pred: Any, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())


def read_store(path: Path) -> ConsoleStore | None:
    return ConsoleStore(path, readonly=True) if path.exists() else None


def console_subscribed(path: Path, since: float) -> bool:
    """The console has (re)subscribed after ``since`` (it records each SUBACK in its store)."""
    if not path.exists():
        return False
    try:
        with ConsoleStore(path, readonly=True) as s:
            at = s.meta("subscribed_at")
    except Exception:  # the console is still creating its tables
        return False
    return isinstance(at, float) and at >= since


def write_console_config(work: Path, broker: Mosquitto) -> tuple[Path, Path]:
    store = work / "console.sqlite3"
    cfg = {"mqtt": {"url": broker.url, "client_id": "mpox-aism-console-bench", "topic_root": ROOT},
           "store": {"path": str(store)}, "http": {"enabled": False}}  # the page would only share the cores
    path = work / "console.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, store


def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.kiosks < 1 or args.seconds <= 0 or args.rate <= 0:
        raise ValueError("--kiosks, --seconds and --rate must be positive")
    if not sys.platform.startswith("linux"):
        raise SystemExit("bench fleet: needs Linux (/proc)")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="mpox-aism-fleet-"))
    work.mkdir(parents=True, exist_ok=True)
    broker = Mosquitto(work / "broker", max_queued_messages=args.broker_max_queued).start()
    cfg_path, store_path = write_console_config(work, broker)
    console = ConsoleProcess(cfg_path, work / "console.log")
    run_id = uuid.uuid4().hex[:8]
    shards: list[subprocess.Popen[bytes]] = []
    restarts: list[dict[str, Any]] = []
    print(f"fleet: {args.kiosks} kiosks × {args.rate:g}/s for {args.seconds:g} s; broker {broker.url}; "
          f"work {work}", flush=True)
    t_start = time.monotonic()
    try:
        t0 = time.time()
        console.start()
        if not wait_for(lambda: console_subscribed(store_path, t0) or console.proc.poll() is not None, 60):
            raise RuntimeError(f"the console did not subscribe within 60 s:\n{console.tail()}")
        if console.proc is not None and console.proc.poll() is not None:
            raise RuntimeError(f"the console exited with {console.proc.returncode}:\n{console.tail()}")
        (work / "shards").mkdir(exist_ok=True)
        start_at = time.time() + min(SHARD_START_S, 2.0 + 0.1 * args.kiosks)  # time to connect every kiosk
        env = child_env()
        for first in range(0, args.kiosks, KIOSKS_PER_SHARD):
            count = min(KIOSKS_PER_SHARD, args.kiosks - first)
            with (work / f"shard-{first}.log").open("ab") as f:
                shards.append(subprocess.Popen(
                    [sys.executable, "-m", "mpox_aism.bench.fleet", "--first", str(first), "--count", str(count),
                     "--port", str(broker.port), "--work", str(work), "--run-id", run_id, "--rate", str(args.rate),
                     "--seconds", str(args.seconds), "--start-at", str(start_at),
                     "--drain-timeout", str(args.drain_timeout)], stdout=f, stderr=subprocess.STDOUT, env=env))

        stop_sampling = threading.Event()

        def sampler() -> None:
            while not stop_sampling.wait(0.5):
                console.sample()
        threading.Thread(target=sampler, name="sampler", daemon=True).start()

        faults: list[tuple[float, str]] = []
        if args.restart_broker:
            faults.append((args.seconds / 3, "broker"))
        if args.restart_console:
            faults.append((2 * args.seconds / 3, "console"))
        time.sleep(max(0.0, start_at - time.time()))
        pub_t0 = time.monotonic()

        def fault_runner() -> None:
            for at, what in faults:
                time.sleep(max(0.0, pub_t0 + at - time.monotonic()))
                t = round(time.monotonic() - pub_t0, 2)
                if what == "broker":
                    sig = signal.SIGTERM if args.broker_signal == "term" else signal.SIGKILL
                    broker.restart(sig)
                    restarts.append({"what": "broker", "signal": sig.name, "at_s": t})
                else:
                    rc = console.stop(signal.SIGKILL)
                    time.sleep(args.console_down_s)
                    console.start()
                    restarts.append({"what": "console", "signal": "SIGKILL", "at_s": t, "exit": rc,
                                     "down_s": args.console_down_s})
                print(f"  t={t:g}s: restarted the {what}", flush=True)
        fault_runner()  # the shards publish meanwhile
        t_drain = pub_t0 + args.seconds  # drain_s: from the end of publishing
        n_shards = len(shards)
        wait_for(lambda: len(list((work / "shards").glob("*.json"))) == n_shards
                 or any(p.poll() not in (None, 0) for p in shards), args.seconds + 2 * args.drain_timeout, 0.5)
        results = [ShardResult(**json.loads(f.read_text())) for f in sorted((work / "shards").glob("*.json"))]
        if len(results) != n_shards:
            raise RuntimeError(f"{n_shards - len(results)} kiosk shard(s) failed; see {work}/shard-*.log")
        publish_s = max(r.publish_s for r in results)
        put_ids = {e for r in results for e in r.put}

        def drained() -> bool:
            s = read_store(store_path)
            if s is None:
                return False
            with s:
                return s.counts().events >= len(put_ids) and put_ids <= s.event_ids()
        complete = all(r.drained for r in results) and wait_for(drained, args.drain_timeout, 0.5)
        drain_s = time.monotonic() - t_drain
        console.sample()
        with ConsoleStore(store_path, readonly=True) as s:  # before the kiosks close (and say offline)
            online_at_end = sum(1 for st in s.stations() if st.online)
        wall_s = time.monotonic() - t_start
        stop_sampling.set()
    finally:
        (work / "close").touch()  # the shards close their kiosks (and say offline) and exit
        for p in shards:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        exit_code = console.stop(signal.SIGTERM)
        broker.stop(signal.SIGTERM)

    with ConsoleStore(store_path, readonly=True) as s:
        stored = s.event_ids()
        counts = s.counts()
        lat = np.array(s.ingest_latencies_ms()) if stored else np.array([0.0])
        stations = s.stations()
    received = len(put_ids & stored)
    machine = asdict(describe_machine())
    result: dict[str, Any] = {
        "benchmark": "fleet", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "mpox-aism bench fleet " + shlex.join(sys.argv[3:] if sys.argv[1:3] == ["bench", "fleet"]
                                                           else sys.argv[1:]),
        "machine": machine, "kiosks": args.kiosks, "seconds": args.seconds, "rate": args.rate,
        "published": len(put_ids), "received": received, "duplicates": counts.duplicates,
        "lost": len(put_ids - stored), "unexpected": len(stored - put_ids), "invalid": counts.invalid,
        "conflicts": counts.conflicts, "complete": complete,
        "achieved_rate": round(len(put_ids) / publish_s / args.kiosks, 3) if publish_s else None,
        "ingest_p50_ms": round(float(np.percentile(lat, 50)), 1),
        "ingest_p99_ms": round(float(np.percentile(lat, 99)), 1),
        "ingest_max_ms": round(float(lat.max()), 1),
        "console_rss_mb": round(console.rss_mb_max, 1),
        "console_cpu_percent": round(100 * console.cpu_s() / wall_s, 1),
        "kiosk_outbox_dropped": sum(r.dropped for r in results), "kiosk_shards": len(results),
        "stations_seen": len(stations), "stations_online_at_end": online_at_end,
        "stations_with_status": sum(1 for st in stations if st.status is not None),
        "restarts": restarts, "broker_signal": args.broker_signal if args.restart_broker else None,
        "broker_max_queued": args.broker_max_queued,
        "drain_s": round(drain_s, 2), "console_exit_code": exit_code, "workdir": str(work),
    }
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine",)}, indent=1), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":  # a shard of kiosks, started by main()
    _shard_main(sys.argv[1:])
