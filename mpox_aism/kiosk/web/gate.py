"""Refuse ``POST /v1/diagnose`` from its request headers alone, before one byte of the body is read.

A refusal must cost next to nothing: 20 clients that ignore ``Retry-After`` send thousands of requests a
second, and each one that went through FastAPI's routing, dependencies and exception handlers — and had
its photo drained — took CPU from the camera. This pure ASGI middleware answers the wrong token, the
locked-out address, a declared ``Content-Length`` over the upload limit (413) and the rate/queue
refusals (429/503) with a prebuilt JSON answer and never calls ``receive``. The server (uvicorn's h11)
then discards the unread body itself and keeps the connection; a refusal that cannot bound what it would
discard (over the limit, or chunked with no length) closes the connection instead.

A refusal for a client that came back before its ``Retry-After`` is held back that long first (an
``asyncio.sleep``: no CPU), at most ``http.limits.max_held`` at once and ``MAX_HELD_PER_CLIENT`` per client;
beyond that it is sent at once (``kiosk.web.limits``), so held refusals never take every connection.

Only requests it admitted reach the app, marked with :data:`GATED` in the scope: the route then skips the
checks it would otherwise make (the staff page's upload, which authorizes by session, still makes them).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from fastapi import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from mpox_aism.kiosk.web.limits import Limiter, Refused

MAX_HELD_PER_CLIENT = 2  # one address cannot take the held places from the others
GATED = "mpox_aism.gated"  # scope key: the gate checked the token and admitted this request (it releases it)

CheckToken = Callable[[str | None], None]  # the Authorization header → raises HTTPException (401/503)


class HeaderGate:
    """ASGI middleware for one path: token, lockout, declared size and admission from the headers."""

    def __init__(self, app: ASGIApp, *, path: str, check_token: CheckToken, limiter: Limiter | None,
                 body_limit: int, max_upload_bytes: int, on_refused: Callable[[int], None]) -> None:
        self.app, self.path, self.check_token, self.limiter = app, path, check_token, limiter
        self.body_limit, self.max_upload_bytes, self.on_refused = body_limit, max_upload_bytes, on_refused
        self.held: dict[str, int] = {}  # client → refusals being held back now

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        authorization = length = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        client = scope["client"][0] if scope.get("client") else "unknown"
        lim = self.limiter
        admitted = False
        try:
            if lim is not None:
                lim.check_locked(client)
            try:
                self.check_token(authorization)
            except HTTPException as e:
                if lim is not None and e.status_code == 401:
                    lim.auth_failed(client)
                raise
            if length is not None and length.isdigit() and int(length) > self.body_limit:
                raise HTTPException(413, f"upload larger than {self.max_upload_bytes} bytes")
            if lim is not None:
                lim.admit(client)
                admitted = True
        except Refused as r:
            if r.hold_s > 0 and self._may_hold(client):
                self.held[client] = self.held.get(client, 0) + 1
                try:
                    await asyncio.sleep(r.hold_s)
                finally:
                    self.held[client] -= 1
                    if not self.held[client]:
                        del self.held[client]
            await self._refuse(send, r.status, r.detail, {"retry-after": r.retry_after}, close=chunked)
            return
        except HTTPException as e:
            # 413: the body it declared is more than we would discard; keep-alive would read it all
            await self._refuse(send, e.status_code, str(e.detail), e.headers or {},
                               close=chunked or e.status_code == 413)
            return
        scope[GATED] = True
        try:
            await self.app(scope, receive, send)
        finally:
            if admitted:
                lim.release()  # type: ignore[union-attr]

    def _may_hold(self, client: str) -> bool:
        limit = self.limiter.limits.max_held if self.limiter is not None else 0
        return sum(self.held.values()) < limit and self.held.get(client, 0) < MAX_HELD_PER_CLIENT

    async def _refuse(self, send: Send, status: int, detail: str, headers: dict[str, str], *, close: bool) -> None:
        body = json.dumps({"detail": detail}).encode()
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        if close:
            raw.append((b"connection", b"close"))
        self.on_refused(status)
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})
