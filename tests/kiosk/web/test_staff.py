"""The staff pages in a real headless Chromium (selenium) against the real kiosk app: uvicorn on a loopback
port, the shipped model (onnxruntime) with the real Grad-CAM explainer, real skin photos from ../shared/data.

Skips when Chromium / ChromeDriver (``apt-get install -y chromium chromium-driver``), selenium, the model
or ../shared/data is absent. No timing asserts: only generous waits, the machine is shared.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

httpx = pytest.importorskip("httpx", reason="httpx not installed: pip install httpx")
pytest.importorskip("fastapi", reason="fastapi not installed: pip install fastapi uvicorn python-multipart")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed: pip install selenium==4.51.0")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402

from mpox_aism.kiosk.accounts import Accounts  # noqa: E402
from mpox_aism.kiosk.events import jpeg_b64  # noqa: E402
from mpox_aism.kiosk.labels import LabelStore  # noqa: E402
from mpox_aism.kiosk.web.app import create_app  # noqa: E402
from mpox_aism.kiosk.web.auth import CSRF_HEADER  # noqa: E402
from mpox_aism.kiosk.web.reference import ReferenceLibrary  # noqa: E402
from mpox_aism.kiosk.web.server import ServerThread  # noqa: E402
from mpox_aism.kiosk.web.staff import ReviewStore, add_staff_routes  # noqa: E402
from tests.conftest import SKIN8, default_model_or_skip, link_photos, need_skin8  # noqa: E402
from tests.kiosk.web.chromium import browser_login as log_in  # noqa: E402
from tests.kiosk.web.chromium import headless_chromium, wait  # noqa: E402
from tests.kiosk.web.test_auth import FAST, login  # noqa: E402

STAFF = {"officer.test": ("reviewer password 1", "reviewer"), "desk.viewer": ("viewer password 1", "viewer")}

TOKEN = "staff-page-test-token"
AMBER = "rgba(138, 90, 0, 1)"  # common.css .badge.other_condition
WAIT_S = 10.0  # what the brief promises for a new event to show
SLOW_WAIT_S = 180.0  # a diagnosis with Grad-CAM on two shared cores


def first_photo(label: str) -> Path:
    need_skin8()
    files = sorted(p for p in (SKIN8 / label).iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if not files:
        pytest.skip(f"no JPEG photos in {SKIN8 / label}")
    return files[0]


class Kiosk:
    """The app under test plus the providers the test drives: a list of events and per-camera frames."""

    def __init__(self, server: ServerThread, reviews_path: Path, labels: LabelStore, accounts: Accounts) -> None:
        self.server = server
        self.reviews_path = reviews_path
        self.labels, self.accounts = labels, accounts
        self.events: list[dict[str, Any]] = []
        self.frames: dict[str, bytes | None] = {}
        self.lock = threading.Lock()

    def add_event(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.events.append(event)


@pytest.fixture(scope="module")
def kiosk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kiosk]:
    model_dir = default_model_or_skip()
    if not (model_dir / "model.onnx").is_file():
        pytest.skip(f"no model.onnx in {model_dir}; make it with `mpox-aism export onnx`")
    frame = first_photo("normal").read_bytes()
    from mpox_aism.inference.backends import load_classifier
    from mpox_aism.inference.explainer import ExplainerService
    from mpox_aism.inference.gradcam import GradCamExplainer

    reviews_path = tmp_path_factory.mktemp("staff") / "reviews.sqlite"
    with load_classifier("onnxruntime", model_dir) as classifier:
        app = create_app(classifier=classifier, token=TOKEN,
                         explainer=ExplainerService(classifier, gradcam=GradCamExplainer(model_dir)))
        holder: list[Kiosk] = []

        def events() -> list[dict[str, Any]]:
            with holder[0].lock:
                return list(holder[0].events)

        # a reference folder of real photos: one per class the model can answer, as symlinks (read in place)
        ref_root = tmp_path_factory.mktemp("references")
        for label in classifier.labels:
            if (SKIN8 / label).is_dir():
                link_photos(ref_root, label, 6)
        accounts = Accounts(reviews_path.with_name("staff.sqlite3"), hasher=FAST)
        for name, (password, role) in STAFF.items():
            accounts.add(name, password, role)
        labels = LabelStore(reviews_path.with_name("labels.sqlite3"))
        add_staff_routes(app, events_provider=events, frame_provider=lambda name: holder[0].frames.get(name),
                         cameras=lambda: list(holder[0].frames), reviews_path=reviews_path,
                         references=ReferenceLibrary(ref_root, classifier), accounts=accounts, labels=labels)
        with ServerThread(app) as server:
            k = Kiosk(server, reviews_path, labels, accounts)
            k.frames.update(gate1=frame, gate2=None)  # gate2 has not sent a frame yet
            holder.append(k)
            yield k


@pytest.fixture(scope="module")
def client(kiosk: Kiosk) -> Iterator[httpx.Client]:
    """Logged in as a reviewer; every request carries the session's CSRF token."""
    c, csrf = login(kiosk.server.url, "officer.test", STAFF["officer.test"][0])
    c.timeout = httpx.Timeout(SLOW_WAIT_S)
    c.headers[CSRF_HEADER] = csrf
    try:
        yield c
    finally:
        c.close()


