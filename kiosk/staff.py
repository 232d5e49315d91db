"""The staff pages (the paper's PC and phone apps), served by the kiosk itself.

``GET /``: live camera views and the recent review/suspected events, each with "Acknowledge" / "Mark
reviewed". ``GET /upload``: a photo from a file or the device camera sent to ``/v1/diagnose``.
The pages are self-contained (inline CSS and JS, no CDN): the checkpoint LAN is offline. Everything the
server sends is put in the page with ``textContent`` / ``src`` only, never ``innerHTML``, so a label or a
name cannot inject markup.

Reviews are written to SQLite (one row per action, never updated), so who acknowledged what survives a
restart of the daemon and stays auditable; ``/api/events`` shows the latest action of each event.

Research use only: the pages show a screening aid, never a diagnosis.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

SHOWN_DECISIONS = frozenset({"review", "suspected"})
NO_STORE = {"Cache-Control": "no-store"}  # live frames and event lists must never come from a cache


class ReviewIn(BaseModel):
    """A staff action on one event; a wrong ``action`` is FastAPI's 422."""

    action: Literal["acknowledged", "reviewed"]
    by: str = Field(min_length=1, max_length=100, description="Who acted (typed on the staff page).")
    note: str = Field("", max_length=2000)


class Review(ReviewIn):
    event_id: str
    time: str = Field(description="When it was recorded, ISO 8601 UTC.")


