"""An uploaded photo, from the first byte to an RGB array, refusing what it must as early as it can.

The order: declared ``Content-Length`` → body counted while it streams in → the ``image`` part →
image header (format, pixel count: a decompression bomb is refused before OpenCV allocates) →
truncated JPEG → decode. Every refusal is a ``Rejected`` (status + a message a person can act on) or an
``HTTPException``; nothing half-decoded reaches the classifier.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import cv2
import numpy as np
from fastapi import HTTPException, Request
from PIL import Image, UnidentifiedImageError
from starlette.requests import ClientDisconnect
from starlette.types import Message

# Formats whose header PIL reads (for the pixel check) and OpenCV decodes. Others (GIF, TIFF, JPEG 2000,
# HEIC, EXR…) are refused: fewer decoders exposed to uploads, and no format we cannot size before decoding.
ACCEPTED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "BMP": "image/bmp"}
# multipart framing around the one file part (boundaries, part headers); generous, it is only a bound
MULTIPART_OVERHEAD = 16 * 1024
DRAIN_TIMEOUT_S = 10.0


class Rejected(Exception):
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
        raise Rejected(413, f"image has too many pixels (decompression bomb?): {e}") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise Rejected(415, "not a readable image: send a JPEG, PNG, WebP or BMP photo") from e
    if fmt not in ACCEPTED_FORMATS:
        raise Rejected(415, f"unsupported image format {fmt}: send a JPEG, PNG, WebP or BMP photo")
    if w <= 0 or h <= 0:
        raise Rejected(400, f"image declares an empty size {w}×{h}")
    if w * h > max_pixels:
        raise Rejected(413, f"image is {w}×{h} = {w * h} pixels; the limit is {max_pixels}")
    return fmt


def _jpeg_truncated(data: bytes) -> bool:
    """True when no end-of-image marker follows the last scan.

    OpenCV 4.x decodes a truncated JPEG with a warning and grey filler instead of failing; 5.x fails.
    0xFFD9 cannot occur inside entropy-coded data (0xFF is stuffed), and appended MPF images end with their
    own EOI, so the check holds for camera files too.
    """
    return data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda")


def decode_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """Uploaded bytes → RGB uint8, or ``Rejected`` with a status and a message a person can act on."""
    if not data:
        raise Rejected(400, "the uploaded file is empty")
    fmt = _image_header(data, max_pixels)
    if fmt == "JPEG" and _jpeg_truncated(data):
        raise Rejected(400, "the JPEG is truncated (no end-of-image marker): upload the whole file")
    # IMREAD_COLOR: 3 channels whatever the source (grey, alpha, 16 bit), EXIF orientation applied
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise Rejected(400, f"cannot decode the {fmt} image: the file is corrupt or truncated")
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


async def drain(receive: Callable[[], Awaitable[Message]], budget: int) -> None:
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


MULTIPART_BODY: dict[str, Any] = {
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
                await drain(request.receive, self.max_upload_bytes)
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
                await drain(request.receive, self.max_upload_bytes)
            raise too_large from None