def browser_login(browser: WebDriver, url: str, name: str) -> None:
    log_in(browser, url, name, STAFF[name][0], WAIT_S)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with headless_chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def make_event(event_id: str, time: str, *, decision: str = "suspected", label: str = "mpox",
               probability: float = 0.91, images: bool = True, reason: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema": "mpox-aism/event@2", "event_id": event_id, "station_id": "test", "camera": "gate1",
        "track_id": 7, "decision": decision, "label": label, "probability": probability,
        "probabilities": {label: probability, "normal": round(1 - probability, 4)},
        "region_kinds": ["hand"], "time": time, "research_use_only": True, "unfamiliar_crops": 0,
    }
    if decision == "review":
        event["reason"] = reason or "low_confidence"
    if images:
        import cv2

        rgb = cv2.cvtColor(cv2.imread(str(first_photo("mpox"))), cv2.COLOR_BGR2RGB)
        event["crop_jpeg_base64"] = jpeg_b64(rgb, 160)
        event["gradcam_jpeg_base64"] = jpeg_b64(rgb[:, ::-1].copy(), 160)
    return event


def img_loaded(driver: WebDriver, css: str) -> bool:
    return bool(driver.execute_script(
        "const i = document.querySelector(arguments[0]); return !!i && i.complete && i.naturalWidth > 0;", css))


