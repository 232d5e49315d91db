"""``POST /api/events/{id}/label``: reviewers only, CSRF like every change, clear errors that record nothing
(422 names the labels, 404, 410 for a crop gone under the retention limit), the latest label counts and the
history, the label store and the audit trail all keep it. No model needed: the staff routes alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx", reason="httpx not installed: pip install httpx")
pytest.importorskip("fastapi", reason="fastapi not installed: pip install fastapi uvicorn python-multipart")

from fastapi import FastAPI  # noqa: E402

from mpox_aism.kiosk.accounts import Accounts  # noqa: E402
from mpox_aism.kiosk.labels import LABEL_CHOICES, LabelStore  # noqa: E402
from mpox_aism.kiosk.web.auth import CSRF_HEADER  # noqa: E402
from mpox_aism.kiosk.web.server import ServerThread  # noqa: E402
from mpox_aism.kiosk.web.staff import add_staff_routes  # noqa: E402
from tests.kiosk.test_labels import DAY, Clock, crop_record, noise  # noqa: E402
from tests.kiosk.web.test_auth import FAST, PASSWORDS, login  # noqa: E402


def _event(event_id: str) -> dict[str, Any]:
    return {"event_id": event_id, "decision": "review", "reason": "low_confidence", "label": "mpox",
            "probability": 0.5, "time": "2026-01-01T10:00:00.000+00:00", "camera": "entrance"}


class Site:
    def __init__(self, url: str, store: LabelStore, accounts: Accounts, clock: Clock) -> None:
        self.url, self.store, self.accounts, self.clock = url, store, accounts, clock


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    d = tmp_path_factory.mktemp("labels-api")
    accounts = Accounts(d / "staff.sqlite3", hasher=FAST)
    for name, role in (("rev", "reviewer"), ("view", "viewer")):
        accounts.add(name, PASSWORDS[name], role)
    clock = Clock()
    store = LabelStore(d / "labels.sqlite3", retention_days=30, clock=clock)
    store.put(crop_record("ev-kept", clock.t), noise())
    store.put(crop_record("ev-old", clock.t - 31 * DAY), noise(seed=1))  # expired, not purged yet
    store.put(crop_record("ev-earlier-run", clock.t), noise(seed=2))  # no longer in the recent list
    events = [_event("ev-kept"), _event("ev-old"), _event("ev-never-kept")]
    app = FastAPI()
    add_staff_routes(app, events_provider=lambda: events, frame_provider=lambda _n: None, cameras=list,
                     reviews_path=d / "reviews.sqlite3", accounts=accounts, labels=store)
    with ServerThread(app) as s:
        yield Site(s.url, store, accounts, clock)


@pytest.fixture(scope="module")
def reviewer(site: Site) -> Iterator[Any]:
    c, csrf = login(site.url, "rev")
    c.headers[CSRF_HEADER] = csrf
    yield c
    c.close()


def test_a_reviewer_labels_and_relabels_history_and_audit_keep_both(site: Site, reviewer: Any) -> None:
    r = reviewer.post("/api/events/ev-kept/label", json={"label": "measles"})
    assert r.status_code == 200, r.text
    assert r.json()["label"] == "measles" and r.json()["by"] == "rev" and r.json()["event_id"] == "ev-kept"
    r = reviewer.post("/api/events/ev-kept/label", json={"label": "unusable"})
    assert r.status_code == 200, r.text
    shown = {e["event_id"]: e for e in reviewer.get("/api/events").json()}
    assert shown["ev-kept"]["staff_label"]["label"] == "unusable" and shown["ev-kept"]["crop_kept"] is True
    assert shown["ev-kept"]["label"] == "mpox"  # the model's class is untouched
    assert shown["ev-old"]["crop_kept"] is False and shown["ev-never-kept"]["staff_label"] is None
    assert [h["label"] for h in reviewer.get("/api/events/ev-kept/labels").json()] == ["measles", "unusable"]
    assert site.store.latest(["ev-kept"])["ev-kept"].label == "unusable"
    audit = [(a.user, a.action, a.event_id, a.detail) for a in site.accounts.audit() if a.action == "label"]
    assert audit[-2:] == [("rev", "label", "ev-kept", "measles"), ("rev", "label", "ev-kept", "unusable")]
    choices = reviewer.get("/api/label-choices").json()
    assert [c["value"] for c in choices] == list(LABEL_CHOICES)
    assert choices[-1]["text"] == "not skin / unusable"
    # an event the page no longer lists (an earlier run) can still be labeled while its crop is kept
    assert reviewer.post("/api/events/ev-earlier-run/label", json={"label": "normal"}).status_code == 200


def test_errors_are_clear_and_record_nothing(site: Site, reviewer: Any) -> None:
    before = len(site.accounts.audit())
    r = reviewer.post("/api/events/ev-kept/label", json={"label": "smallpox"})
    assert r.status_code == 422 and "smallpox" in r.json()["detail"]
    assert all(c in r.json()["detail"] for c in LABEL_CHOICES)  # names what is allowed
    assert reviewer.post("/api/events/ev-kept/label", json={}).status_code == 422
    r = reviewer.post("/api/events/no-such-event/label", json={"label": "mpox"})
    assert r.status_code == 404 and "no-such-event" in r.json()["detail"]
    for gone in ("ev-old", "ev-never-kept"):
        r = reviewer.post(f"/api/events/{gone}/label", json={"label": "mpox"})
        assert r.status_code == 410, r.text
        assert "expired" in r.json()["detail"] and "retention" in r.json()["detail"] and "30 days" in r.json()["detail"]
        assert site.store.history(gone) == []
    assert len(site.accounts.audit()) == before


def test_viewers_and_requests_without_the_csrf_token_are_refused(site: Site) -> None:
    viewer, csrf = login(site.url, "view")
    try:
        r = viewer.post("/api/events/ev-kept/label", json={"label": "mpox"}, headers={CSRF_HEADER: csrf})
        assert r.status_code == 403 and "viewer" in r.json()["detail"] and "reviewer" in r.json()["detail"]
        assert viewer.get("/api/events/ev-kept/labels").status_code == 200  # a viewer may look
    finally:
        viewer.close()
    no_csrf, _ = login(site.url, "rev")
    try:
        r = no_csrf.post("/api/events/ev-kept/label", json={"label": "mpox"})
        assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    finally:
        no_csrf.close()
    assert httpx.post(f"{site.url}/api/events/ev-kept/label", json={"label": "mpox"}).status_code == 401
    assert all(h.by == "rev" for h in site.store.history("ev-kept"))  # nothing recorded for them


def test_a_kiosk_without_a_label_store_answers_410(tmp_path: Path) -> None:
    accounts = Accounts(tmp_path / "staff.sqlite3", hasher=FAST)
    accounts.add("rev", PASSWORDS["rev"], "reviewer")
    app = FastAPI()
    add_staff_routes(app, events_provider=lambda: [_event("ev-1")], frame_provider=lambda _n: None, cameras=list,
                     reviews_path=tmp_path / "reviews.sqlite3", accounts=accounts)
    with ServerThread(app) as s:
        c, csrf = login(s.url, "rev")
        try:
            r = c.post("/api/events/ev-1/label", json={"label": "mpox"}, headers={CSRF_HEADER: csrf})
            assert r.status_code == 410 and "keeps no crops" in r.json()["detail"]
            r = c.post("/api/events/ev-2/label", json={"label": "mpox"}, headers={CSRF_HEADER: csrf})
            assert r.status_code == 404
            assert c.get("/api/events").json()[0]["crop_kept"] is False
        finally:
            c.close()
