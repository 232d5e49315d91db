"""The staff pages (the paper's PC and phone apps), served by the kiosk itself.

``GET /``: live camera views and the recent review/suspected events, each with "Acknowledge" / "Mark
reviewed". ``GET /upload``: a photo from a file or the device camera sent to ``/v1/diagnose``. ``GET /account``:
change one's password; admins also see and end the live sessions (the routes are in ``web.auth``).
The pages are static files in ``mpox_aism/kiosk/web/static`` (HTML, CSS, JS; no CDN: the checkpoint LAN is
offline), served from a fixed list read once at start-up, so no request path reaches the file system.
Everything the server sends is put in the page with ``textContent`` / ``src`` only, never
``innerHTML``, so a label or a name cannot inject markup.

Actions (acknowledged / reviewed) are written to SQLite (``mpox_aism.kiosk.actions.ReviewStore``: one row per
action, never updated), so who acknowledged what survives a restart and stays auditable; ``/api/events`` shows
each event's state under the one rule of ``kiosk.actions`` and its whole history, wherever its actions were
made (this page, a console's: ``mpox_aism.kiosk.acks``). The console's page is built from the same parts
(:func:`install_staff`, :func:`add_action_routes`): one implementation of logins, sessions, CSRF, roles, audit
and actions, with different providers.

Labels (issue 26): a reviewer says what an event's crop really shows — one of the 8 classes or "not skin /
unusable" — on the event card the page already shows, so the privacy rule for images is unchanged: the
page shows a crop only when the event itself carried it, and no route here serves a kept crop. The label
goes to the label store (``mpox_aism.kiosk.labels``, with its history) and to the audit trail; an event
whose crop is no longer on the box cannot be labeled (410), because a label without its image trains
nothing.

Research use only: the pages show a screening aid, never a diagnosis.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from mpox_aism.kiosk.accounts import Accounts
from mpox_aism.kiosk.actions import Action, ActionKind, ReviewStore, settled
from mpox_aism.kiosk.config import SessionLimits
from mpox_aism.kiosk.labels import LABEL_CHOICES, UNUSABLE, CropGone, LabelRecord, LabelStore
from mpox_aism.kiosk.web.auth import install_auth, require
from mpox_aism.kiosk.web.reference import ReferenceLibrary

SHOWN_DECISIONS = frozenset({"other_condition", "review", "suspected"})  # every published state
NO_STORE = {"Cache-Control": "no-store"}  # live frames and event lists must never come from a cache
STATIC_DIR = Path(__file__).with_name("static")
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".js": "text/javascript; charset=utf-8"}


def _static_files() -> dict[str, tuple[bytes, str]]:
    """name → (bytes, media type) of every page asset, read once."""
    return {p.name: (p.read_bytes(), MEDIA_TYPES[p.suffix]) for p in sorted(STATIC_DIR.iterdir())
            if p.suffix in MEDIA_TYPES}


class ReviewIn(BaseModel):
    """A staff action on one event; a wrong ``action`` is FastAPI's 422."""

    action: ActionKind
    by: str = Field("", max_length=100, description="Ignored: who acted is the logged-in account.")
    note: str = Field("", max_length=2000)


class LabelIn(BaseModel):
    """A reviewer's label for one event's crop; checked against the choices in the route (a 422 naming them)."""

    label: str = Field(description=f"One of {', '.join(LABEL_CHOICES)}.")


class LabelChoice(BaseModel):
    value: str
    text: str = Field(description="How the page names it.")


LABEL_WORDS = {UNUSABLE: "not skin / unusable"}


ReviewState = Literal["open", "acknowledged", "reviewed"]


def install_staff(app: FastAPI, accounts: Accounts, *, sessions: SessionLimits | None = None,
                  secure: bool = False) -> Callable[[str], Response]:
    """What every staff app shares (the kiosk's and the console's): logins, sessions, CSRF, roles and audit
    (``web.auth``), the login and account pages, the page assets and the audit export. Returns ``page(name)``,
    which serves one of the static pages."""
    files = _static_files()

    def page(name: str) -> Response:
        body, media_type = files[name]
        return Response(body, media_type=media_type, headers=NO_STORE)

    install_auth(app, accounts, limits=sessions, secure=secure, login_page=lambda: page("login.html"))

    @app.get("/account", response_class=HTMLResponse, include_in_schema=False)
    def account_page() -> Response:
        return page("account.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static_file(name: str) -> Response:
        if name not in files or name.endswith(".html"):
            raise HTTPException(404, "no such file")
        return page(name)

    @app.get("/api/audit.csv", summary="The audit trail (admins)", response_class=Response)
    def audit_csv(request: Request) -> Response:
        require(request, "admin")
        out = io.StringIO()
        accounts.export_csv(out)
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=NO_STORE)

    return page