class ReviewStore:
    """Append-only review log in SQLite.

    A connection per call: the endpoints run in the threadpool and a sqlite3 connection must not be
    shared between threads; opening one on a local file costs far less than the page's poll interval.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")  # readers (the page's polls) never block a writer
            con.execute("""CREATE TABLE IF NOT EXISTS reviews (
                               id INTEGER PRIMARY KEY AUTOINCREMENT,
                               event_id TEXT NOT NULL, action TEXT NOT NULL, by TEXT NOT NULL,
                               note TEXT NOT NULL, time TEXT NOT NULL)""")
            con.execute("CREATE INDEX IF NOT EXISTS reviews_event ON reviews (event_id, id)")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=10)) as con, con:  # inner `con`: commit or roll back
            con.execute("PRAGMA synchronous=FULL")  # a recorded review survives a power cut
            yield con

    def record(self, event_id: str, review: ReviewIn) -> Review:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        with self._connect() as con:
            con.execute("INSERT INTO reviews (event_id, action, by, note, time) VALUES (?, ?, ?, ?, ?)",
                        (event_id, review.action, review.by, review.note, now))
        return Review(event_id=event_id, action=review.action, by=review.by, note=review.note, time=now)

    def latest(self, event_ids: Iterable[str]) -> dict[str, dict[str, str]]:
        """The newest action of each given event that has one."""
        ids = list(dict.fromkeys(event_ids))
        out: dict[str, dict[str, str]] = {}
        with self._connect() as con:
            for i in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
                chunk = ids[i:i + 500]
                marks = ",".join("?" * len(chunk))
                rows = con.execute(
                    f"SELECT event_id, action, by, note, time FROM reviews WHERE id IN "
                    f"(SELECT MAX(id) FROM reviews WHERE event_id IN ({marks}) GROUP BY event_id)", chunk)
                for event_id, action, by, note, time in rows:
                    out[event_id] = {"action": action, "by": by, "note": note, "time": time}
        return out

    def history(self, event_id: str) -> list[dict[str, str]]:
        with self._connect() as con:
            rows = con.execute("SELECT action, by, note, time FROM reviews WHERE event_id = ? ORDER BY id",
                               (event_id,)).fetchall()
        return [{"action": a, "by": b, "note": n, "time": t} for a, b, n, t in rows]


def add_staff_routes(app: FastAPI, *, events_provider: Callable[[], list[dict[str, Any]]],
                     frame_provider: Callable[[str], bytes | None], cameras: Callable[[], list[str]],
                     reviews_path: Path) -> ReviewStore:
    """Add the staff pages and their JSON API to the kiosk's app; returns the review store.

    ``events_provider()``: the recent events (``kiosk.events`` payloads), any order; only review and
    suspected ones are shown. ``frame_provider(camera)``: the camera's latest frame as JPEG, or ``None``
    before the first one. ``cameras()``: the camera names, asked on every page load.
    """
    store = ReviewStore(reviews_path)

    def shown_events() -> list[dict[str, Any]]:
        events = [e for e in events_provider() if e.get("decision") in SHOWN_DECISIONS and e.get("event_id")]
        # ISO 8601 UTC strings sort as times; stable sort keeps the provider's order for equal times
        return sorted(events, key=lambda e: str(e.get("time", "")), reverse=True)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def staff_page() -> HTMLResponse:
        return HTMLResponse(STAFF_HTML, headers=NO_STORE)

    @app.get("/upload", response_class=HTMLResponse, include_in_schema=False)
    def upload_page() -> HTMLResponse:
        return HTMLResponse(UPLOAD_HTML, headers=NO_STORE)

    @app.get("/api/cameras", summary="Camera names, for the staff page's live views")
    def list_cameras() -> list[str]:
        return list(cameras())

    @app.get("/api/cameras/{name}/frame.jpg", response_class=Response, summary="A camera's latest frame",
             responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "No such camera or no frame yet."}})
    def camera_frame(name: str) -> Response:
        if name not in cameras():
            raise HTTPException(404, f"no camera named {name!r}")
        frame = frame_provider(name)
        if not frame:
            raise HTTPException(404, f"no frame from {name!r} yet")
        return Response(frame, media_type="image/jpeg", headers=NO_STORE)

    @app.get("/api/events", summary="Recent review/suspected events, newest first, with their latest review")
    def list_events() -> Response:
        events = shown_events()
        latest = store.latest(str(e["event_id"]) for e in events)
        body = [{**e, "review": latest.get(str(e["event_id"]))} for e in events]
        return JSONResponse(body, headers=NO_STORE)

    @app.post("/api/events/{event_id}/review", response_model=Review, summary="Record a staff action on an event",
              responses={404: {"description": "No such recent event."}})
    def review_event(event_id: str, review: ReviewIn) -> Review:
        if not any(str(e.get("event_id")) == event_id for e in events_provider()):
            raise HTTPException(404, f"no recent event {event_id!r}")
        return store.record(event_id, review)

    @app.get("/api/events/{event_id}/reviews", summary="Every recorded action on an event, oldest first")
    def event_reviews(event_id: str) -> list[dict[str, str]]:
        return store.history(event_id)

    app.state.reviews = store
    return store


_COMMON_CSS = """
:root { font-family: system-ui, sans-serif; color: #1b1b1b; background: #f4f5f7; }
body { margin: 0; }
header { background: #16324f; color: #fff; padding: .6rem 1rem; display: flex; gap: 1rem; align-items: center;
         flex-wrap: wrap; }
header h1 { font-size: 1.2rem; margin: 0; flex: 1; }
header a { color: #cfe3ff; }
main { padding: 1rem; max-width: 1200px; margin: auto; }
.note { font-size: .85rem; color: #555; }
input, button { font-size: 1rem; padding: .6rem .8rem; border-radius: 6px; border: 1px solid #999;
                min-height: 44px; box-sizing: border-box; }
button { background: #16324f; color: #fff; border: none; cursor: pointer; }
button:disabled { background: #8a97a6; cursor: default; }
.badge { display: inline-block; padding: .15rem .5rem; border-radius: 4px; font-weight: 600; color: #fff; }
.badge.suspected { background: #b3261e; } .badge.review { background: #b86e00; } .badge.clear { background: #2e7d32; }
.error { color: #b3261e; font-weight: 600; }
"""

STAFF_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mpox-aism — staff</title>
<style>""" + _COMMON_CSS + """
#cameras { display: grid; grid-template-columns: repeat(auto-fill, minmax(280px, 1fr)); gap: .8rem; }
.camera { background: #fff; border-radius: 8px; padding: .5rem; }
.camera img { width: 100%; min-height: 120px; display: block; }
#events { list-style: none; padding: 0; display: grid; gap: .8rem; }
.event { background: #fff; border-radius: 8px; padding: .8rem; display: flex; gap: .8rem; flex-wrap: wrap; }
.event .pics img { max-width: 160px; max-height: 160px; margin-right: .4rem; border-radius: 4px; }
.event .info { flex: 1; min-width: 220px; }
.event .actions { display: flex; gap: .5rem; flex-wrap: wrap; margin-top: .5rem; }
.state { font-weight: 600; }
</style></head>
<body>
<header><h1>mpox-aism — staff</h1>
  <label>Your name <input id="staff-name" autocomplete="name" placeholder="name"></label>
  <a href="/upload">Upload a photo</a></header>
<main>
<p class="note">Research use only: a screening aid, not a diagnosis. Every event below needs a person.</p>
<h2>Cameras</h2>
<div id="cameras"></div>
<h2>Events needing attention</h2>
<p id="events-error" class="error" hidden></p>
<p id="no-events" class="note">No review or suspected events yet.</p>
<ul id="events"></ul>
</main>
<script>
"use strict";
const nameInput = document.getElementById("staff-name");
nameInput.value = localStorage.getItem("staffName") || "";
nameInput.addEventListener("change", () => localStorage.setItem("staffName", nameInput.value.trim()));

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props);
  for (const c of children) e.append(c);
  return e;
}

// one live view per camera; the next frame is asked only after the last one loaded or failed
async function startCameras() {
  const box = document.getElementById("cameras");
  let names = [];
  try { names = await (await fetch("/api/cameras", {cache: "no-store"})).json(); } catch (e) { /* retried */ }
  if (!names.length) { setTimeout(startCameras, 5000); return; }
  for (const name of names) {
    const status = el("div", {className: "note", textContent: "waiting for a frame…"});
    const img = el("img", {alt: "live view of " + name});
    img.dataset.camera = name;
    const url = "/api/cameras/" + encodeURIComponent(name) + "/frame.jpg";
    const next = () => setTimeout(() => { img.src = url + "?t=" + Date.now(); }, 1000);
    img.addEventListener("load", () => { img.style.visibility = ""; status.textContent = "live"; next(); });
    img.addEventListener("error", () => {
      img.style.visibility = "hidden"; status.textContent = "no frame yet"; next();
    });
    img.src = url + "?t=" + Date.now();
    box.append(el("div", {className: "camera"}, el("strong", {textContent: name}), img, status));
  }
}

const shown = new Map();  // event_id -> {li, state, buttons}

function stateText(review) {
  if (!review) return "not yet reviewed";
  return review.action + " by " + review.by + " at " + new Date(review.time).toLocaleString();
}

async function sendReview(ev, action, item) {
  const by = nameInput.value.trim();
  if (!by) { item.msg.textContent = "Type your name at the top first."; nameInput.focus(); return; }
  localStorage.setItem("staffName", by);
  item.buttons.forEach(b => b.disabled = true);
  try {
    const r = await fetch("/api/events/" + encodeURIComponent(ev.event_id) + "/review", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({action: action, by: by, note: ""})});
    const body = await r.json();
    if (!r.ok) throw new Error(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
    item.msg.textContent = "";
    showState(item, body);
  } catch (e) {
    item.msg.textContent = "Not recorded: " + e.message;
  } finally {
    item.buttons.forEach(b => b.disabled = false);
  }
}

function showState(item, review) {
  item.state.textContent = stateText(review);
  item.li.dataset.review = review ? review.action : "";
}

function makeEvent(ev) {
  const pics = el("div", {className: "pics"});
  if (ev.crop_jpeg_base64) pics.append(el("img", {className: "crop", alt: "crop",
                                                  src: "data:image/jpeg;base64," + ev.crop_jpeg_base64}));
  if (ev.gradcam_jpeg_base64) pics.append(el("img", {className: "gradcam", alt: "Grad-CAM",
                                                     src: "data:image/jpeg;base64," + ev.gradcam_jpeg_base64}));
  const state = el("div", {className: "state"});
  const msg = el("div", {className: "error"});
  const ack = el("button", {type: "button", className: "ack", textContent: "Acknowledge"});
  const rev = el("button", {type: "button", className: "mark-reviewed", textContent: "Mark reviewed"});
  const info = el("div", {className: "info"},
    el("div", {}, el("span", {className: "badge " + ev.decision, textContent: ev.decision}), " ",
       el("strong", {className: "label", textContent: ev.label}), " ",
       el("span", {className: "probability", textContent: (100 * ev.probability).toFixed(1) + " %"})),
    el("div", {className: "note", textContent: "camera " + ev.camera + " · " + new Date(ev.time).toLocaleString()}),
    state, el("div", {className: "actions"}, ack, rev), msg);
  const li = el("li", {className: "event"}, pics, info);
  li.dataset.eventId = ev.event_id;
  const item = {li, state, msg, buttons: [ack, rev]};
  ack.addEventListener("click", () => sendReview(ev, "acknowledged", item));
  rev.addEventListener("click", () => sendReview(ev, "reviewed", item));
  return item;
}

// the list is patched, not rebuilt: images are decoded once and a click is never lost to a redraw
async function pollEvents() {
  const errBox = document.getElementById("events-error");
  try {
    const r = await fetch("/api/events", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    const events = await r.json();
    const list = document.getElementById("events");
    const keep = new Set();
    events.forEach((ev, i) => {
      keep.add(ev.event_id);
      let item = shown.get(ev.event_id);
      if (!item) { item = makeEvent(ev); shown.set(ev.event_id, item); }
      showState(item, ev.review);
      if (list.children[i] !== item.li) list.insertBefore(item.li, list.children[i] || null);
    });
    for (const [id, item] of shown) if (!keep.has(id)) { item.li.remove(); shown.delete(id); }
    document.getElementById("no-events").hidden = events.length > 0;
    errBox.hidden = true;
  } catch (e) {
    errBox.textContent = "Cannot reach the kiosk: " + e.message;
    errBox.hidden = false;
  }
  setTimeout(pollEvents, 2000);
}

startCameras();
pollEvents();
</script>
</body></html>
"""

UPLOAD_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mpox-aism — check a photo</title>
<style>""" + _COMMON_CSS + """
main { max-width: 640px; }
form, .panel { background: #fff; border-radius: 8px; padding: 1rem; display: grid; gap: .8rem; margin-bottom: 1rem; }
label { display: grid; gap: .3rem; font-weight: 600; }
input[type=file] { border: 2px dashed #99a; padding: 1rem; background: #fafbff; }
video, #gradcam, #preview { width: 100%; border-radius: 6px; background: #222; }
#result { font-size: 1.2rem; }
</style></head>
<body>
<header><h1>Check a photo</h1><a href="/">Staff page</a></header>
<main>
<p class="note">Research use only: a screening aid, not a diagnosis. Review and suspected answers go to a person.</p>
<form id="form" onsubmit="return false">
  <label>API token <input id="token" type="password" autocomplete="current-password"></label>
  <label>Photo <input id="file" name="image" type="file" accept="image/*" capture="environment"></label>
  <button id="use-camera" type="button">Use camera</button>
  <div id="camera-box" hidden>
    <video id="video" playsinline muted></video>
    <button id="snap" type="button">Take photo</button>
  </div>
</form>
<div class="panel">
  <div id="busy" class="note" hidden>Analysing…</div>
  <div id="error" class="error" hidden></div>
  <div id="result" hidden>
    <span id="decision" class="badge"></span> <strong id="label"></strong>
    <span id="probability"></span>
  </div>
  <img id="gradcam" alt="Grad-CAM overlay" hidden>
</div>
</main>
<script>
"use strict";
const $ = id => document.getElementById(id);
const token = $("token");
token.value = sessionStorage.getItem("kioskToken") || "";  // per tab: the token is not left on a shared phone
token.addEventListener("change", () => sessionStorage.setItem("kioskToken", token.value));

function showError(msg) { $("error").textContent = msg; $("error").hidden = false; }

async function diagnose(blob, name) {
  $("error").hidden = true; $("result").hidden = true; $("gradcam").hidden = true; $("busy").hidden = false;
  const form = new FormData();
  form.append("image", blob, name);
  try {
    const r = await fetch("/v1/diagnose", {method: "POST", body: form,
                                           headers: {"Authorization": "Bearer " + token.value.trim()}});
    let body = null;
    try { body = await r.json(); } catch (e) { /* not JSON: a proxy's error page */ }
    if (!r.ok) {
      const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail))
                                         : "HTTP " + r.status;
      showError((r.status === 401 ? "Check the API token: " : "Not analysed: ") + detail);
      return;
    }
    $("decision").textContent = body.decision;
    $("decision").className = "badge " + body.decision;
    $("label").textContent = body.label;
    $("probability").textContent = (100 * body.probability).toFixed(1) + " %";
    $("result").hidden = false;
    if (body.gradcam_png_base64) {
      $("gradcam").src = "data:image/png;base64," + body.gradcam_png_base64;
      $("gradcam").hidden = false;
    }
  } catch (e) {
    showError("Cannot reach the kiosk: " + e.message);
  } finally {
    $("busy").hidden = true;
  }
}

$("file").addEventListener("change", () => {
  const f = $("file").files[0];
  if (f) diagnose(f, f.name);
});

let stream = null;
$("use-camera").addEventListener("click", async () => {
  // browsers give the camera only to https:// or localhost pages; the file input still opens it on phones
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("The camera needs an https:// page here; use the Photo field, which opens the camera on phones.");
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({video: {facingMode: "environment"}, audio: false});
  } catch (e) {
    showError("No camera: " + e.message);
    return;
  }
  $("video").srcObject = stream;
  await $("video").play();
  $("camera-box").hidden = false;
});

$("snap").addEventListener("click", () => {
  const v = $("video");
  if (!v.videoWidth) { showError("The camera has no picture yet."); return; }
  const c = document.createElement("canvas");
  c.width = v.videoWidth; c.height = v.videoHeight;
  c.getContext("2d").drawImage(v, 0, 0);
  c.toBlob(blob => diagnose(blob, "camera.jpg"), "image/jpeg", 0.92);
});
</script>
</body></html>
"""
