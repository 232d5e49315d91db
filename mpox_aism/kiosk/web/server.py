"""Serve the HTTP app (``mpox_aism.kiosk.web.api`` + ``mpox_aism.kiosk.web.staff``) in a background thread.

The web part sees the kiosk only through :class:`KioskView`, a narrow read-only protocol: it can
neither reach into the daemon nor import it (the daemon imports this module, never the reverse).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from mpox_aism.inference.classifier import Classifier
from mpox_aism.kiosk.accounts import Accounts
from mpox_aism.kiosk.config import KioskConfig, secret
from mpox_aism.kiosk.events import Event
from mpox_aism.kiosk.metrics import KioskMetrics
from mpox_aism.kiosk.status import KioskStatus

log = logging.getLogger(__name__)


class KioskView(Protocol):
    """What the web pages may read of a running kiosk."""

    def status(self) -> KioskStatus: ...

    def recent_events(self) -> list[Event]: ...

    def latest_frame(self, camera: str) -> bytes | None: ...

    def camera_names(self) -> list[str]: ...


def staff_accounts(path: Path) -> Accounts:
    """The account store; the first admin comes from ``$MPOX_AISM_ADMIN_PASSWORD`` or the systemd credential
    ``admin-password`` when no account exists yet (the unit's first start), else a clear line says how."""
    accounts = Accounts(path)
    if not accounts.users():
        password = secret("MPOX_AISM_ADMIN_PASSWORD", "admin-password")
        if password:
            accounts.add("admin", password, "admin")
            log.warning("created the first staff account 'admin' from the admin-password credential; "
                        "add people with `mpox-aism users add NAME --role reviewer`")
        else:
            log.warning("no staff accounts yet: the staff pages refuse everyone until one is made with "
                        "`mpox-aism users add NAME --role reviewer` (store %s)", path)
    return accounts


def start_http(view: KioskView, config: KioskConfig, *, classifier: Classifier, explainer: Callable[[], Any],
               explain_lock: AbstractContextManager[Any], metrics: KioskMetrics,
               reviews_path: Path, accounts_path: Path) -> tuple[Any, str]:
    from mpox_aism.kiosk.web.api import ServerThread, create_app

    h = config.http
    token = secret(h.token_env, "api-token")
    if token is None:
        log.warning("no API token in $%s or the 'api-token' credential: POST /v1/diagnose answers 503 "
                    "(closed) until one is set", h.token_env)
    app = create_app(classifier=classifier, explainer=explainer, token=token,
                     max_upload_bytes=int(h.max_upload_mb * 1024 * 1024),
                     status_provider=lambda: view.status().model_dump(mode="json"), metrics=metrics,
                     threshold=config.decision.threshold, notifiable=config.decision.notifiable,
                     explain_lock=explain_lock, limits=h.limits)
    try:
        from mpox_aism.kiosk.web.staff import add_staff_routes
    except ImportError:  # the staff page is optional; the API is not
        log.warning("staff page not available in this build")
    else:
        from mpox_aism.kiosk.web.reference import open_library

        add_staff_routes(app, events_provider=lambda: [e.payload() for e in view.recent_events()],
                         frame_provider=view.latest_frame, cameras=view.camera_names, reviews_path=reviews_path,
                         accounts=staff_accounts(accounts_path),
                         references=open_library(config.reference_dir, classifier),
                         sessions=h.sessions, secure=h.tls is not None)
    server = ServerThread(app, host=h.host, port=h.port, certfile=h.tls.certfile if h.tls else None,
                          keyfile=h.tls.keyfile if h.tls else None).start()
    return server, server.url + "/"