def review_state(review: Action | None) -> ReviewState:
    return "open" if review is None else review.action


def add_action_routes(app: FastAPI, *, store: ReviewStore, accounts: Accounts,
                      events_provider: Callable[[], list[dict[str, Any]]],
                      station_of: Callable[[str], str | None],
                      on_action: Callable[[Action], None] | None = None,
                      annotate: Callable[[list[dict[str, Any]], list[str]], list[dict[str, Any]]] | None = None,
                      ) -> None:
    """The events queue and the staff's actions on it: one implementation for the kiosk and the console.

    ``events_provider()``: event payloads (``mpox_aism.kiosk.events``), any order; only published states are
    shown, newest first, each with its ``review`` (its state under ``kiosk.actions``' rule; None: open) and its
    ``history``. ``GET /api/events?station=&state=&decision=`` filters them. ``station_of(event_id)``: the
    station of an event staff may act on (None: 404). ``on_action(action)``: called once a person's action is
    recorded and audited (the caller sends it on). ``annotate(events, ids)``: the caller's own fields.
    """

    def shown_events() -> list[dict[str, Any]]:
        events = [e for e in events_provider() if e.get("decision") in SHOWN_DECISIONS and e.get("event_id")]
        # ISO 8601 UTC strings sort as times; stable sort keeps the provider's order for equal times
        return sorted(events, key=lambda e: str(e.get("time", "")), reverse=True)

    @app.get("/api/events", summary="Recent review/suspected events, newest first, with their state and history")
    def list_events(station: str | None = None, state: ReviewState | None = None,
                    decision: str | None = None) -> Response:
        events = [e for e in shown_events() if (station is None or e.get("station_id") == station)
                  and (decision is None or e.get("decision") == decision)]
        ids = [str(e["event_id"]) for e in events]
        histories = store.histories(ids)
        latest = {i: settled(h) for i, h in histories.items()}
        if state is not None:
            keep = [review_state(latest.get(i)) == state for i in ids]
            events = [e for e, k in zip(events, keep, strict=True) if k]
            ids = [i for i, k in zip(ids, keep, strict=True) if k]
        body = [{**e, "review": _dump(latest.get(i)), "history": [_dump(a) for a in histories.get(i, [])]}
                for e, i in zip(events, ids, strict=True)]
        return JSONResponse(annotate(body, ids) if annotate else body, headers=NO_STORE)

    @app.post("/api/events/{event_id}/review", response_model=Action, summary="Record a staff action on an event",
              responses={404: {"description": "No such recent event."}})
    def review_event(event_id: str, review: ReviewIn, request: Request) -> Action:
        user = require(request, "reviewer")
        station = station_of(event_id)
        if station is None:
            raise HTTPException(404, f"no recent event {event_id!r}")
        recorded = store.record(event_id=event_id, station_id=station, action=review.action, by=user.name,
                                note=review.note)  # who, from the login
        accounts.record(user.name, review.action, event_id=event_id, detail=review.note)
        if on_action is not None:
            on_action(recorded)
        return recorded

    @app.get("/api/events/{event_id}/reviews", summary="Every recorded action on an event, in history order")
    def event_reviews(event_id: str) -> list[Action]:
        return store.history(event_id)


def _dump(a: Action | None) -> dict[str, Any] | None:
    return None if a is None else a.model_dump(by_alias=True)


