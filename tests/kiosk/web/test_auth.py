"""Staff log-in in front of every staff route: sessions, CSRF, lock-out, roles, logout, the audit trail; sessions
ended by a password change (here or from the CLI, another process), by `users disable`, and by an admin."""

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
                "{label}", "mpox").replace("{index}", "0").replace("{session_id}", "some-session")
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
    rows = [r for r in accounts.audit() if r.user == "target"]
    assert [r.action for r in rows].count("login failed") == 3 and all("guess" not in r.detail for r in rows)
    locked = sorted(r.detail.split(" for ")[0] for r in rows if r.action == "login locked out")
    assert locked == ["addr:127.0.0.9", "name:target"]  # the lock-out's start; the refused try is not written


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


def test_a_password_changed_from_the_cli_ends_the_sessions_at_once(site) -> None:
    import subprocess
    import sys

    url, _, accounts = site
    accounts.add("shift.a", "shift password one", "reviewer")
    c, _ = login(url, "shift.a", "shift password one")
    assert c.get("/api/events").status_code == 200
    done = subprocess.run([sys.executable, "-m", "mpox_aism.cli", "users", "--db", str(accounts.path), "passwd",
                           "shift.a", "--password-stdin"], input="shift password two\n", capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stderr
    assert c.get("/api/events").status_code == 401  # another process changed it: this session is over
    c2, _ = login(url, "shift.a", "shift password two")
    assert c2.get("/api/events").status_code == 200
    accounts.end_sessions("shift.a")  # `mpox-aism users end-sessions`
    assert c2.get("/api/events").status_code == 401


def test_changing_my_password_keeps_this_session_and_ends_the_others(site) -> None:
    url, _, accounts = site
    accounts.add("nurse.b", "nurse password one", "viewer")
    phone, _ = login(url, "nurse.b", "nurse password one")
    with httpx.Client(base_url=url, timeout=60, transport=httpx.HTTPTransport(local_address="127.0.0.10")) as desk:
        token = desk.get("/api/login").json()["csrf"]
        csrf = desk.post("/api/login", json={"name": "nurse.b", "password": "nurse password one"},
                         headers={CSRF_HEADER: token}).json()["csrf"]

        def change(current: str, new: str, with_csrf: bool = True) -> Any:
            return desk.post("/api/password", json={"current": current, "new": new},
                             headers={CSRF_HEADER: csrf} if with_csrf else {})

        assert change("nurse password one", "nurse password two", with_csrf=False).status_code == 403
        wrong = change("not my password!", "nurse password two")
        assert wrong.status_code == 403 and "current password is wrong" in wrong.json()["detail"]
        weak = change("nurse password one", "password1234")
        assert weak.status_code == 422 and "very common password" in weak.json()["detail"]
        assert change("nurse password one", "nurse password one").status_code == 422  # the same one
        assert phone.get("/api/events").status_code == 200  # refused changes end nothing
        ok = change("nurse password one", "nurse password two")
        assert ok.status_code == 200 and ok.json() == {"user": "nurse.b", "other_sessions_ended": 1}
        assert desk.get("/api/session").json()["user"] == "nurse.b"  # this session stays…
        assert change("nurse password two", "nurse password three").status_code == 200  # …CSRF token and all
    assert phone.get("/api/events").status_code == 401  # …the other one is over
    assert accounts.verify("nurse.b", "nurse password one") is None
    rows = [(r.user, r.action, r.detail) for r in accounts.audit() if r.user == "nurse.b"]
    assert ("nurse.b", "password change refused", "wrong current password; addr:127.0.0.10") in rows
    changed = [d for u, a, d in rows if a == "password changed"]
    assert len(changed) == 2 and "on the staff page" in changed[0] and "the others ended" in changed[0]
    assert not any("nurse password" in d or "password1234" in d for _, _, d in rows)


def test_admins_list_sessions_and_end_one_or_all_of_an_account(site) -> None:
    url, _, accounts = site
    accounts.add("guard.c", "guard password one", "viewer")
    first, _ = login(url, "guard.c", "guard password one")
    second, _ = login(url, "guard.c", "guard password one")
    third, _ = login(url, "guard.c", "guard password one")
    boss, csrf = login(url, "boss")
    assert login(url, "rev")[0].get("/api/sessions").status_code == 403  # admins only
    listed = boss.get("/api/sessions")
    assert listed.status_code == 200
    mine = [s for s in listed.json() if s["user"] == "guard.c"]
    assert len(mine) == 3 and {s["role"] for s in mine} == {"viewer"} and {s["address"] for s in mine} == {"127.0.0.1"}
    assert [s["user"] for s in listed.json() if s["current"]] == ["boss"]
    for c in (first, second, third, boss):  # no token in the list: reading it must not let anyone take a session over
        assert c.cookies["mpox_session"] not in listed.text
    first_id = first.get("/api/session").json()["id"]
    assert boss.delete(f"/api/sessions/{first_id}").status_code == 403  # CSRF, like every change
    assert boss.delete(f"/api/sessions/{first_id}", headers={CSRF_HEADER: csrf}).json() == {"ended": 1}
    assert first.get("/api/events").status_code == 401 and second.get("/api/events").status_code == 200
    assert boss.delete(f"/api/sessions/{first_id}", headers={CSRF_HEADER: csrf}).status_code == 404
    r = boss.delete("/api/users/guard.c/sessions", headers={CSRF_HEADER: csrf})
    assert r.json() == {"ended": 2}
    assert second.get("/api/events").status_code == 401 and third.get("/api/events").status_code == 401
    assert boss.delete("/api/users/nobody/sessions", headers={CSRF_HEADER: csrf}).status_code == 404
    assert login(url, "guard.c", "guard password one")[0].get("/api/events").status_code == 200  # may log in again
    rows = [(r.user, r.action, r.detail) for r in accounts.audit() if r.user == "boss"]
    assert ("boss", "session ended", f"guard.c session {first_id}") in rows
    assert ("boss", "sessions ended", "guard.c: 2") in rows


def test_expired_sessions_are_forgotten_even_when_never_presented_again() -> None:
    from mpox_aism.kiosk.accounts import User
    from mpox_aism.kiosk.web.auth import Sessions
    from tests.kiosk.web.test_limits import Clock

    clock = Clock()
    sessions = Sessions(SessionLimits(idle_s=60, max_age_s=600), clock)
    token, _ = sessions.create(User("a", "viewer"), "10.0.0.1")
    clock.t += 61
    sessions.create(User("b", "viewer"), "10.0.0.2")
    assert [s.user.name for s in sessions.all()] == ["b"] and sessions.get(token) is None


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


def test_a_weak_admin_credential_makes_no_account_and_says_why(tmp_path: Path, monkeypatch, caplog) -> None:
    from mpox_aism.kiosk.web.server import staff_accounts

    monkeypatch.setenv("MPOX_AISM_ADMIN_PASSWORD", "gate7checkpoint")  # the station's id and a kiosk word
    accounts = staff_accounts(tmp_path / "staff.sqlite3", station_id="gate7")
    assert accounts.users() == []  # the daemon goes on: its cameras are its main job
    assert "admin-password credential was not used: password too easy to guess" in caplog.text


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