def test_staff_page_live_view_events_and_review(kiosk: Kiosk, client: httpx.Client, browser: WebDriver) -> None:
    browser.delete_all_cookies()
    browser.get(kiosk.server.url + "/")
    wait(browser, WAIT_S, "the login page", lambda d: d.current_url.endswith("/login"))  # no session: sent there
    browser.find_element(By.ID, "name").send_keys("officer.test")
    browser.find_element(By.ID, "password").send_keys("a wrong password")
    browser.find_element(By.ID, "login").click()
    wait(browser, WAIT_S, "the wrong-password message", lambda d: d.find_element(By.ID, "error").is_displayed())
    assert "wrong name or password" in browser.find_element(By.ID, "error").text
    browser_login(browser, kiosk.server.url, "officer.test")
    assert "officer.test (reviewer)" in browser.find_element(By.ID, "who").text
    wait(browser, 30, "gate1's live frame", lambda d: img_loaded(d, 'img[data-camera="gate1"]'))
    wait(browser, 30, "gate2's 'no frame yet'", lambda d: "no frame yet" in d.find_element(
        By.CSS_SELECTOR, 'img[data-camera="gate2"]').find_element(By.XPATH, "..").text)


    first = make_event("ev-1", "2026-01-01T10:00:00.000+00:00")
    kiosk.add_event(first)
    kiosk.add_event(make_event("ev-clear", "2026-01-01T10:00:01.000+00:00", decision="clear", label="normal",
                               images=False))  # clear events are not for the staff
    sel1 = 'li[data-event-id="ev-1"]'
    wait(browser, WAIT_S, "the new event on the page", lambda d: d.find_elements(By.CSS_SELECTOR, sel1))
    li = browser.find_element(By.CSS_SELECTOR, sel1)
    text = li.text
    assert "suspected" in text and "mpox" in text and "91.0 %" in text and "gate1" in text, text
    assert "not yet reviewed" in text
    wait(browser, WAIT_S, "the crop and Grad-CAM images", lambda d: img_loaded(d, f"{sel1} img.crop")
         and img_loaded(d, f"{sel1} img.gradcam"))
    assert not browser.find_elements(By.CSS_SELECTOR, 'li[data-event-id="ev-clear"]')
    wait(browser, SLOW_WAIT_S, "the event's reference photos", lambda d: d.execute_script(
        "const imgs = [...document.querySelectorAll(arguments[0])];"
        "return imgs.length === 3 && imgs.every(i => i.complete && i.naturalWidth > 0)", f"{sel1} img.reference"))

    # a newer event goes on top
    kiosk.add_event(make_event("ev-2", "2026-01-01T11:00:00.000+00:00", decision="review", label="chickenpox",
                               probability=0.45, images=False))
    wait(browser, WAIT_S, "the second event on top", lambda d: [e.get_attribute("data-event-id") for e in
                                                                   d.find_elements(By.CSS_SELECTOR, "#events li")]
         == ["ev-2", "ev-1"])
    # a review says why; a confident call of another disease is amber with its class, never green
    assert "low confidence" in browser.find_element(By.CSS_SELECTOR, 'li[data-event-id="ev-2"] .reason').text
    kiosk.add_event(make_event("ev-other", "2026-01-01T11:30:00.000+00:00", decision="other_condition",
                               label="measles", probability=0.88, images=False))
    sel_other = 'li[data-event-id="ev-other"]'
    wait(browser, WAIT_S, "the other-condition event", lambda d: d.find_elements(By.CSS_SELECTOR, sel_other))
    badge = browser.find_element(By.CSS_SELECTOR, f"{sel_other} .badge")
    assert badge.text == "other condition" and "measles" in browser.find_element(By.CSS_SELECTOR, sel_other).text
    assert badge.value_of_css_property("background-color") == AMBER
    with kiosk.lock:  # out of the list again, so the order checks below see the two events they expect
        kiosk.events = [e for e in kiosk.events if e["event_id"] != "ev-other"]

    li = browser.find_element(By.CSS_SELECTOR, sel1)
    li.find_element(By.XPATH, ".//button[normalize-space()='Mark reviewed']").click()
    wait(browser, WAIT_S, "the recorded state", lambda d: "reviewed by officer.test" in d.find_element(
        By.CSS_SELECTOR, f"{sel1} .state").text)
    # still shown after further polls (the state comes back from the server, not just the click)
    browser.refresh()
    wait(browser, WAIT_S, "the state after a reload", lambda d: d.find_elements(By.CSS_SELECTOR, sel1) and
         "reviewed by officer.test" in d.find_element(By.CSS_SELECTOR, f"{sel1} .state").text)

    events = client.get("/api/events").json()
    assert [e["event_id"] for e in events] == ["ev-2", "ev-1"]
    assert events[1]["review"]["action"] == "reviewed" and events[1]["review"]["by"] == "officer.test"
    assert events[1]["review"]["note"] == "" and events[1]["review"]["at"]
    assert events[0]["review"] is None
    assert events[1]["crop_jpeg_base64"] == first["crop_jpeg_base64"]

    # durable: a fresh store on the same file (as after a daemon restart) reads it back
    assert ReviewStore(kiosk.reviews_path, origin="kiosk").latest(["ev-1"])["ev-1"].action == "reviewed"
    with sqlite3.connect(kiosk.reviews_path) as con:
        rows = con.execute("SELECT event_id, action, by FROM reviews").fetchall()
    assert ("ev-1", "reviewed", "officer.test") in rows

    # log out: the session ends, the page goes back to the login
    browser.find_element(By.ID, "logout").click()
    wait(browser, WAIT_S, "the login page after logout", lambda d: d.current_url.endswith("/login"))
    browser.get(kiosk.server.url + "/")
    assert browser.current_url.endswith("/login")

    # a viewer sees the events but is refused a review, and told why
    browser_login(browser, kiosk.server.url, "desk.viewer")
    wait(browser, WAIT_S, "the events for the viewer", lambda d: d.find_elements(By.CSS_SELECTOR, sel1))
    event = browser.find_element(By.CSS_SELECTOR, sel1)
    event.find_element(By.XPATH, ".//button[normalize-space()='Acknowledge']").click()
    wait(browser, WAIT_S, "the refusal", lambda d: "may not" in d.find_element(By.CSS_SELECTOR, f"{sel1} .error").text)
    assert "reviewer" in browser.find_element(By.CSS_SELECTOR, f"{sel1} .error").text
    assert client.get("/api/events/ev-1/reviews").json()[-1]["by"] == "officer.test"  # nothing recorded for it


