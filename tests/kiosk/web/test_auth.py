"""Staff log-in in front of every staff route: sessions, CSRF, lock-out, roles, logout, the audit trail."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx", reason="httpx not installed: pip install httpx")

from argon2 import PasswordHasher  # noqa: E402

from mpox_aism.kiosk.accounts import Accounts  # noqa: E402
from mpox_aism.kiosk.config import SessionLimits  # noqa: E402
from mpox_aism.kiosk.web.auth import CSRF_HEADER, is_public  # noqa: E402

FAST = PasswordHasher(time_cost=1, memory_cost=1024)  # tests only
PASSWORDS = {"rev": "reviewer password 1", "view": "viewer password 1", "boss": "admin password 123"}


@pytest.fixture(scope="module")
def classifier() -> Iterator[Any]:
    from mpox_aism.inference.backends import load_classifier
    from tests.conftest import default_model_or_skip

    with load_classifier("onnxruntime", default_model_or_skip()) as clf:
        yield clf


@pytest.fixture(scope="module")
def site(classifier: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, Accounts]]:
    from mpox_aism.kiosk.web.app import create_app
    from mpox_aism.kiosk.web.server import ServerThread
    from mpox_aism.kiosk.web.staff import add_staff_routes

    d = tmp_path_factory.mktemp("auth")
    accounts = Accounts(d / "staff.sqlite3", hasher=FAST)
    accounts.add("rev", PASSWORDS["rev"], "reviewer")
    accounts.add("view", PASSWORDS["view"], "viewer")
    accounts.add("boss", PASSWORDS["boss"], "admin")
    app = create_app(classifier=classifier, token="machine-token")
    events = [{"event_id": "ev-1", "decision": "suspected", "label": "mpox", "probability": 0.9,
               "time": "2026-01-01T10:00:00.000+00:00", "camera": "gate1"}]
    add_staff_routes(app, events_provider=lambda: events, frame_provider=lambda _n: b"\xff\xd8jpeg",
                     cameras=lambda: ["gate1"], reviews_path=d / "reviews.sqlite3", accounts=accounts,
                     sessions=SessionLimits(max_failures=3, window_s=600, lockout_s=600))
    with ServerThread(app) as s:
        yield s.url, app, accounts


def login(url: str, name: str, password: str | None = None) -> tuple[Any, str]:
    c = httpx.Client(base_url=url, timeout=60, follow_redirects=False)
    token = c.get("/api/login").json()["csrf"]
    r = c.post("/api/login", json={"name": name, "password": password or PASSWORDS[name]},
               headers={CSRF_HEADER: token})
    assert r.status_code == 200, r.text
    return c, r.json()["csrf"]


def test_every_staff_route_refuses_a_request_without_a_session(site) -> None:
    """Walks the app's routes, so a route added later cannot be forgotten."""
    url, app, _ = site
    checked = 0
    with httpx.Client(base_url=url, timeout=60, follow_redirects=False) as anon:
        for route in app.routes:
            path = getattr(route, "path", "")
            if not path or is_public(path):
                continue
            concrete = path.replace("{event_id}", "ev-1").replace("{name}", "gate1").replace(
                "{label}", "mpox").replace("{index}", "0")
            for method in sorted(getattr(route, "methods", {"GET"}) - {"HEAD"}):
                r = anon.request(method, concrete)
                assert r.status_code in (401, 303), (method, concrete, r.status_code)
                if r.status_code == 303:
                    assert r.headers["location"] == "/login"
                checked += 1
    assert checked >= 10  # pages, events, reviews, frames, cameras, references, audit, upload, logout, session


def test_cookie_flags_and_session_info(site) -> None:
    url, _, _ = site
    c = httpx.Client(base_url=url, timeout=60)
    token = c.get("/api/login").json()["csrf"]
    r = c.post("/api/login", json={"name": "rev", "password": PASSWORDS["rev"]}, headers={CSRF_HEADER: token})
    cookie = r.headers["set-cookie"].lower()
    assert "mpox_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert c.get("/api/session").json()["user"] == "rev" and c.get("/").status_code == 200


def test_login_needs_its_csrf_token(site) -> None:
    url, _, _ = site
    with httpx.Client(base_url=url, timeout=60) as c:
        c.get("/api/login")
        r = c.post("/api/login", json={"name": "rev", "password": PASSWORDS["rev"]})
        assert r.status_code == 403


def test_state_changes_need_the_session_csrf_token(site) -> None:
    url, _, _ = site
    c, csrf = login(url, "rev")
    body = {"action": "reviewed", "note": ""}
    assert c.post("/api/events/ev-1/review", json=body).status_code == 403  # a forged cross-site POST
    r = c.post("/api/events/ev-1/review", json=body, headers={CSRF_HEADER: csrf})
    assert r.status_code == 200 and r.json()["by"] == "rev"  # the account, not a typed name


