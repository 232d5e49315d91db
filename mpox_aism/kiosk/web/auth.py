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

Sessions end from outside too. Each remembers its account's ``credential_epoch`` (``kiosk.accounts``); the
middleware already re-reads the account on every request (one primary-key read, no cache: a cache would
only let an ended session live on for its TTL), so ``mpox-aism users passwd|disable|end-sessions``, run as
another process, ends the account's sessions at their next request. A password changed here (``POST
/api/password``, which asks for the current one, throttled like a log-in) keeps this session and ends the
others. Admins list sessions (``GET /api/sessions``: a separate random id, never the cookie token) and end
one or all of an account's. The audit trail gets every log-in, failed log-in (the name tried and the
address, never the password), lock-out start, log-out, password change and session ended by an admin;
attempts refused during a lock-out are not written, so a guesser cannot fill the disk through the audit.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from mpox_aism.kiosk.accounts import MAX_PASSWORD, AccountError, Accounts, Role, User
from mpox_aism.kiosk.config import SessionLimits
from mpox_aism.kiosk.web.limits import Lockout

SESSION_COOKIE, LOGIN_COOKIE, CSRF_HEADER = "mpox_session", "mpox_login", "x-csrf-token"
PUBLIC = frozenset({"/login", "/api/login", "/healthz", "/metrics", "/v1/diagnose", "/docs", "/redoc",
                    "/openapi.json", "/docs/oauth2-redirect"})
PUBLIC_PREFIXES = ("/static/",)
PAGES = frozenset({"/", "/upload", "/account"})  # a browser navigation: sent to the login page, not given a 401
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Session:
    id: str  # names the session in lists and the audit trail; not the cookie token, which is never shown
    user: User
    csrf: str
    epoch: int  # the account's credential epoch at log-in: a newer one in the store ends this session
    address: str
    created: float  # the limits' clock (monotonic)…
    seen: float
    started_at: dt.datetime  # …and the wall clock, for people
    seen_at: dt.datetime


class Sessions:
    """The logged-in sessions, in memory; a lock because the login route (threadpool) and the middleware
    (event loop) both change them."""

    def __init__(self, limits: SessionLimits, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], dt.datetime] = _utc_now) -> None:
        self.limits, self.clock, self.wall = limits, clock, wall
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self.passwords = Lockout(limits.max_failures, limits.window_s, limits.lockout_s, clock)

    def _expired(self, s: Session, now: float) -> bool:
        return now - s.seen > self.limits.idle_s or now - s.created > self.limits.max_age_s

    def _purge(self, now: float) -> None:
        """Forget expired sessions, so those never presented again do not pile up."""
        for token in [t for t, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[token]

    def create(self, user: User, address: str = "?") -> tuple[str, Session]:
        now, wall = self.clock(), self.wall()
        token = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(9), user, secrets.token_urlsafe(24), user.epoch, address,
                          now, now, wall, wall)
        with self._lock:
            self._purge(now)
            self._sessions[token] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        now = self.clock()
        with self._lock:
            s = self._sessions.get(token or "")
            if s is None:
                return None
            if self._expired(s, now):
                del self._sessions[token]  # type: ignore[index]
                return None
            s.seen, s.seen_at = now, self.wall()
            return s

    def drop(self, token: str | None) -> Session | None:
        with self._lock:
            return self._sessions.pop(token or "", None)

    def all(self) -> list[Session]:
        """The live sessions, oldest first."""
        with self._lock:
            self._purge(self.clock())
            return sorted(self._sessions.values(), key=lambda s: s.started_at)

    def end(self, session_id: str) -> Session | None:
        """End the session with this id (not its token); the session, or None when there is none."""
        with self._lock:
            for token, s in self._sessions.items():
                if hmac.compare_digest(s.id, session_id):
                    return self._sessions.pop(token)
        return None

    def end_user(self, name: str, *, keep: Session | None = None) -> int:
        """End every session of account ``name`` but ``keep``; how many ended."""
        with self._lock:
            tokens = [t for t, s in self._sessions.items() if s.user.name == name and s is not keep]
            for token in tokens:
                del self._sessions[token]
        return len(tokens)


class LoginIn(BaseModel):
    name: str = Field(max_length=64)
    password: str = Field(max_length=MAX_PASSWORD)


class SessionOut(BaseModel):
    """This session, for the pages: who, and the CSRF token every change must carry."""

    id: str
    user: str
    role: Role
    csrf: str


class SessionInfo(BaseModel):
    """A live session in the admins' list: never its token (whoever read the list could take it over)."""

    id: str
    user: str
    role: Role
    created: dt.datetime
    last_seen: dt.datetime
    address: str
    current: bool = Field(description="The session that asked.")


class SessionsEnded(BaseModel):
    ended: int


class PasswordIn(BaseModel):
    current: str = Field(max_length=MAX_PASSWORD)
    new: str = Field(max_length=MAX_PASSWORD)


class PasswordChanged(BaseModel):
    user: str
    other_sessions_ended: int


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


def _address(request: Request) -> str:
    return f"addr:{request.client.host if request.client else '?'}"


