"""The daemon's HTTP side: the image-upload diagnosis API (the paper's "cloud service" used by the PC and
phone pages), ``/healthz`` and ``/metrics``.

The diagnosis endpoint reads its multipart body itself instead of declaring ``File()``: FastAPI parses
form parameters *before* any dependency runs, so with ``File()`` an unauthenticated client could make
the kiosk spool up to the size limit to disk before being told 401. Here the order is: token → declared
``Content-Length`` → body counted while it streams in → image header (pixel count) → decode → classify.
The OpenAPI schema of the multipart field is therefore written out in ``openapi_extra``.

Research use only: the answer is a screening aid, never a diagnosis.
"""

from __future__ import annotations

import base64
import hmac
import io
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Annotated, Any, Literal

import anyio
import cv2
import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException, Request, Security
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from PIL import Image, UnidentifiedImageError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import ClientDisconnect
from starlette.types import Message

from mpox_aism.contracts.decision import State, decide
from mpox_aism.contracts.heatmap import Explainer
from mpox_aism.contracts.preprocess import fit_within
from mpox_aism.kiosk.config import ApiLimits
from mpox_aism.kiosk.metrics import KioskMetrics
from mpox_aism.kiosk.web.limits import Limiter, Refused

log = logging.getLogger(__name__)

# Formats whose header PIL reads (for the pixel check) and OpenCV decodes. Others (GIF, TIFF, JPEG 2000,
# HEIC, EXR…) are refused: fewer decoders exposed to uploads, and no format we cannot size before decoding.
ACCEPTED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "BMP": "image/bmp"}
# multipart framing around the one file part (boundaries, part headers); generous, it is only a bound
MULTIPART_OVERHEAD = 16 * 1024
DRAIN_TIMEOUT_S = 10.0
GRADCAM_MAX_SIDE = 512  # the network sees 224 px; a 12 MP heat map would make a 20 MB JSON answer


class Diagnosis(BaseModel):
    """The diagnosis API's answer for one photo."""

    label: str = Field(description="Most probable class.")
    probability: float = Field(ge=0, le=1, description="Calibrated probability of `label`.")
    decision: State = Field(description="review: top probability under `threshold` (a person decides); "
                                        "suspected: a notifiable class (mpox) at or over it; clear: otherwise.")
    threshold: float = Field(description="Confidence under which the photo goes to a person (0.6).")
    probabilities: dict[str, float] = Field(description="Calibrated probability of every class; sums to 1.")
    model_version: str = Field(description="Model that answered.")
    gradcam_png_base64: str | None = Field(
        None, description="Grad-CAM overlay for `label` as a base64 PNG (at most 512 px a side); present when "
                          "the server was started with an explainer.")
    research_use_only: Literal[True] = Field(True, description="A screening aid for research, not a diagnosis.")


class ErrorDetail(BaseModel):
    detail: str


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")  # the status provider's keys
    status: Literal["ok", "degraded"] = Field(
        description="degraded: a part listed in `down` is not working; the kiosk still answers.")
    model_version: str


class _Reject(Exception):
    """A client error found off the event loop; turned into an HTTPException by the endpoint."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class _BodyTooLarge(Exception):
    pass


def _image_header(data: bytes, max_pixels: int) -> str:
    """Format name from the header alone; refuses what is not an accepted image or has too many pixels.

    PIL's ``Image.open`` reads only the header, so a small PNG that declares 20000×20000 pixels is refused
    here before OpenCV would allocate 1.2 GB for it.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, (w, h) = str(im.format), im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # the warning under -W error
        raise _Reject(413, f"image has too many pixels (decompression bomb?): {e}") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise _Reject(415, "not a readable image: send a JPEG, PNG, WebP or BMP photo") from e
    if fmt not in ACCEPTED_FORMATS:
        raise _Reject(415, f"unsupported image format {fmt}: send a JPEG, PNG, WebP or BMP photo")
    if w <= 0 or h <= 0:
        raise _Reject(400, f"image declares an empty size {w}×{h}")
    if w * h > max_pixels:
        raise _Reject(413, f"image is {w}×{h} = {w * h} pixels; the limit is {max_pixels}")
    return fmt


def _jpeg_truncated(data: bytes) -> bool:
    """True when no end-of-image marker follows the last scan.

    OpenCV 4.x decodes a truncated JPEG with a warning and grey filler instead of failing; 5.x fails.
    0xFFD9 cannot occur inside entropy-coded data (0xFF is stuffed), and appended MPF images end with their
    own EOI, so the check holds for camera files too.
    """
    return data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda")


