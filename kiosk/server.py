"""Serve the HTTP app (``kiosk.http``) from the daemon with uvicorn in a background thread."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)


class _LazyExplainer:
    """Builds the Grad-CAM explainer on first use, shared with the camera workers."""

    def __init__(self, factory):
        self._factory = factory

    def explain(self, crop, target=None):
        return self._factory().explain(crop, target)


def start_http(daemon: Any, classifier: Any, explainer_factory) -> tuple[Any, str]:
    import uvicorn

    from kiosk.config import secret
    from kiosk.http import create_app

    h = daemon.config.http
    token = secret(h.token_env, "api-token")
    if token is None:
        log.warning("no API token in $%s or the 'api-token' credential: POST /v1/diagnose will refuse "
                    "every request (401)", h.token_env)
    app = create_app(classifier=classifier, explainer=_LazyExplainer(explainer_factory), token=token,
                     max_upload_bytes=int(h.max_upload_mb * 1024 * 1024), status_provider=daemon.status,
                     metrics_registry=getattr(daemon, "metrics_registry", None))
    server = uvicorn.Server(uvicorn.Config(app, host=h.host, port=h.port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise RuntimeError(f"HTTP server did not start on {h.host}:{h.port} (port in use?)")
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, f"http://{h.host}:{port}/"
