"""Outbox: order, ack, bound (count and age, persistent `dropped`), threads, and a SIGKILL mid-write."""

from __future__ import annotations

import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

from mpox_aism.kiosk.outbox import Outbox

REPO = Path(__file__).resolve().parents[2]


def test_put_pending_ack_in_order(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    ids = [ob.put(f"t/{i}", f"p{i}".encode()) for i in range(5)]
    assert ids == sorted(ids)
    assert [m.payload for m in ob.pending(10)] == [b"p0", b"p1", b"p2", b"p3", b"p4"]
    assert [m.id for m in ob.pending(2, after_id=ids[1])] == ids[2:4]
    m = ob.pending(1)[0]
    assert (m.topic, m.qos, m.retain, m.attempts) == ("t/0", 1, False, 0)
    ob.note_attempts([m.id])
    assert ob.pending(1)[0].attempts == 1
    ob.ack(ids[0])
    ob.ack(ids[0])  # acking twice (a duplicate PUBACK after a re-send) is harmless
    ob.ack_many(ids[2:4])
    assert [m.id for m in ob.pending(10)] == [ids[1], ids[4]]
    assert ob.depth() == 2
    ob.close()


def test_discard_counts_as_dropped(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as ob:
        a = ob.put("t", b"x")
        assert ob.discard(a) is True
        assert ob.discard(a) is False
        assert ob.stats() == {"depth": 0, "dropped": 1, "oldest_age_s": None}


def test_ids_never_reused_after_ack_and_reopen(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as ob:
        last = ob.put("t", b"x")
        ob.ack(last)
    with Outbox(tmp_path / "o.db") as ob:
        assert ob.put("t", b"y") > last  # AUTOINCREMENT: order by id stays put order


def test_bound_drops_oldest_and_counts_persistently(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", max_messages=3)
    for i in range(5):
        ob.put("t", f"e{i}".encode())
    st = ob.stats()
    assert st["depth"] == 3 and st["dropped"] == 2
    assert [m.payload for m in ob.pending(10)] == [b"e2", b"e3", b"e4"]  # the oldest went
    ob.close()
    with Outbox(tmp_path / "o.db", max_messages=3) as ob:
        assert ob.stats()["dropped"] == 2  # the counter is in the file, not in memory


def test_bound_by_age(tmp_path: Path) -> None:
    now = [1000.0]
    ob = Outbox(tmp_path / "o.db", max_age_s=60, clock=lambda: now[0])
    ob.put("t", b"old")
    now[0] += 30
    ob.put("t", b"newer")
    assert ob.stats()["oldest_age_s"] == 30
    now[0] += 45  # "old" is 75 s old now, "newer" 45 s
    assert ob.expire() == 1
    assert [m.payload for m in ob.pending(10)] == [b"newer"]
    now[0] += 100
    ob.put("t", b"fresh")  # put applies the bound too
    st = ob.stats()
    assert (st["depth"], st["dropped"]) == (1, 2)
    ob.close()


def test_durability_settings_and_private_file(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "sub" / "o.db")
    assert ob._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ob._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert stat.S_IMODE((tmp_path / "sub" / "o.db").stat().st_mode) == 0o600
    ob.close()


def test_thread_safe_puts(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    got: list[int] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        for i in range(25):
            mid = ob.put("t", f"{k}-{i}".encode())
            with lock:
                got.append(mid)
            if i % 5 == 0:
                ob.pending(3)
                ob.stats()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 100 and ob.depth() == 100
    # each thread's own messages keep their order
    for k in range(4):
        mine = [m.payload for m in ob.pending(1000) if m.payload.startswith(f"{k}-".encode())]
        assert mine == [f"{k}-{i}".encode() for i in range(25)]
    ob.close()


WRITER = r"""
import sys
from mpox_aism.kiosk.outbox import Outbox
ob = Outbox(sys.argv[1])
i = 0
while True:  # until SIGKILLed
    mid = ob.put("mpox/k/alert", b"event-%d" % i)
    print(mid, i, flush=True)  # printed only after put() returned, i.e. after the commit
    i += 1
"""


def test_committed_messages_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    reported: dict[int, int] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            mid, i = map(int, line.split())
            reported[mid] = i
            if len(reported) >= 40:
                proc.send_signal(signal.SIGKILL)  # mid-stream: it is writing the next one right now
                break
    finally:
        proc.kill()
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    with Outbox(db) as ob:
        on_disk = {m.id: m.payload for m in ob.pending(10_000)}
    for mid, i in reported.items():
        assert on_disk.get(mid) == b"event-%d" % i
    # and the file is a sound database, not just readable rows
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