def decode_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """Uploaded bytes → RGB uint8, or ``_Reject`` with a status and a message a person can act on."""
    if not data:
        raise _Reject(400, "the uploaded file is empty")
    fmt = _image_header(data, max_pixels)
    if fmt == "JPEG" and _jpeg_truncated(data):
        raise _Reject(400, "the JPEG is truncated (no end-of-image marker): upload the whole file")
    # IMREAD_COLOR: 3 channels whatever the source (grey, alpha, 16 bit), EXIF orientation applied
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise _Reject(400, f"cannot decode the {fmt} image: the file is corrupt or truncated")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class _LimitedReceive:
    """``receive`` that counts body bytes and raises ``_BodyTooLarge`` past ``limit``.

    Covers chunked uploads and clients whose Content-Length lies; the multipart parser then never holds
    more than ``limit`` bytes (in memory or in its spool file). ``done``: the last body message was read,
    so there is nothing left to drain (another ``receive`` would wait for the client to hang up).
    """

    def __init__(self, receive: Callable[[], Awaitable[Message]], limit: int) -> None:
        self.receive, self.limit = receive, limit
        self.total = 0
        self.done = False

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.total += len(message.get("body", b""))
            self.done = not message.get("more_body", False)
            if self.total > self.limit:
                raise _BodyTooLarge
        else:
            self.done = True
        return message


async def _drain(receive: Callable[[], Awaitable[Message]], budget: int) -> None:
    """Read and discard up to ``budget`` more body bytes before answering 413.

    Answering while the client is still sending, then closing, makes the kernel reset the connection and
    the client may see "connection reset" instead of our 413; an honest, slightly-too-big upload is
    worth reading to the end. A bigger one just gets its connection closed.
    """
    seen = 0
    with anyio.move_on_after(DRAIN_TIMEOUT_S):  # a client that stops sending gets its 413 anyway
        while seen <= budget:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


# auto_error=False: the endpoint answers 401 itself, with WWW-Authenticate, and counts it in the metrics
_BEARER = HTTPBearer(auto_error=False, description="The kiosk's API token (`Authorization: Bearer …`).")

_MULTIPART_BODY: dict[str, Any] = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "required": ["image"],
        "properties": {"image": {
            "type": "string", "format": "binary", "contentMediaType": "application/octet-stream",
            "description": "The photo: JPEG, PNG, WebP or BMP, at most the configured size and pixel count.",
        }},
    }}},
}


def _png_b64(explanation: Any) -> str:
    return base64.b64encode(explanation.overlay_png()).decode("ascii")


class DiagnosisService:
    """One uploaded photo: decode → classify → the threshold rule → explain. Runs in a worker thread.

    When the classifier's model gives class maps (``can_explain``), one forward pass answers and
    explains; otherwise the Grad-CAM explainer runs after the classification.

    ``explainer``: a ``GradCamExplainer`` or a zero-argument factory for one (built on first use, under
    ``explain_lock``: Grad-CAM hooks on a shared torch model are not thread-safe, so the camera workers and
    the API share the lock); the classifier serialises its own calls when its backend needs it.
    """

    def __init__(self, classifier: Any, explainer: Explainer | Callable[[], Explainer] | None, *,
                 threshold: float, notifiable: Sequence[str], max_pixels: int,
                 explain_lock: AbstractContextManager[Any]) -> None:
        self.classifier, self.labels = classifier, tuple(classifier.labels)
        self.threshold, self.notifiable, self.max_pixels = threshold, tuple(notifiable), max_pixels
        self.model_version = str(classifier.meta.model_version)
        self._explainer, self._built, self._lock = explainer, None, explain_lock

    def _get_explainer(self) -> Explainer:
        if self._built is None:
            e = self._explainer
            self._built = e if hasattr(e, "explain") else e()  # type: ignore[misc, operator]
        return self._built  # type: ignore[return-value]

    def _overlay_png(self, rgb: np.ndarray, top: int) -> str | None:
        if self._explainer is None:
            return None
        try:
            with self._lock:  # also guards building the explainer once
                # explain the classifier's label, not the torch model's own argmax, so the two agree
                overlay = self._get_explainer().explain(fit_within(rgb, GRADCAM_MAX_SIDE), target=top)
            return _png_b64(overlay)
        except Exception:  # the classification stands without its picture
            log.exception("Grad-CAM failed; answering without the overlay")
            return None

    def analyse(self, data: bytes) -> Diagnosis:
        rgb = decode_upload(data, self.max_pixels)
        one_pass = self._explainer is not None and self.classifier.can_explain
        png: str | None = None
        probs: np.ndarray | None = None
        if one_pass:  # one forward pass answers and explains
            try:
                exp = self.classifier.explain(rgb, max_side=GRADCAM_MAX_SIDE)
                probs, png = np.asarray(exp.probabilities, dtype=np.float64), _png_b64(exp)
            except Exception:  # the classification below stands without its picture
                log.exception("explanation failed; answering without the overlay")
        if probs is None:
            probs = np.asarray(self.classifier.predict([rgb])[0], dtype=np.float64)
        top = int(np.argmax(probs))
        if not one_pass:
            png = self._overlay_png(rgb, top)
        label, p = self.labels[top], float(probs[top])
        return Diagnosis(label=label, probability=p, threshold=self.threshold,
                         decision=decide(label, p, threshold=self.threshold, notifiable=self.notifiable),
                         probabilities={k: float(v) for k, v in zip(self.labels, probs, strict=True)},
                         model_version=self.model_version, gradcam_png_base64=png)


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


