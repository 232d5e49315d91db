"""Serve the HTTP app (``kiosk.http``) from the daemon in a background thread."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def start_http(daemon: Any, classifier: Any, explainer_factory) -> tuple[Any, str]:
    from kiosk.config import secret
    from kiosk.http import ServerThread, create_app

    h = daemon.config.http
    token = secret(h.token_env, "api-token")
    if token is None:
        log.warning("no API token in $%s or the 'api-token' credential: POST /v1/diagnose answers 503 "
                    "(closed) until one is set", h.token_env)
    app = create_app(classifier=classifier, explainer=explainer_factory, token=token,
                     max_upload_bytes=int(h.max_upload_mb * 1024 * 1024), status_provider=daemon.status,
                     metrics=daemon.metrics, threshold=daemon.config.decision.threshold,
                     notifiable=tuple(daemon.config.decision.notifiable), explain_lock=daemon.explain_lock)
    try:
        from kiosk.staff import add_staff_routes
    except ImportError:  # the staff page is optional; the API is not
        log.warning("staff page not available in this build")
    else:
        from kiosk.daemon import state_dir

        add_staff_routes(app, events_provider=daemon.recent_events, frame_provider=daemon.latest_jpeg.get,
                         cameras=lambda: list(daemon.cameras), reviews_path=state_dir() / "reviews.sqlite3")
    server = ServerThread(app, host=h.host, port=h.port).start()
    return server, server.url + "/"