def install_auth(app: FastAPI, accounts: Accounts, *, limits: SessionLimits | None = None, secure: bool = False,
                 login_page: Callable[[], Response]) -> Sessions:
    """The middleware and the login/logout/session/password routes; ``secure``: the server speaks TLS."""
    sessions = Sessions(limits or SessionLimits())
    cookie_opts: dict[str, Any] = {"httponly": True, "samesite": "strict", "secure": secure, "path": "/"}
    app.state.accounts, app.state.sessions = accounts, sessions

    def failed(name: str, keys: tuple[str, ...], action: str, detail: str) -> None:
        """A wrong password: counted for the lock-out, audited, and so is a lock-out it starts."""
        accounts.record(name, action, detail=detail)
        for key in sessions.passwords.failed(*keys):
            accounts.record(name, "login locked out", detail=f"{key} for {sessions.limits.lockout_s:g} s after "
                                                             f"{sessions.limits.max_failures} wrong passwords")

    def refuse_if_locked(keys: tuple[str, ...]) -> None:
        wait = sessions.passwords.wait(*keys)
        if wait > 0:  # not audited: a guesser would fill the disk; the lock-out's start is
            raise HTTPException(429, "too many wrong passwords: try again later",
                                headers={"Retry-After": str(int(wait) + 1)})

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        if is_public(path):
            return await call_next(request)
        token = request.cookies.get(SESSION_COOKIE)
        session = sessions.get(token)
        if session is not None:  # the account as it is now: `mpox-aism users` may have changed it meanwhile
            now = accounts.get(session.user.name)
            if now is None or now.disabled or now.epoch != session.epoch:
                sessions.drop(token)
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
        address = _address(request)
        keys = (f"name:{body.name}", address)
        refuse_if_locked(keys)
        user = accounts.verify(body.name, body.password)
        if user is None:
            failed(body.name, keys, "login failed", address)
            raise HTTPException(401, "wrong name or password")
        sessions.passwords.succeeded(*keys)
        token, session = sessions.create(user, address.removeprefix("addr:"))
        accounts.record(user.name, "login", detail=f"{address} session {session.id}")
        r = JSONResponse({"user": user.name, "role": user.role, "csrf": session.csrf})
        r.set_cookie(SESSION_COOKIE, token, max_age=int(sessions.limits.max_age_s), **cookie_opts)
        r.delete_cookie(LOGIN_COOKIE, path="/")
        return r

    @app.get("/api/session", summary="Who is logged in, and the CSRF token for this session")
    def session_info(request: Request) -> SessionOut:
        s: Session = request.state.session  # the middleware let the request in
        return SessionOut(id=s.id, user=s.user.name, role=s.user.role, csrf=s.csrf)

    @app.post("/api/logout", summary="End this session")
    def logout(request: Request) -> JSONResponse:
        user = require(request, "viewer")
        ended = sessions.drop(request.cookies.get(SESSION_COOKIE))
        accounts.record(user.name, "logout", detail=f"session {ended.id}" if ended else "")
        r = JSONResponse({"logged_out": user.name})
        r.delete_cookie(SESSION_COOKIE, path="/")
        return r

    @app.post("/api/password", summary="Change my password: this session stays, the account's others end",
              responses={403: {"description": "The current password is wrong (counts towards the lock-out)."},
                         422: {"description": "The new password is refused: the message says why."},
                         429: {"description": "Too many wrong passwords: locked out for a while (Retry-After)."}})
    def change_password(request: Request, body: PasswordIn) -> PasswordChanged:
        user = require(request, "viewer")
        session: Session = request.state.session
        address = _address(request)
        keys = (f"name:{user.name}", address)  # a stolen session must not become a password oracle
        refuse_if_locked(keys)
        if accounts.verify(user.name, body.current) is None:
            failed(user.name, keys, "password change refused", f"wrong current password; {address}")
            raise HTTPException(403, "the current password is wrong")
        sessions.passwords.succeeded(*keys)
        if hmac.compare_digest(body.new.encode(), body.current.encode()):
            raise HTTPException(422, "the new password is the current one: choose another")
        try:
            changed = accounts.set_password(user.name, body.new, by=user.name,
                                            detail=f" on the staff page ({address}): session {session.id} kept, "
                                                   "the others ended")
        except AccountError as e:
            raise HTTPException(422, str(e)) from None
        session.user, session.epoch = changed, changed.epoch
        return PasswordChanged(user=user.name, other_sessions_ended=sessions.end_user(user.name, keep=session))

    @app.get("/api/sessions", summary="The live staff sessions (admins); never their tokens")
    def list_sessions(request: Request) -> list[SessionInfo]:
        require(request, "admin")
        me: Session = request.state.session
        return [SessionInfo(id=s.id, user=s.user.name, role=s.user.role, created=s.started_at,
                            last_seen=s.seen_at, address=s.address, current=s is me) for s in sessions.all()]

    @app.delete("/api/sessions/{session_id}", summary="End one session (admins)",
                responses={404: {"description": "No such live session."}})
    def end_session(request: Request, session_id: str) -> SessionsEnded:
        admin = require(request, "admin")
        ended = sessions.end(session_id)
        if ended is None:
            raise HTTPException(404, "no such session (it may have ended already)")
        accounts.record(admin.name, "session ended", detail=f"{ended.user.name} session {ended.id}")
        return SessionsEnded(ended=1)

    @app.delete("/api/users/{name}/sessions", summary="End every session of an account (admins)",
                responses={404: {"description": "No such account."}})
    def end_user_sessions(request: Request, name: str) -> SessionsEnded:
        admin = require(request, "admin")
        if accounts.get(name) is None:
            raise HTTPException(404, f"no account {name[:64]!r}")
        n = sessions.end_user(name)
        accounts.record(admin.name, "sessions ended", detail=f"{name}: {n}")
        return SessionsEnded(ended=n)

    return sessions