class UploadReader:
    """The ``image`` part's bytes, refusing oversize bodies before and while they arrive."""

    def __init__(self, max_upload_bytes: int) -> None:
        self.max_upload_bytes = max_upload_bytes
        self.body_limit = max_upload_bytes + MULTIPART_OVERHEAD

    async def __call__(self, request: Request) -> bytes:
        ctype = request.headers.get("content-type", "")
        if not ctype.lower().startswith("multipart/form-data"):
            raise HTTPException(415, "send multipart/form-data with the photo in the field 'image'")
        too_large = HTTPException(413, f"upload larger than {self.max_upload_bytes} bytes")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.body_limit:
            if int(declared) <= self.body_limit + self.max_upload_bytes:
                await _drain(request.receive, self.max_upload_bytes)
            raise too_large
        counted = _LimitedReceive(request.receive, self.body_limit)
        limited = Request(request.scope, receive=counted)
        try:
            async with limited.form(max_files=1, max_fields=8, max_part_size=64 * 1024) as form:
                part = form.get("image")
                if part is None or isinstance(part, str):
                    raise HTTPException(400, "no file in the multipart field 'image'")
                if part.size is not None and part.size > self.max_upload_bytes:
                    raise too_large
                return await part.read()
        except ClientDisconnect:
            # nginx's "client closed request": nobody is left to read it, but the metrics count it
            raise HTTPException(499, "client closed the request") from None
        except _BodyTooLarge:
            if not counted.done:
                await _drain(request.receive, self.max_upload_bytes)
            raise too_large from None


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
                    await _drain(request.receive, reader.max_upload_bytes)  # let the client read the answer
                raise HTTPException(r.status, r.detail, headers={"Retry-After": r.retry_after}) from None
            data = await reader(request)
            try:
                # a worker thread (what run_in_threadpool does), bounded: each holds a decoded photo
                if not limiters:
                    limiters.append(anyio.CapacityLimiter(max_concurrent))
                result = await anyio.to_thread.run_sync(service.analyse, data, limiter=limiters[0])
            except _Reject as e:
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

    @app.post(
        "/v1/diagnose",
        response_model=Diagnosis,
        response_model_exclude_none=True,
        summary="Classify one skin photo",
        description="Upload one photo as multipart field `image`. Answers the 8-class probabilities, the "
                    "decision under the 0.6 rule and (when the kiosk has an explainer) a Grad-CAM overlay.",
        openapi_extra={"requestBody": _MULTIPART_BODY},
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


def create_app(*, classifier: Any, explainer: Explainer | Callable[[], Explainer] | None = None,
               token: str | None, max_upload_bytes: int = 10 * 1024 * 1024, max_pixels: int = 40_000_000,
               status_provider: Callable[[], Mapping[str, Any]] | None = None,
               metrics: KioskMetrics | None = None, metrics_registry: CollectorRegistry | None = None,
               threshold: float | None = None, notifiable: Sequence[str] = ("mpox",),
               explain_lock: AbstractContextManager[Any] | None = None, max_concurrent: int = 2,
               limits: ApiLimits | None = None) -> FastAPI:
    """The kiosk's FastAPI app: the diagnosis API and the health routes (the staff pages add their own).

    ``classifier``: an ``mpox_aism.inference.classifier.Classifier``. ``token``: the bearer token; ``None`` or empty
    disables the diagnosis API (503) rather than leaving it open. ``metrics``: the kiosk's ``KioskMetrics``
    (a private one when omitted); ``metrics_registry`` overrides what ``/metrics`` shows. ``threshold``
    defaults to the model's. ``status_provider()`` feeds ``/healthz``; a non-empty ``"down"`` list in it
    marks the kiosk degraded. ``limits``: load shedding (the daemon always passes its config's; ``None``
    = unbounded, for tests and embedding). The rest: :class:`DiagnosisService`, :func:`add_diagnose_route`.
    """
    thr = float(classifier.meta.threshold if threshold is None else threshold)
    service = DiagnosisService(classifier, explainer, threshold=thr, notifiable=notifiable, max_pixels=max_pixels,
                               explain_lock=explain_lock or threading.Lock())
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


class ServerThread:
    """uvicorn serving ``app`` in a background thread: the daemon's main thread runs the cameras.

    ``port=0`` takes any free port (no race between picking one and binding it); ``url`` tells which.
    uvicorn installs no signal handlers outside the main thread, so the daemon keeps its own.
    """

    def __init__(self, app: FastAPI, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 access_log: bool = False, certfile: str | None = None, keyfile: str | None = None) -> None:
        self.host, self.scheme = host, "https" if certfile else "http"
        # log_config=None: uvicorn's loggers go through the kiosk's own handler (one format, json included)
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                                lifespan="off", timeout_graceful_shutdown=5, log_config=None,
                                ssl_certfile=certfile, ssl_keyfile=keyfile)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="kiosk-http", daemon=True)

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
