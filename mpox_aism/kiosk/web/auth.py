"""Logins for people: sessions, CSRF, login throttling, roles — in front of every staff route.

Every route needs a logged-in session except the public few (``PUBLIC``: the login page and its API,
the page assets, ``/healthz``, ``/metrics``, the OpenAPI pages, and the machine API ``/v1/diagnose``
with its own bearer token). Without a session a page request is sent to ``/login`` (303) and any
other request answered 401 — the rule is enforced once, in a middleware, so a new route cannot forget
it (``tests/kiosk/web/test_auth.py`` walks the app's routes). Sessions live in memory (a restart logs
everyone out), expire after ``idle_s`` without a request or ``max_age_s`` in all; the cookie is
HttpOnly, SameSite=Strict, and Secure when the server speaks TLS. Every state-changing request
carries the session's CSRF token in ``X-CSRF-Token``; the login itself a token from ``GET /api/login``
(double submit: header = cookie). ``max_failures`` wrong passwords for a name or from an address
within ``window_s`` lock that name / address out for ``lockout_s`` (429 + Retry-After).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from mpox_aism.kiosk.accounts import Accounts, Role, User
from mpox_aism.kiosk.config import SessionLimits
from mpox_aism.kiosk.web.limits import Lockout

SESSION_COOKIE, LOGIN_COOKIE, CSRF_HEADER = "mpox_session", "mpox_login", "x-csrf-token"
PUBLIC = frozenset({"/login", "/api/login", "/healthz", "/metrics", "/v1/diagnose", "/docs", "/redoc",
                    "/openapi.json", "/docs/oauth2-redirect"})
PUBLIC_PREFIXES = ("/static/",)
PAGES = frozenset({"/", "/upload"})  # a browser navigation: sent to the login page, not given a 401
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class Session:
    user: User
    csrf: str
    created: float
    seen: float


class Sessions:
    def __init__(self, limits: SessionLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits, self.clock = limits, clock
        self._sessions: dict[str, Session] = {}
        self.passwords = Lockout(limits.max_failures, limits.window_s, limits.lockout_s, clock)

    def create(self, user: User) -> tuple[str, Session]:
        now = self.clock()
        token = secrets.token_urlsafe(32)
        self._sessions[token] = Session(user, secrets.token_urlsafe(24), now, now)
        return token, self._sessions[token]

    def get(self, token: str | None) -> Session | None:
        s = self._sessions.get(token or "")
        now = self.clock()
        if s is None:
            return None
        if now - s.seen > self.limits.idle_s or now - s.created > self.limits.max_age_s:
            del self._sessions[token]  # type: ignore[arg-type]
            return None
        s.seen = now
        return s

    def drop(self, token: str | None) -> None:
        self._sessions.pop(token or "", None)


class LoginIn(BaseModel):
    name: str = Field(max_length=64)
    password: str = Field(max_length=1024)


def current_user(request: Request) -> User | None:
    return getattr(request.state, "user", None)


def require(request: Request, role: Role) -> User:
    """The logged-in user, when the account holds ``role``; else 401 / 403."""
    user = current_user(request)
    if user is None:
        raise HTTPException(401, "log in first")
    if not user.may(role):
        raise HTTPException(403, f"your account ({user.role}) may not do this: it needs {role}")
    return user


def is_public(path: str) -> bool:
    return path in PUBLIC or path.startswith(PUBLIC_PREFIXES)


def install_auth(app: FastAPI, accounts: Accounts, *, limits: SessionLimits | None = None, secure: bool = False,
                 login_page: Callable[[], Response]) -> Sessions:
    """The middleware and the login/logout/session routes; ``secure``: the server speaks TLS."""
    sessions = Sessions(limits or SessionLimits())
    cookie_opts: dict[str, Any] = {"httponly": True, "samesite": "strict", "secure": secure, "path": "/"}
    app.state.accounts, app.state.sessions = accounts, sessions

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        if is_public(path):
            return await call_next(request)
        session = sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is not None:  # the account as it is now: disabled or changed by `mpox-aism users` meanwhile
            now = accounts.get(session.user.name)
            if now is None or now.disabled:
                sessions.drop(request.cookies.get(SESSION_COOKIE))
                session = None
            else:
                session.user = now
        if session is None:
            if request.method in SAFE_METHODS and path in PAGES:
                return RedirectResponse("/login", status_code=303)
            return JSONResponse({"detail": "log in first"}, status_code=401)
        if request.method not in SAFE_METHODS and not hmac.compare_digest(
                request.headers.get(CSRF_HEADER, ""), session.csrf):
            return JSONResponse({"detail": "missing or wrong CSRF token: reload the page"}, status_code=403)
        request.state.user, request.state.session = session.user, session
        return await call_next(request)

    @app.get("/login", include_in_schema=False)
    def login_form() -> Response:
        return login_page()

    @app.get("/api/login", summary="A login CSRF token (also set as a cookie: double submit)")
    def login_token() -> JSONResponse:
        token = secrets.token_urlsafe(24)
        r = JSONResponse({"csrf": token}, headers={"Cache-Control": "no-store"})
        r.set_cookie(LOGIN_COOKIE, token, max_age=600, **cookie_opts)
        return r

    @app.post("/api/login", summary="Log in a staff member",
              responses={401: {"description": "Wrong name or password (which one is not said)."},
                         403: {"description": "Missing login CSRF token."},
                         429: {"description": "Too many wrong passwords: locked out for a while (Retry-After)."}})
    def login(request: Request, body: LoginIn) -> JSONResponse:
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), expected):
            raise HTTPException(403, "missing login token: reload the login page")
        address = f"addr:{request.client.host if request.client else '?'}"
        keys = (f"name:{body.name}", address)
        wait = sessions.passwords.wait(*keys)
        if wait > 0:
            raise HTTPException(429, "too many wrong passwords: try again later",
                                headers={"Retry-After": str(int(wait) + 1)})
        user = accounts.verify(body.name, body.password)
        if user is None:
            sessions.passwords.failed(*keys)
            accounts.record(body.name, "login failed", detail=address)
            raise HTTPException(401, "wrong name or password")
        sessions.passwords.succeeded(*keys)
        token, session = sessions.create(user)
        accounts.record(user.name, "login", detail=address)
        r = JSONResponse({"user": user.name, "role": user.role, "csrf": session.csrf})
        r.set_cookie(SESSION_COOKIE, token, max_age=int(sessions.limits.max_age_s), **cookie_opts)
        r.delete_cookie(LOGIN_COOKIE, path="/")
        return r

    @app.get("/api/session", summary="Who is logged in, and the CSRF token for this session")
    def session_info(request: Request) -> dict[str, str]:
        s: Session = request.state.session  # the middleware let the request in
        return {"user": s.user.name, "role": s.user.role, "csrf": s.csrf}

    @app.post("/api/logout", summary="End this session")
    def logout(request: Request) -> JSONResponse:
        user = require(request, "viewer")
        sessions.drop(request.cookies.get(SESSION_COOKIE))
        accounts.record(user.name, "logout")
        r = JSONResponse({"logged_out": user.name})
        r.delete_cookie(SESSION_COOKIE, path="/")
        return r

    return sessions
