"""The kiosk's FastAPI app: the image-upload diagnosis API (the paper's "cloud service" used by the PC and
phone pages), ``/healthz`` and ``/metrics``.

The diagnosis endpoint reads its multipart body itself instead of declaring ``File()``: FastAPI parses
form parameters *before* any dependency runs, so with ``File()`` an unauthenticated client could make
the kiosk spool up to the size limit to disk before being told 401. Here the order is: token → declared
``Content-Length`` → body counted while it streams in → image header (pixel count) → decode → classify.
The first steps and the rate/queue admission run in ``kiosk.web.gate.HeaderGate``, from the headers alone:
a refusal never reaches routing nor reads the body, so a flood of refusals costs the camera next to nothing.
The OpenAPI schema of the multipart field is therefore written out in ``openapi_extra``.

Research use only: the answer is a screening aid, never a diagnosis.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

import anyio
from fastapi import FastAPI, HTTPException, Request, Security
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field

from mpox_aism.inference.classifier import CropClassifier
from mpox_aism.inference.explainer import ExplainerService
from mpox_aism.kiosk.config import ApiLimits, PhotoChecks
from mpox_aism.kiosk.metrics import KioskMetrics
from mpox_aism.kiosk.web.diagnosis import Diagnosis, DiagnosisService
from mpox_aism.kiosk.web.gate import GATED, HeaderGate
from mpox_aism.kiosk.web.limits import Limiter, Refused
from mpox_aism.kiosk.web.upload import MULTIPART_BODY, Rejected, UploadReader, drain

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    detail: str


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")  # the status provider's keys
    status: Literal["ok", "degraded"] = Field(
        description="degraded: a part listed in `down` is not working; the kiosk still answers.")
    model_version: str


# auto_error=False: the endpoint answers 401 itself, with WWW-Authenticate, and counts it in the metrics
_BEARER = HTTPBearer(auto_error=False, description="The kiosk's API token (`Authorization: Bearer …`).")

class BearerToken:
    """The machine API's token check; no token configured = the API is closed (503), never open."""

    def __init__(self, token: str | None) -> None:
        self._expected = token.encode() if token else None

    def check(self, credentials: HTTPAuthorizationCredentials | None) -> None:
        if self._expected is None:
            raise HTTPException(503, "the diagnosis API is disabled: no API token is configured")
        if credentials is None:
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(credentials.credentials.encode(), self._expected):
            raise HTTPException(401, "invalid bearer token",
                                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})

    def check_header(self, authorization: str | None) -> None:
        """The same check on the raw ``Authorization`` header (for :class:`HeaderGate`, before any parsing)."""
        scheme, _, param = (authorization or "").strip().partition(" ")
        ok = scheme.lower() == "bearer" and param.strip()
        self.check(HTTPAuthorizationCredentials(scheme=scheme, credentials=param.strip()) if ok else None)


DIAGNOSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorDetail, "description": "Missing field, empty, truncated or corrupt image."},
    401: {"model": ErrorDetail, "description": "Missing or wrong bearer token.",
          "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}}},
    413: {"model": ErrorDetail, "description": "Upload over the byte limit, or an image with more "
                                               "pixels than allowed (decompression bomb)."},
    415: {"model": ErrorDetail, "description": "Not multipart, or not a JPEG/PNG/WebP/BMP image."},
    429: {"model": ErrorDetail, "description": "Over the configured rate (per client or in total), or too many "
                                               "wrong tokens from this address: wait `Retry-After` seconds.",
          "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}},
    503: {"model": ErrorDetail, "description": "The API is disabled (no token configured), or busy: every slot and "
                                               "the short queue are taken (then with `Retry-After`).",
          "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}},
}


Authorize = Callable[[Request], object]  # raises HTTPException (401/403) when the caller may not diagnose


def add_diagnose_route(app: FastAPI, service: DiagnosisService, *, token: BearerToken, reader: UploadReader,
                       metrics: KioskMetrics, max_concurrent: int, limiter: Limiter | None = None) -> None:
    """``POST /v1/diagnose``; ``max_concurrent`` photos are decoded and analysed at once (each can be
    ``max_pixels``×3 bytes), the rest wait without holding a thread. With a ``limiter``, rates, the
    queue and wrong tokens are bounded (``mpox_aism.kiosk.web.limits``): the camera keeps its CPU.

    ``app.state.diagnose(request, authorize)`` is the same path for other callers (the staff upload page
    authorizes by its login session instead of the machine token): one set of limits for both.
    """
    limiters: list[anyio.CapacityLimiter] = []  # made on first use: older anyio wants a running loop

    async def serve(request: Request, authorize: Authorize) -> Diagnosis:
        status = 500
        t0 = time.perf_counter()
        client = request.client.host if request.client else "unknown"
        admitted = False
        try:
            try:
                # GATED: the HeaderGate checked the token and admitted it from the headers (and releases it)
                if not request.scope.get(GATED):
                    if limiter is not None:
                        limiter.check_locked(client)
                    try:
                        authorize(request)
                    except HTTPException as e:
                        if limiter is not None and e.status_code == 401:
                            limiter.auth_failed(client)
                        raise
                    if limiter is not None:
                        limiter.admit(client)
                        admitted = True
            except Refused as r:
                if "100-continue" not in request.headers.get("expect", "").lower():  # else it never sent the body
                    await drain(request.receive, reader.max_upload_bytes)  # let the client read the answer
                raise HTTPException(r.status, r.detail, headers={"Retry-After": r.retry_after}) from None
            data = await reader(request)
            try:
                # a worker thread (what run_in_threadpool does), bounded: each holds a decoded photo
                if not limiters:
                    limiters.append(anyio.CapacityLimiter(max_concurrent))
                result = await anyio.to_thread.run_sync(service.analyse, data, limiter=limiters[0])
            except Rejected as e:
                raise HTTPException(e.status, e.detail) from None
            status = 200
            return result
        except HTTPException as e:
            status = e.status_code
            raise
        finally:
            if admitted:
                limiter.release()  # type: ignore[union-attr]
            metrics.diagnose_request(status)
            log.info("diagnose %d in %.0f ms", status, 1000 * (time.perf_counter() - t0))

    app.state.diagnose = serve
    # the machine API's refusals are made from the headers, before routing and before the body is read
    app.add_middleware(HeaderGate, path="/v1/diagnose", check_token=token.check_header, limiter=limiter,
                       body_limit=reader.body_limit, max_upload_bytes=reader.max_upload_bytes,
                       on_refused=metrics.diagnose_request)

    @app.post(
        "/v1/diagnose",
        response_model=Diagnosis,
        response_model_exclude_none=True,
        summary="Classify one skin photo",
        description="Upload one photo as multipart field `image`. Answers the 8-class probabilities, the "
                    "decision under the 0.6 rule and (when the kiosk has an explainer) a Grad-CAM overlay.",
        openapi_extra={"requestBody": MULTIPART_BODY},
        responses=DIAGNOSE_RESPONSES,
    )
    async def diagnose(request: Request,
                       credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)]) -> Diagnosis:
        return await serve(request, lambda _r: token.check(credentials))