def test_a_viewer_may_look_but_not_review_or_upload(site) -> None:
    url, _, _ = site
    c, csrf = login(url, "view")
    assert c.get("/api/events").status_code == 200
    r = c.post("/api/events/ev-1/review", json={"action": "acknowledged"}, headers={CSRF_HEADER: csrf})
    assert r.status_code == 403 and "reviewer" in r.json()["detail"]
    r = c.post("/api/diagnose", files={"image": ("x.jpg", b"\xff\xd8", "image/jpeg")}, headers={CSRF_HEADER: csrf})
    assert r.status_code == 403
    assert c.get("/api/audit.csv").status_code == 403  # admins only


def test_wrong_passwords_lock_the_name_out(site) -> None:
    url, _, accounts = site
    accounts.add("target", "target password 1", "viewer")
    # from an address of its own: the lock-out covers the guesser's address too, not the other tests'
    with httpx.Client(base_url=url, timeout=60, transport=httpx.HTTPTransport(local_address="127.0.0.9")) as c:
        for _ in range(3):
            token = c.get("/api/login").json()["csrf"]
            r = c.post("/api/login", json={"name": "target", "password": "guess guess guess"},
                       headers={CSRF_HEADER: token})
            assert r.status_code == 401 and r.json()["detail"] == "wrong name or password"
        token = c.get("/api/login").json()["csrf"]
        r = c.post("/api/login", json={"name": "target", "password": "target password 1"}, headers={CSRF_HEADER: token})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 60  # even the right password, for a while
    other, _ = login(url, "rev")  # another address and name are not affected
    other.close()


def test_logout_ends_the_session_and_disable_ends_it_too(site) -> None:
    url, _, accounts = site
    c, csrf = login(url, "rev")
    assert c.post("/api/logout", headers={CSRF_HEADER: csrf}).status_code == 200
    assert c.get("/api/events").status_code == 401
    accounts.add("leaver", "leaver password 1", "reviewer")
    c2, _ = login(url, "leaver", "leaver password 1")
    assert c2.get("/api/events").status_code == 200
    accounts.disable("leaver")  # by `mpox-aism users disable`, another process
    assert c2.get("/api/events").status_code == 401


def test_uploads_and_reviews_are_in_the_audit_trail(site) -> None:
    from tests.kiosk.web.test_api import photo

    url, _, _ = site
    c, csrf = login(url, "rev")
    name, data = photo("mpox")
    r = c.post("/api/diagnose", files={"image": (name, data, "image/jpeg")}, headers={CSRF_HEADER: csrf})
    assert r.status_code == 200 and r.json()["label"]
    c.post("/api/events/ev-1/review", json={"action": "acknowledged", "note": "seen"}, headers={CSRF_HEADER: csrf})
    boss, _ = login(url, "boss")
    csv_text = boss.get("/api/audit.csv").text
    assert "rev,upload," in csv_text and "rev,acknowledged,ev-1,seen" in csv_text and "rev,login," in csv_text


def test_the_machine_api_keeps_its_bearer_token(site) -> None:
    url, _, _ = site
    with httpx.Client(base_url=url, timeout=60) as c:
        assert c.post("/v1/diagnose", files={"image": ("x.jpg", b"x", "image/jpeg")}).status_code == 401
        assert c.get("/healthz").status_code == 200  # monitoring needs no login


def test_first_admin_from_the_credential(tmp_path: Path, monkeypatch) -> None:
    from mpox_aism.kiosk.web.server import staff_accounts

    monkeypatch.setenv("MPOX_AISM_ADMIN_PASSWORD", "first admin password")
    accounts = staff_accounts(tmp_path / "staff.sqlite3")
    assert [(u.name, u.role) for u in accounts.users()] == [("admin", "admin")]
    monkeypatch.setenv("MPOX_AISM_ADMIN_PASSWORD", "another password 12")
    assert len(staff_accounts(tmp_path / "staff.sqlite3").users()) == 1  # only when there is none yet


def test_https_makes_the_session_cookie_secure(tmp_path: Path, classifier: Any) -> None:
    import shutil
    import subprocess

    from mpox_aism.kiosk.web.app import create_app
    from mpox_aism.kiosk.web.server import ServerThread
    from mpox_aism.kiosk.web.staff import add_staff_routes

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed; install it with: apt-get install -y openssl")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    accounts = Accounts(tmp_path / "staff.sqlite3", hasher=FAST)
    accounts.add("rev", PASSWORDS["rev"], "reviewer")
    app = create_app(classifier=classifier, token=None)
    add_staff_routes(app, events_provider=list, frame_provider=lambda _n: None, cameras=list,
                     reviews_path=tmp_path / "r.sqlite3", accounts=accounts, secure=True)
    with ServerThread(app, certfile=str(cert), keyfile=str(key)) as s:
        assert s.url.startswith("https://")
        with httpx.Client(base_url=s.url, timeout=60, verify=False) as c:  # a self-signed test certificate
            token = c.get("/api/login").json()["csrf"]
            r = c.post("/api/login", json={"name": "rev", "password": PASSWORDS["rev"]}, headers={CSRF_HEADER: token})
            assert r.status_code == 200 and "secure" in r.headers["set-cookie"].lower()