def test_review_api_errors_and_history(kiosk: Kiosk, client: httpx.Client) -> None:
    kiosk.add_event(make_event("ev-api", "2026-01-01T09:00:00.000+00:00", images=False))
    r = client.post("/api/events/no-such-event/review", json={"action": "reviewed", "note": ""})
    assert r.status_code == 404, r.text
    for bad in ({"action": "deleted", "note": ""}, {"note": "x"}):
        r = client.post("/api/events/ev-api/review", json=bad)
        assert r.status_code == 422, (bad, r.text)
    for action in ("acknowledged", "reviewed"):
        r = client.post("/api/events/ev-api/review", json={"action": action, "by": "Nurse", "note": "seen"})
        assert r.status_code == 200, r.text
        assert r.json()["by"] == "officer.test"  # a typed name is ignored: it is the logged-in account
        assert r.json()["action"] == action and r.json()["event_id"] == "ev-api"
    latest = {e["event_id"]: e["review"] for e in client.get("/api/events").json()}
    assert latest["ev-api"]["action"] == "reviewed" and latest["ev-api"]["note"] == "seen"
    history = client.get("/api/events/ev-api/reviews").json()
    assert [h["action"] for h in history] == ["acknowledged", "reviewed"]


def test_frames_and_pages(kiosk: Kiosk, client: httpx.Client) -> None:
    r = client.get("/api/cameras/gate1/frame.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content == kiosk.frames["gate1"] and r.headers["cache-control"] == "no-store"
    assert client.get("/api/cameras/gate2/frame.jpg").status_code == 404  # no frame yet
    assert client.get("/api/cameras/nope/frame.jpg").status_code == 404
    assert client.get("/api/cameras").json() == ["gate1", "gate2"]
    for path in ("/", "/upload"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        # self-contained: the LAN is offline, so nothing is loaded from another host
        assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import""",
                             r.text), path
        assert 'name="viewport"' in r.text
        assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', r.text)
        assert assets, path  # the page's CSS and JS come from the kiosk itself
        for asset in assets:
            a = client.get(asset)
            assert a.status_code == 200, asset
            assert a.headers["content-type"].split(";")[0] in ("text/css", "text/javascript"), asset
            # nothing fetched, imported or linked from another host
            assert not re.search(r"""(?:fetch|import|src\s*=|href\s*=|url)\s*\(?\s*["'`]?(?:https?:)?//|@import""",
                                 a.text), asset
    for bad in ("/static/nope.js", "/static/..%2Fstaff.py", "/static/staff.html"):
        assert client.get(bad).status_code == 404, bad


def test_upload_page_file_and_camera(kiosk: Kiosk, client: httpx.Client, browser: WebDriver) -> None:
    photo = first_photo("mpox")
    # a viewer may look, not upload: told so, not silently ignored
    browser_login(browser, kiosk.server.url, "desk.viewer")
    browser.get(kiosk.server.url + "/upload")
    file_input = browser.find_element(By.ID, "file")
    assert file_input.get_attribute("accept") == "image/*" and file_input.get_attribute("capture") == "environment"
    file_input.send_keys(str(photo))
    wait(browser, 60, "the 403 message", lambda d: d.find_element(By.ID, "error").is_displayed())
    assert "may not upload" in browser.find_element(By.ID, "error").text.lower()

    browser_login(browser, kiosk.server.url, "officer.test")
    browser.get(kiosk.server.url + "/upload")
    browser.find_element(By.ID, "file").send_keys(str(photo))
    wait(browser, SLOW_WAIT_S, "the diagnosis", lambda d: d.find_element(By.ID, "result").is_displayed())
    expected = client.post("/v1/diagnose", files={"image": (photo.name, photo.read_bytes(), "image/jpeg")},
                           headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert browser.find_element(By.ID, "label").text.endswith(expected["label"])
    assert browser.find_element(By.ID, "decision").text == STATE_WORDS[expected["decision"]]
    assert browser.find_element(By.ID, "probability").text == f"{100 * expected['probability']:.1f} %"
    wait(browser, WAIT_S, "the Grad-CAM image", lambda d: img_loaded(d, "#gradcam"))
    assert not browser.find_element(By.ID, "error").is_displayed()
    # typical photos of the answered class beside the answer (the paper's app does this)
    wait(browser, SLOW_WAIT_S, "the reference photos", lambda d: d.execute_script(
        "const imgs = [...document.querySelectorAll('#references img')];"
        "return imgs.length === 3 && imgs.every(i => i.complete && i.naturalWidth > 0)"))
    assert all(img.get_attribute("alt") == f"reference {expected['label']}"
               for img in browser.find_elements(By.CSS_SELECTOR, "#references img"))

    # the camera path: Chromium's synthetic camera, a canvas snapshot, the same endpoint
    browser.get(kiosk.server.url + "/upload")
    browser.find_element(By.ID, "use-camera").click()
    wait(browser, 30, "the camera picture", lambda d: d.execute_script(
        "return document.getElementById('video').videoWidth > 0"))
    browser.find_element(By.ID, "snap").click()
    wait(browser, SLOW_WAIT_S, "the camera diagnosis", lambda d: d.find_element(By.ID, "result").is_displayed()
         or d.find_element(By.ID, "error").is_displayed())
    assert not browser.find_element(By.ID, "error").is_displayed(), browser.find_element(By.ID, "error").text
    assert browser.find_element(By.ID, "label").text
    assert browser.find_element(By.ID, "decision").text in set(STATE_WORDS.values())
    wait(browser, WAIT_S, "the camera Grad-CAM image", lambda d: img_loaded(d, "#gradcam"))


GREEN = "rgba(46, 125, 50, 1)"  # common.css .badge.clear
STATE_WORDS = {"suspected": "suspected", "other_condition": "other condition", "clear": "clear", "review": "review"}


def upload_in_page(browser: WebDriver, path: Path) -> dict[str, str]:
    """Upload one photo on the upload page; what the page shows (badge text, its colour, label, reason)."""
    browser.execute_script("document.getElementById('result').hidden = true")
    browser.find_element(By.ID, "file").send_keys(str(path))
    wait(browser, SLOW_WAIT_S, f"the diagnosis of {path.name}",
         lambda d: d.find_element(By.ID, "result").is_displayed() or d.find_element(By.ID, "error").is_displayed())
    assert not browser.find_element(By.ID, "error").is_displayed(), browser.find_element(By.ID, "error").text
    badge = browser.find_element(By.ID, "decision")
    return {"decision": badge.text, "colour": badge.value_of_css_property("background-color"),
            "label": browser.find_element(By.ID, "label").text, "reason": browser.find_element(By.ID, "reason").text}


def test_upload_page_never_shows_another_disease_as_clear(kiosk: Kiosk, client: httpx.Client, browser: WebDriver,
                                                          tmp_path: Path) -> None:
    """A confident chickenpox / measles / eczema call is 'other condition' in amber with its class, never the
    green 'clear' of healthy skin; a non-skin image is 'review' and says it is unfamiliar."""
    need_skin8()
    browser_login(browser, kiosk.server.url, "officer.test")
    browser.get(kiosk.server.url + "/upload")
    other_seen = 0
    for label in ("chickenpox", "measles", "eczema"):
        photos = sorted(p for p in (SKIN8 / label).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:2]
        for path in photos:
            shown = upload_in_page(browser, path)
            answer = client.post("/v1/diagnose", files={"image": (path.name, path.read_bytes(), "image/jpeg")},
                                 headers={"Authorization": f"Bearer {TOKEN}"}).json()
            assert shown["decision"] == STATE_WORDS[answer["decision"]]
            if answer["label"] != "normal":  # whatever the model says, another disease is never shown clear
                assert shown["decision"] != "clear" and shown["colour"] != GREEN, (path.name, shown)
            if answer["decision"] == "other_condition":
                other_seen += 1
                assert shown["decision"] == "other condition" and shown["label"] == answer["label"] != "mpox"
                assert shown["colour"] == AMBER, shown  # amber (common.css .badge.other_condition)
            if answer["decision"] == "review":
                assert shown["reason"], (path.name, shown)  # a review always says why
    assert other_seen, "none of the photos of other diseases was answered other_condition"

    import cv2

    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((300, 300, 3), 128, np.uint8))
    shown = upload_in_page(browser, grey)
    assert shown["decision"] == "review" and "unfamiliar" in shown["reason"] and "too blurred" in shown["reason"]
    assert shown["label"].startswith("model's guess: ")



def test_a_reviewer_labels_an_events_crop_and_a_viewer_is_refused(kiosk: Kiosk, browser: WebDriver) -> None:
    """The label select and "Save label" on the event card: the label shows, survives a reload, is in the label
    store and the audit trail; a kept face crop is never shown by the page; a viewer is told no."""
    import datetime as dt

    import cv2
    from selenium.webdriver.support.ui import Select

    from mpox_aism.kiosk.labels import CropRecord

    rgb = cv2.cvtColor(cv2.imread(str(first_photo("measles"))), cv2.COLOR_BGR2RGB)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    for event_id, kind in (("ev-label", "hand"), ("ev-face", "face")):
        kiosk.labels.put(CropRecord(event_id=event_id, station_id="test", camera="gate1", run_id="r1", track_id=7,
                                    kind=kind, model_version="m", created=now), rgb)
    kiosk.add_event(make_event("ev-label", "2026-01-02T10:00:00.000+00:00", decision="review", probability=0.5))
    # the face crop is kept on the box, but the event was published without it: the page must not show it
    kiosk.add_event(make_event("ev-face", "2026-01-02T09:00:00.000+00:00", decision="review", probability=0.5,
                               images=False))
    sel, face = 'li[data-event-id="ev-label"]', 'li[data-event-id="ev-face"]'

    browser_login(browser, kiosk.server.url, "officer.test")
    wait(browser, WAIT_S, "the event to label", lambda d: d.find_elements(By.CSS_SELECTOR, sel)
         and "not labeled" in d.find_element(By.CSS_SELECTOR, f"{sel} .label-state").text)
    choice = Select(browser.find_element(By.CSS_SELECTOR, f"{sel} select.label-choice"))
    wait(browser, WAIT_S, "the label choices", lambda d: len(choice.options) == 10)  # a prompt, 8 classes, unusable
    assert [o.text for o in choice.options][-1] == "not skin / unusable"
    choice.select_by_value("measles")
    browser.find_element(By.CSS_SELECTOR, f"{sel} button.save-label").click()
    wait(browser, WAIT_S, "the recorded label", lambda d: "labeled measles by officer.test" in d.find_element(
        By.CSS_SELECTOR, f"{sel} .label-state").text)
    browser.refresh()  # it comes back from the kiosk, not from the click
    wait(browser, WAIT_S, "the label after a reload", lambda d: d.find_elements(By.CSS_SELECTOR, sel)
         and "labeled measles by officer.test" in d.find_element(By.CSS_SELECTOR, f"{sel} .label-state").text
         and Select(d.find_element(By.CSS_SELECTOR, f"{sel} select.label-choice")).first_selected_option
         .get_attribute("value") == "measles")

    # changed: the latest counts, the history stays
    Select(browser.find_element(By.CSS_SELECTOR, f"{sel} select.label-choice")).select_by_visible_text(
        "not skin / unusable")
    browser.find_element(By.CSS_SELECTOR, f"{sel} button.save-label").click()
    wait(browser, WAIT_S, "the changed label", lambda d: "labeled not skin / unusable by officer.test" in
         d.find_element(By.CSS_SELECTOR, f"{sel} .label-state").text)
    assert [(r.label, r.by) for r in kiosk.labels.history("ev-label")] == [("measles", "officer.test"),
                                                                             ("unusable", "officer.test")]
    audit = [(a.user, a.event_id, a.detail) for a in kiosk.accounts.audit() if a.action == "label"]
    assert audit[-2:] == [("officer.test", "ev-label", "measles"), ("officer.test", "ev-label", "unusable")]

    wait(browser, WAIT_S, "the face event's card", lambda d: d.find_elements(By.CSS_SELECTOR, face))
    assert browser.find_elements(By.CSS_SELECTOR, f"{face} .pics img") == []  # kept on the box, never shown
    assert browser.find_elements(By.CSS_SELECTOR, f"{sel} .pics img.crop")  # the published crop is

    # a viewer sees the label but may not give one, and is told why
    browser_login(browser, kiosk.server.url, "desk.viewer")
    wait(browser, WAIT_S, "the labeled event for the viewer", lambda d: d.find_elements(By.CSS_SELECTOR, sel)
         and "labeled not skin / unusable by officer.test" in d.find_element(By.CSS_SELECTOR,
                                                                             f"{sel} .label-state").text)
    choice = Select(browser.find_element(By.CSS_SELECTOR, f"{sel} select.label-choice"))
    wait(browser, WAIT_S, "the label choices", lambda d: len(choice.options) == 10)
    choice.select_by_value("mpox")
    browser.find_element(By.CSS_SELECTOR, f"{sel} button.save-label").click()
    wait(browser, WAIT_S, "the refusal", lambda d: "may not" in d.find_element(By.CSS_SELECTOR, f"{sel} .error").text)
    assert "reviewer" in browser.find_element(By.CSS_SELECTOR, f"{sel} .error").text
    assert kiosk.labels.latest(["ev-label"])["ev-label"].label == "unusable"  # nothing recorded for the viewer