def add_health_routes(app: FastAPI, *, model_version: str, registry: CollectorRegistry,
                      status_provider: Callable[[], Mapping[str, Any]] | None) -> None:
    """``/healthz`` and ``/metrics``."""

    @app.get("/healthz", response_model=Health, summary="Liveness and the state of the kiosk's parts")
    def healthz() -> JSONResponse:
        """Always 200 while the process serves: a kiosk that lost its broker or a camera still classifies
        and queues alerts in its outbox, so a watchdog must not restart it for that. Degradation is in the
        body (``status: degraded`` and the provider's ``down`` list) for the staff page and monitoring."""
        body: dict[str, Any] = {"model_version": model_version}
        degraded = False
        if status_provider is not None:
            try:
                provided = dict(status_provider())
            except Exception as e:  # the health answer must not fail because a part is broken
                log.warning("status provider failed: %s", e)
                provided = {"status_error": f"{type(e).__name__}: {e}"}
                degraded = True
            body.update(provided)
            degraded = degraded or bool(provided.get("down"))
        body["status"] = "degraded" if degraded else "ok"
        return JSONResponse(body)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Text exposition format."}})
    def prometheus() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def create_app(*, classifier: CropClassifier, explainer: ExplainerService | None = None,
               token: str | None, max_upload_bytes: int = 10 * 1024 * 1024, max_pixels: int = 40_000_000,
               status_provider: Callable[[], Mapping[str, Any]] | None = None,
               metrics: KioskMetrics | None = None, metrics_registry: CollectorRegistry | None = None,
               threshold: float | None = None, notifiable: Sequence[str] = ("mpox",),
               max_concurrent: int = 2,
               limits: ApiLimits | None = None, photo_checks: PhotoChecks | None = None) -> FastAPI:
    """The kiosk's FastAPI app: the diagnosis API and the health routes (the staff pages add their own).

    ``explainer``: the process's one explainer (None: no heat maps). ``token``: the bearer token; ``None`` or empty
    disables the diagnosis API (503) rather than leaving it open. ``metrics``: the kiosk's ``KioskMetrics``
    (a private one when omitted); ``metrics_registry`` overrides what ``/metrics`` shows. ``threshold``
    defaults to the model's. ``status_provider()`` feeds ``/healthz``; a non-empty ``"down"`` list in it
    marks the kiosk degraded. ``limits``: load shedding (the daemon always passes its config's; ``None``
    = unbounded, for tests and embedding). ``photo_checks``: what a photo must show (default: the config's
    defaults). The rest: :class:`DiagnosisService`, :func:`add_diagnose_route`.
    """
    thr = float(classifier.meta.threshold if threshold is None else threshold)
    service = DiagnosisService(classifier, explainer, threshold=thr, notifiable=notifiable, max_pixels=max_pixels,
                               checks=photo_checks)
    metrics = metrics or KioskMetrics()
    app = FastAPI(
        title="mpox-aism kiosk",
        version=service.model_version or "unknown",
        description="Skin-photo screening for a border checkpoint: upload a photo, get 8-class calibrated "
                    "probabilities, the 0.6-confidence decision and a Grad-CAM overlay. **Research use only** "
                    "— not a diagnostic device; every `review`/`suspected` answer goes to a person.",
    )
    add_diagnose_route(app, service, token=BearerToken(token), reader=UploadReader(max_upload_bytes),
                       metrics=metrics, max_concurrent=limits.concurrent if limits else max_concurrent,
                       limiter=Limiter(limits) if limits else None)
    add_health_routes(app, model_version=service.model_version, registry=metrics_registry or metrics.registry,
                      status_provider=status_provider)
    app.state.metrics = metrics
    return app
