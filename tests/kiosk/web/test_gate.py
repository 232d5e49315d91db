"""Refusals cost next to nothing: ``POST /v1/diagnose`` is refused from its headers, before the body is read.

A raw socket sends only the request headers (declaring a body of megabytes) and must get its answer
without sending one byte of body: if the server waited for the body, the read would time out. No timing
asserts: the machine is shared; the timeout is only a generous bound.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="fastapi not installed: pip install fastapi uvicorn python-multipart")

from pydantic import ValidationError

from mpox_aism.kiosk.config import ApiLimits, HttpConfig
from mpox_aism.kiosk.metrics import KioskMetrics

TOKEN = "gate-token-for-tests"
MB = 1024 * 1024


@pytest.fixture(scope="module")
def classifier() -> Iterator[Any]:
    from mpox_aism.inference.backends import load_classifier
    from tests.conftest import default_model_or_skip

    with load_classifier("onnxruntime", default_model_or_skip()) as clf:
        yield clf


@pytest.fixture()
def server(classifier: Any) -> Iterator[tuple[Any, KioskMetrics]]:
    """A fresh limiter per test: per-client rate 1 per 100 s, burst 1; two wrong tokens lock out."""
    from mpox_aism.kiosk.web.app import create_app
    from mpox_aism.kiosk.web.server import ServerThread

    metrics = KioskMetrics()
    limits = ApiLimits(max_rps=50, max_rps_per_client=0.01, burst=1, max_failed_auth=2, auth_lockout_s=300)
    app = create_app(classifier=classifier, token=TOKEN, limits=limits, max_upload_bytes=8 * MB, metrics=metrics)
    with ServerThread(app, keep_alive_s=60) as s:
        yield s, metrics


def connect(s: Any) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=60)
    return sock


def headers_only(sock: socket.socket, *, token: str | None, length: int, extra: str = "") -> None:
    """A multipart POST's headers, declaring ``length`` body bytes, none of which are sent."""
    auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
    sock.sendall((f"POST /v1/diagnose HTTP/1.1\r\nHost: kiosk\r\n{auth}"
                  f"Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: {length}\r\n{extra}\r\n")
                 .encode())


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {buf!r}"
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(lines[0].split()[1]), headers, body


def refused(metrics: KioskMetrics, status: int) -> float:
    return metrics.diagnose_requests.labels(status=str(status))._value.get()


def test_a_wrong_token_is_refused_before_the_body_and_the_connection_lives_on(server: Any) -> None:
    s, metrics = server
    with connect(s) as sock:
        headers_only(sock, token="wrong", length=5 * MB)  # under the limit: the body would be worth reading
        status, headers, body = read_answer(sock)  # without one body byte sent
        assert status == 401 and headers["www-authenticate"].startswith("Bearer"), body
        assert b"invalid bearer token" in body and headers.get("connection") != "close"
        sock.sendall(b"\0" * (5 * MB))  # the body after all: the server discards it, keeps the connection
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: kiosk\r\n\r\n")
        assert read_answer(sock)[0] == 200
    assert refused(metrics, 401) == 1


def test_a_missing_token_is_401_and_wrong_tokens_lock_out_from_the_headers(server: Any) -> None:
    s, _ = server
    for token in (None, "guess"):
        with connect(s) as sock:
            headers_only(sock, token=token, length=MB)
            assert read_answer(sock)[0] == 401
    with connect(s) as sock:  # two wrong ones: even the right token is refused from this address
        headers_only(sock, token=TOKEN, length=MB)
        status, headers, body = read_answer(sock)
    assert status == 429 and int(headers["retry-after"]) > 60 and b"wrong tokens" in body


