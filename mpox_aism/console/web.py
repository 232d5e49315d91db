"""The console's staff page: one queue of every station's review/suspected events, and each station's health.

Built from the kiosk's own parts (``mpox_aism.kiosk.web.staff``): :func:`install_staff` gives the same logins,
sessions, CSRF, roles, account page and audit trail (the console's own account store: ``mpox-aism users --db
<state>/staff.sqlite3``), :func:`add_action_routes` the same events API and actions (``?station=&state=``
filter it), over different providers — the console's store instead of a kiosk's memory. The page
(``static/console.html``, ``console.js``) shares ``session.js`` with the kiosk's: wording, CSRF, ``textContent``
only. Crops and heat maps are shown exactly when the event carried them, i.e. when the kiosk's privacy settings
let them leave the box; the console keeps no other image.

``GET /api/stations``: each station's availability (online / offline, since when), its last status (cameras and
their state, what the kiosk reports as down) and ``banners``: what needs a person's eye, made in one place,
:func:`station_banners`. A banner lasts exactly as long as its cause in the store: offline until the kiosk says
online; each raised health check (``console.store``: ``camera_stalled`` names the camera, ``outbox_filling``)
until its clear or a snapshot without it; a ``model_changed`` notice for a day. Critical first: a station
offline or a camera stalled means a lane nobody screens.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Literal

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from mpox_aism.console.ingest import iso_to_epoch
from mpox_aism.console.store import ConsoleStore, StationState
from mpox_aism.kiosk.accounts import Accounts
from mpox_aism.kiosk.actions import Action, ReviewStore
from mpox_aism.kiosk.config import SessionLimits
from mpox_aism.kiosk.health import HealthEvent
from mpox_aism.kiosk.status import CameraStatus
from mpox_aism.kiosk.web.staff import add_action_routes, install_staff

EVENTS_SHOWN = 1000


class CameraOut(BaseModel):
    name: str
    state: str = Field(description="running | disconnected | ended | error, in words for the page.")
    last_error: str | None


BannerSeverity = Literal["critical", "warning", "notice"]
SEVERITY_ORDER: dict[BannerSeverity, int] = {"critical": 0, "warning": 1, "notice": 2}


class BannerOut(BaseModel):
    """One thing that needs a person's eye; the page shows ``text`` (textContent) and styles by ``severity``."""

    station_id: str
    kind: str = Field(description="offline | down (from the status) | camera_stalled | outbox_filling | "
                      "model_changed.")
    subject: str | None = Field(description="The camera, 'outbox', 'model' / 'shadow', or what is down.")
    severity: BannerSeverity
    since: dt.datetime | None
    text: str


class StationOut(BaseModel):
    station_id: str
    online: bool | None = Field(description="None: the kiosk never said (no retained availability yet).")
    since: dt.datetime | None = Field(description="When the console learned the availability.")
    status_at: dt.datetime | None
    last_event_at: dt.datetime | None
    events: int
    cameras: list[CameraOut]
    down: list[str] = Field(description="What the kiosk's last status reports as down.")
    banners: list[BannerOut] = Field(description="What needs a person's eye, critical first.")


def _when(t: float | None) -> dt.datetime | None:
    return None if t is None else dt.datetime.fromtimestamp(t, dt.UTC)


def camera_state(c: CameraStatus) -> str:
    if c.done:
        return "ended"
    if c.connected is False:
        return "disconnected"
    return "error" if c.last_error else "running"


def _minute(t: dt.datetime | None) -> str:
    return f" since {t:%Y-%m-%d %H:%M} UTC" if t else ""


def health_banner(s: StationState, e: HealthEvent) -> BannerOut:
    """A raised check or a notice in words; the kiosk's ``detail`` says what it saw."""
    since = _when(iso_to_epoch(e.since))
    if e.check == "camera_stalled":
        what = f"camera {e.subject} has stopped{_minute(since)}"
    elif e.check == "outbox_filling":
        what = f"alerts are queuing on the kiosk{_minute(since)}"
    else:
        what = f"{'model' if e.subject == 'model' else 'shadow model'} changed"
    stale = " (its last report: the station is offline)" if s.online is False and e.state == "raised" else ""
    return BannerOut(station_id=s.station_id, kind=e.check, subject=e.subject,
                     severity="notice" if e.state == "notice" else e.severity, since=since,
                     text=f"{s.station_id}: {what} — {e.detail}{stale}")


def station_banners(s: StationState) -> list[BannerOut]:
    """The station's problems, critical first: offline (its last will), each raised health check (kept while
    offline: its last word, cleared by the snapshot when it returns), what its last status says is down but no
    check covers (a stalled camera is both ``camera:<name>`` down and ``camera_stalled``: one banner), recent
    model notices."""
    out: list[BannerOut] = []
    if s.online is False:
        since = _when(s.availability_at)
        out.append(BannerOut(station_id=s.station_id, kind="offline", subject=None, severity="critical", since=since,
                             text=f"{s.station_id} is offline{_minute(since)}"))
    out += [health_banner(s, e) for e in s.raised]
    if s.status is not None and s.online is not False:
        covered = {f"camera:{e.subject}" for e in s.raised if e.check == "camera_stalled"}
        out += [BannerOut(station_id=s.station_id, kind="down", subject=d, severity="warning", since=None,
                          text=f"{s.station_id}: {d} down") for d in s.status.down if d not in covered]
    out += [health_banner(s, e) for e in s.notices]
    return sorted(out, key=lambda b: SEVERITY_ORDER[b.severity])


def station_out(s: StationState) -> StationOut:
    cams = s.status.cameras if s.status else {}
    return StationOut(station_id=s.station_id, online=s.online, since=_when(s.availability_at),
                      status_at=_when(s.status_at), last_event_at=_when(s.last_event_ts), events=s.events,
                      cameras=[CameraOut(name=n, state=camera_state(c), last_error=c.last_error)
                               for n, c in cams.items()],
                      down=list(s.status.down) if s.status else [], banners=station_banners(s))


def create_console_app(store: ConsoleStore, actions: ReviewStore, accounts: Accounts, *,
                       sessions: SessionLimits | None = None, secure: bool = False,
                       on_action: Callable[[Action], None] | None = None) -> FastAPI:
    """The console's app; ``on_action``: wakes the relay that publishes the action (``console.acks``)."""
    app = FastAPI(title="mpox-aism console", docs_url=None, redoc_url=None, openapi_url=None)
    page = install_staff(app, accounts, sessions=sessions, secure=secure)
    add_action_routes(app, store=actions, accounts=accounts,
                      events_provider=lambda: store.event_payloads(EVENTS_SHOWN),
                      station_of=store.station_of, on_action=on_action)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def console_page() -> Response:
        return page("console.html")

    @app.get("/api/stations", summary="Every station's availability, cameras and banners")
    def stations() -> list[StationOut]:
        return [station_out(s) for s in store.stations()]

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.state.store, app.state.actions = store, actions
    return app