def add_staff_routes(app: FastAPI, *, events_provider: Callable[[], list[dict[str, Any]]],
                     frame_provider: Callable[[str], bytes | None], cameras: Callable[[], list[str]],
                     reviews_path: Path, accounts: Accounts, references: ReferenceLibrary | None = None,
                     sessions: SessionLimits | None = None, secure: bool = False,
                     labels: LabelStore | None = None, station_id: str = "kiosk",
                     on_action: Callable[[Action], None] | None = None) -> ReviewStore:
    """Add the kiosk's staff pages and their JSON API to its app, behind staff logins; returns the review store.

    ``accounts``: the staff accounts (``mpox_aism.kiosk.accounts``); every route here needs a logged-in session
    (``mpox_aism.kiosk.web.auth``), reviews need the ``reviewer`` role and are recorded in the audit trail under
    the account's name. ``secure``: the server speaks TLS (cookies are then Secure). The shared parts are
    :func:`install_staff` and :func:`add_action_routes` (the console's page is built from them too).

    ``events_provider()``: the recent events (``mpox_aism.kiosk.events`` payloads), any order; only review and
    suspected ones are shown. ``frame_provider(camera)``: the camera's latest frame as JPEG, or ``None``
    before the first one. ``cameras()``: the camera names, asked on every page load. ``labels``: the crops
    kept for staff labels (None: none are kept, and a label is refused with 410). ``station_id``: this kiosk,
    the origin of its page's actions; ``on_action``: sends one on (``mpox_aism.kiosk.acks``).
    """
    store = ReviewStore(reviews_path, origin=station_id)
    page = install_staff(app, accounts, sessions=sessions, secure=secure)

    def is_recent(event_id: str) -> bool:
        return any(str(e.get("event_id")) == event_id for e in events_provider())

    def with_labels(body: list[dict[str, Any]], ids: list[str]) -> list[dict[str, Any]]:
        labeled = labels.latest(ids) if labels else {}
        kept = labels.kept(ids) if labels else set()
        # "label" is the model's class: the staff's is "staff_label"; "crop_kept": can it still be labeled
        return [{**e, "staff_label": labeled[i].model_dump() if i in labeled else None, "crop_kept": i in kept}
                for e, i in zip(body, ids, strict=True)]

    add_action_routes(app, store=store, accounts=accounts, events_provider=events_provider,
                      station_of=lambda event_id: station_id if is_recent(event_id) else None,
                      on_action=on_action, annotate=with_labels)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def staff_page() -> Response:
        return page("staff.html")

    @app.get("/upload", response_class=HTMLResponse, include_in_schema=False)
    def upload_page() -> Response:
        return page("upload.html")

    @app.get("/api/reference/{label}", summary="Typical photos of a class, for comparison (may be empty)")
    def reference_list(label: str) -> dict[str, Any]:
        if references is None:
            return {"label": label, "images": []}
        try:
            n = len(references.images(label))
        except KeyError:
            raise HTTPException(404, f"unknown class {label!r}") from None
        return {"label": label, "images": [f"/api/reference/{label}/{i}.jpg" for i in range(n)]}

    @app.get("/api/reference/{label}/{index}.jpg", include_in_schema=False)
    def reference_image(label: str, index: int) -> Response:
        try:
            images = references.images(label) if references else []
        except KeyError:
            images = []
        if not 0 <= index < len(images):
            raise HTTPException(404, "no such reference image")
        return Response(images[index], media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

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

    @app.get("/api/label-choices", summary="What a reviewer may call an event's crop, in the page's words")
    def label_choices() -> list[LabelChoice]:
        return [LabelChoice(value=c, text=LABEL_WORDS.get(c, c)) for c in LABEL_CHOICES]

    @app.post("/api/events/{event_id}/label", response_model=LabelRecord,
              summary="Label an event's kept crop (reviewers; the latest label counts, the history is kept)",
              responses={403: {"description": "The account may not label (viewers)."},
                         404: {"description": "No such event."},
                         410: {"description": "The event's crop is no longer on the box (retention limit), or "
                                              "was never kept: the label is not recorded."},
                         422: {"description": "Not one of the allowed labels (the message names them)."}})
    def label_event(event_id: str, body: LabelIn, request: Request) -> LabelRecord:
        user = require(request, "reviewer")
        if body.label not in LABEL_CHOICES:
            raise HTTPException(422, f"unknown label {body.label[:64]!r}; choose one of {', '.join(LABEL_CHOICES)}")
        if not is_recent(event_id) and (labels is None or not labels.known(event_id)):
            raise HTTPException(404, f"no event {event_id!r}")
        if labels is None:
            raise HTTPException(410, f"the crop of event {event_id} is not on the box: this kiosk keeps no crops "
                                     "for labels; the label was not recorded")
        try:
            recorded = labels.label(event_id, body.label, user.name)  # who, from the login
        except CropGone as e:
            raise HTTPException(410, str(e)) from None
        accounts.record(user.name, "label", event_id=event_id, detail=body.label)
        return recorded

    @app.get("/api/events/{event_id}/labels", summary="Every label given to an event's crop, oldest first")
    def event_labels(event_id: str) -> list[LabelRecord]:
        return labels.history(event_id) if labels else []

    @app.post("/api/diagnose", summary="Classify one photo from the upload page (reviewers; same limits as the API)",
              response_model_exclude_none=True, include_in_schema=False)
    async def diagnose_upload(request: Request) -> Any:
        result = await request.app.state.diagnose(request, lambda r: require(r, "reviewer"))
        user = require(request, "reviewer")
        accounts.record(user.name, "upload", detail=f"{result.decision} {result.label} {result.probability:.2f}")
        return result.model_dump(exclude_none=True)

    app.state.reviews, app.state.labels = store, labels
    return store
