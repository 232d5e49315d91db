"""Serve the HTTP app (``mpox_aism.kiosk.web.app`` + ``mpox_aism.kiosk.web.staff``) in a background thread.

The web part sees the kiosk only through :class:`KioskView`, a narrow read-only protocol: it can
neither reach into the daemon nor import it (the daemon imports this module, never the reverse).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import uvicorn
from fastapi import FastAPI

from mpox_aism.inference.classifier import CropClassifier
from mpox_aism.inference.explainer import ExplainerService
from mpox_aism.kiosk.accounts import AccountError, Accounts
from mpox_aism.kiosk.config import KioskConfig, secret
from mpox_aism.kiosk.events import Event
from mpox_aism.kiosk.host import lower_thread_priority
from mpox_aism.kiosk.labels import LabelStore
from mpox_aism.kiosk.metrics import KioskMetrics
from mpox_aism.kiosk.status import KioskStatus

log = logging.getLogger(__name__)


class KioskView(Protocol):
    """What the web pages may read of a running kiosk."""

    def status(self) -> KioskStatus: ...

    def recent_events(self) -> list[Event]: ...

    def latest_frame(self, camera: str) -> bytes | None: ...

    def camera_names(self) -> list[str]: ...


def staff_accounts(path: Path, *, station_id: str = "") -> Accounts:
    """The account store; the first admin comes from ``$MPOX_AISM_ADMIN_PASSWORD`` or the systemd credential
    ``admin-password`` when no account exists yet (the unit's first start), else a clear line says how.

    A credential too weak for the strength check makes no account and says why, but does not stop the
    daemon: the cameras are its main job. ``station_id`` is one more word the strength check tries.
    """
    accounts = Accounts(path, words=[station_id] if station_id else [])
    if not accounts.users():
        password = secret("MPOX_AISM_ADMIN_PASSWORD", "admin-password")
        if password:
            try:
                accounts.add("admin", password, "admin", by="admin-password credential")
            except AccountError as e:
                log.error("the admin-password credential was not used: %s; no staff account was made", e)
            else:
                log.warning("created the first staff account 'admin' from the admin-password credential; "
                            "add people with `mpox-aism users add NAME --role reviewer`")
        else:
            log.warning("no staff accounts yet: the staff pages refuse everyone until one is made with "
                        "`mpox-aism users add NAME --role reviewer` (store %s)", path)
    return accounts


def start_http(view: KioskView, config: KioskConfig, *, classifier: CropClassifier, explainer: ExplainerService,
               metrics: KioskMetrics,
               reviews_path: Path, accounts_path: Path, labels: LabelStore | None = None) -> tuple[Any, str]:
    """The app on its own thread; ``labels``: the crops kept for staff labels (None: labeling answers 410)."""
    from mpox_aism.kiosk.web.app import create_app

    h = config.http
    token = secret(h.token_env, "api-token")
    if token is None:
        log.warning("no API token in $%s or the 'api-token' credential: POST /v1/diagnose answers 503 "
                    "(closed) until one is set", h.token_env)
    app = create_app(classifier=classifier, explainer=explainer, token=token,
                     max_upload_bytes=int(h.max_upload_mb * 1024 * 1024),
                     status_provider=lambda: view.status().model_dump(mode="json"), metrics=metrics,
                     threshold=config.decision.threshold, notifiable=config.decision.notifiable,
                     limits=h.limits, photo_checks=h.photo_checks)
    try:
        from mpox_aism.kiosk.web.staff import add_staff_routes
    except ImportError:  # the staff page is optional; the API is not
        log.warning("staff page not available in this build")
    else:
        from mpox_aism.kiosk.web.reference import open_library

        add_staff_routes(app, events_provider=lambda: [e.payload() for e in view.recent_events()],
                         frame_provider=view.latest_frame, cameras=view.camera_names, reviews_path=reviews_path,
                         labels=labels, station_id=config.station_id,
                         accounts=staff_accounts(accounts_path, station_id=config.station_id),
                         references=open_library(config.reference_dir, classifier),
                         sessions=h.sessions, secure=h.tls is not None)
    server = ServerThread(app, host=h.host, port=h.port, certfile=h.tls.certfile if h.tls else None,
                          keyfile=h.tls.keyfile if h.tls else None, max_connections=h.max_connections,
                          keep_alive_s=h.keep_alive_s, nice=h.nice).start()
    return server, server.url + "/"


class ServerThread:
    """uvicorn serving ``app`` in a background thread: the daemon's main thread runs the cameras.

    ``port=0`` takes any free port (no race between picking one and binding it); ``url`` tells which.
    uvicorn installs no signal handlers outside the main thread, so the daemon keeps its own.
    """

    def __init__(self, app: FastAPI, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 access_log: bool = False, certfile: str | None = None, keyfile: str | None = None,
                 max_connections: int | None = None, keep_alive_s: int = 5, nice: int = 0) -> None:
        self.host, self.scheme = host, "https" if certfile else "http"
        # log_config=None: uvicorn's loggers go through the kiosk's own handler (one format, json included).
        # limit_concurrency: connections + requests in progress; beyond it uvicorn answers 503 itself
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                                lifespan="off", timeout_graceful_shutdown=5, log_config=None,
                                ssl_certfile=certfile, ssl_keyfile=keyfile, limit_concurrency=max_connections,
                                timeout_keep_alive=keep_alive_s)
        self.server = uvicorn.Server(config)
        self.nice = nice
        self.thread = threading.Thread(target=self._run, name="kiosk-http", daemon=True)

    def _run(self) -> None:
        if self.nice:
            lower_thread_priority(self.nice, "HTTP")
        self.server.run()

    def start(self, timeout: float = 30.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"HTTP server on {self.host} did not start (port in use? see the log)")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"HTTP server on {self.host} did not start within {timeout:.0f}s")
            time.sleep(0.02)
        return self

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
