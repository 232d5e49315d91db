"""The console's staff page: one queue of every station's review/suspected events, and each station's health.

Built from the kiosk's own parts (``mpox_aism.kiosk.web.staff``): :func:`install_staff` gives the same logins,
sessions, CSRF, roles, account page and audit trail (the console's own account store: ``mpox-aism users --db
<state>/staff.sqlite3``), :func:`add_action_routes` the same events API and actions (``?station=&state=``
filter it), over different providers — the console's store instead of a kiosk's memory. The page
(``static/console.html``, ``console.js``) shares ``session.js`` with the kiosk's: wording, CSRF, ``textContent``
only. Crops and heat maps are shown exactly when the event carried them, i.e. when the kiosk's privacy settings
let them leave the box; the console keeps no other image.

``GET /api/stations``: each station's availability (online / offline, since when), its last status (cameras and
their state, what the kiosk reports as down) and ``banners``: what needs a person's eye. The banners are made
by :func:`station_banners`, the one place a later health feed (``<root>/<station>/health``, not published yet)
adds its findings.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from mpox_aism.console.store import ConsoleStore, StationState
from mpox_aism.kiosk.accounts import Accounts
from mpox_aism.kiosk.actions import Action, ReviewStore
from mpox_aism.kiosk.config import SessionLimits
from mpox_aism.kiosk.status import CameraStatus
from mpox_aism.kiosk.web.staff import add_action_routes, install_staff

EVENTS_SHOWN = 1000


class CameraOut(BaseModel):
    name: str
    state: str = Field(description="running | disconnected | ended | error, in words for the page.")
    last_error: str | None


class StationOut(BaseModel):
    station_id: str
    online: bool | None = Field(description="None: the kiosk never said (no retained availability yet).")
    since: dt.datetime | None = Field(description="When the console learned the availability.")
    status_at: dt.datetime | None
    last_event_at: dt.datetime | None
    events: int
    cameras: list[CameraOut]
    down: list[str] = Field(description="What the kiosk's last status reports as down.")
    banners: list[str] = Field(description="What needs a person's eye, in words.")


def _when(t: float | None) -> dt.datetime | None:
    return None if t is None else dt.datetime.fromtimestamp(t, dt.UTC)


def camera_state(c: CameraStatus) -> str:
    if c.done:
        return "ended"
    if c.connected is False:
        return "disconnected"
    return "error" if c.last_error else "running"


def station_banners(s: StationState) -> list[str]:
    """The station's problems in words: offline, and what its last status says is down. The hook for health
    events (``<root>/<station>/health``) once kiosks publish them."""
    out: list[str] = []
    if s.online is False:
        since = _when(s.availability_at)
        out.append(f"{s.station_id} is offline" + (f" since {since:%Y-%m-%d %H:%M} UTC" if since else ""))
    if s.status is not None and s.online is not False:
        out += [f"{s.station_id}: {d} down" for d in s.status.down]
    return out


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
