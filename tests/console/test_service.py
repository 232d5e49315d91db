"""``mpox-aism console`` as a real process: SIGKILLed while kiosks publish, restarted, nothing lost."""

from __future__ import annotations

import signal
import threading

from tests.console.conftest import read
from tests.kiosk.conftest import wait_until


def test_console_sigkilled_while_kiosks_publish_loses_nothing(make_broker, kiosks, console_child):
    broker = make_broker()
    child = console_child(broker).start()
    fleet = [kiosks(broker, s) for s in ("s1", "s2", "s3")]
    stop = threading.Event()

    def publish() -> None:
        while not stop.is_set():
            for k in fleet:
                k.emit()
            stop.wait(0.05)

    t = threading.Thread(target=publish)
    t.start()
    try:
        wait_until(lambda: child.store.exists() and read(child.store).counts().events >= 20, 60,
                   what="20 events stored before the kill")
        assert child.stop(signal.SIGKILL) == -signal.SIGKILL
        killed_with = read(child.store).counts().events
        wait_until(lambda: sum(len(k.ids) for k in fleet) >= killed_with + 30, 60,
                   what="30 more events published while the console is dead")
        child.start()
        stop.wait(1.0)
    finally:
        stop.set()
        t.join()
    want = {i for k in fleet for i in k.ids}
    wait_until(lambda: all(k.outbox.depth() == 0 for k in fleet), 60, what="every outbox empty")
    wait_until(lambda: want <= read(child.store).event_ids(), 60,
               what=f"all {len(want)} events in the console's store")
    with read(child.store) as s:
        assert s.event_ids() == want  # nothing lost, nothing extra
        assert s.counts().invalid == 0 and s.counts().conflicts == 0
    assert child.stop(signal.SIGTERM) == 0, child.tail()
    log = child.tail(20000)
    assert "session resumed" in log  # the restart found its session on the broker