def test_over_the_rate_is_429_before_the_body(server: Any) -> None:
    s, metrics = server
    with connect(s) as sock:  # admitted, then refused by the reader (not multipart): it used the token
        body = b"not a photo"
        sock.sendall((f"POST /v1/diagnose HTTP/1.1\r\nHost: kiosk\r\nAuthorization: Bearer {TOKEN}\r\n"
                      f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
        assert read_answer(sock)[0] == 415
        headers_only(sock, token=TOKEN, length=6 * MB)
        status, headers, answer = read_answer(sock)
    assert status == 429 and int(headers["retry-after"]) >= 1 and b"per second" in answer
    assert refused(metrics, 429) == 1


def test_a_client_that_ignores_retry_after_has_its_next_refusal_held(server: Any) -> None:
    """Told to wait (here 100 s), it asks again at once: the answer is held back (up to 5 s), then refused."""
    s, metrics = server
    with connect(s) as sock:  # admitted (the token of its burst), refused by the reader: not multipart
        sock.sendall((f"POST /v1/diagnose HTTP/1.1\r\nHost: kiosk\r\nAuthorization: Bearer {TOKEN}\r\n"
                      "Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nno").encode())
        assert read_answer(sock)[0] == 415
    with connect(s) as sock:
        headers_only(sock, token=TOKEN, length=MB)
        status, headers, _ = read_answer(sock)  # over its rate: refused at once, told to wait
        assert status == 429 and int(headers["retry-after"]) > 60
    with connect(s) as sock:
        headers_only(sock, token=TOKEN, length=MB)  # at once again
        sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # held: nothing yet
        sock.settimeout(60)
        status, headers, body = read_answer(sock)
    assert status == 429 and b"before Retry-After" in body and int(headers["retry-after"]) > 60
    assert refused(metrics, 429) == 2


def test_a_declared_length_over_the_limit_is_413_from_the_header_and_closes(server: Any) -> None:
    s, _ = server
    with connect(s) as sock:
        headers_only(sock, token=TOKEN, length=1024 * MB)
        status, headers, body = read_answer(sock)
        assert status == 413 and b"larger than" in body and headers["connection"] == "close"
        assert sock.recv(1) == b""  # closed: a gigabyte is not worth discarding


def test_a_chunked_refusal_closes_the_connection(server: Any) -> None:
    s, _ = server
    with connect(s) as sock:
        sock.sendall(b"POST /v1/diagnose HTTP/1.1\r\nHost: kiosk\r\nAuthorization: Bearer nope\r\n"
                     b"Content-Type: multipart/form-data; boundary=xyz\r\nTransfer-Encoding: chunked\r\n\r\n")
        status, headers, _ = read_answer(sock)
        assert status == 401 and headers["connection"] == "close"


def test_connections_are_bounded(classifier: Any) -> None:
    from mpox_aism.kiosk.web.app import create_app
    from mpox_aism.kiosk.web.server import ServerThread

    app = create_app(classifier=classifier, token=TOKEN)
    with ServerThread(app, max_connections=2, keep_alive_s=60) as s:
        assert s.server.config.limit_concurrency == 2 and s.server.config.timeout_keep_alive == 60
        with connect(s) as first:
            first.sendall(b"GET /healthz HTTP/1.1\r\nHost: kiosk\r\n\r\n")
            assert read_answer(first)[0] == 200  # one connection: under the bound, kept alive
            with connect(s) as second:
                second.sendall(b"GET /healthz HTTP/1.1\r\nHost: kiosk\r\n\r\n")
                assert read_answer(second)[0] == 503  # the bound reached: answered at once, nothing queued


def test_connection_bounds_are_validated_config() -> None:
    h = HttpConfig()
    assert h.max_connections == 64 and h.keep_alive_s == 2 and h.nice == 10
    for bad in ({"max_connections": 1}, {"keep_alive_s": 0}, {"keep_alive_s": 301},
                {"nice": -1}, {"nice": 20}):
        with pytest.raises(ValidationError):
            HttpConfig(**bad)


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread niceness is Linux's")
def test_the_http_threads_run_at_a_lower_priority() -> None:
    """The server's thread and the worker threads it starts (sync routes, the diagnosis work) are niced."""
    from fastapi import FastAPI

    from mpox_aism.kiosk.web.server import ServerThread

    app = FastAPI()

    @app.get("/nice")
    def nice() -> int:  # a sync route: runs in a worker thread the server's loop started
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    with ServerThread(app, nice=5) as s:
        assert os.getpriority(os.PRIO_PROCESS, s.thread.native_id) == max(base, 5)
        with socket.create_connection(("127.0.0.1", s.port), timeout=60) as sock:
            sock.sendall(b"GET /nice HTTP/1.1\r\nHost: kiosk\r\n\r\n")
            status, _, body = read_answer(sock)
    assert status == 200 and int(body) == max(base, 5)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # the caller's thread untouched
