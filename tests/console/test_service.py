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


def test_the_console_page_over_https_has_a_secure_session_cookie(make_broker, tmp_path):
    """http.tls: the staff page is served over HTTPS and its session cookie is Secure, as on a kiosk."""
    import shutil
    import subprocess

    import httpx
    import pytest

    from mpox_aism.kiosk.web.auth import CSRF_HEADER
    from tests.console.conftest import PASSWORD, console_service

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed; install it with: apt-get install -y openssl")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    broker = make_broker()
    with console_service(tmp_path / "console", broker, "console-tls", tls=(cert, key)) as console:
        assert console.url.startswith("https://")
        with httpx.Client(base_url=console.url, timeout=60, verify=False) as c:  # a self-signed test certificate
            token = c.get("/api/login").json()["csrf"]
            r = c.post("/api/login", json={"name": "dr.console", "password": PASSWORD}, headers={CSRF_HEADER: token})
            assert r.status_code == 200 and "secure" in r.headers["set-cookie"].lower()
