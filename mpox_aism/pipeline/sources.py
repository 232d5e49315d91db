"""Where frames come from: a video file, a folder of photos, or a live camera (RTSP or USB/V4L2).

Every source is an iterator of `Frame`s with `close()` and a context manager, so the pipeline runs
the same way on a benchmark clip, on test photos and at the checkpoint. `open_source(spec)` picks
one from a string as given on the command line or in the kiosk config.

- `VideoFileSource` reads as fast as possible (benchmarks measure processing, not the file's fps)
  unless `realtime=True`. A truncated or corrupt file ends after its readable frames with a warning
  instead of raising mid-run; a file that cannot be opened at all raises `SourceError` at once.
  Note that an MP4 whose index (``moov``) sits at the end, as most cameras and encoders write it,
  cannot be opened at all once its tail is cut off: that is the `SourceError` case.
- `ImageFolderSource` shows each photo for `hold_frames` frames, as a camera watching a still
  would; `Frame.still_id` tells the tracker where one photo ends and the next begins.
- `LiveSource` captures in its own thread into a small queue that drops the OLDEST frame when the
  consumer falls behind: for screening, the newest picture matters, and an unbounded queue would
  turn a slow classifier into ever-growing latency. The thread never raises: a failed open, a read
  error or a stall (no frame for `stall_timeout` s) releases the camera and reopens it with
  exponential backoff, forever, because a kiosk must come back by itself when the camera does.

RTSP goes through OpenCV's FFmpeg backend over TCP (``OPENCV_FFMPEG_CAPTURE_OPTIONS=rtsp_transport;tcp``,
set only when the variable is unset, so an operator's own options win): over UDP a lossy link
gives smeared frames, and OpenCV 4.11+ no longer defaults to TCP. OpenCV has no open parameter for
the transport, only that environment variable, read at every open. Its open/read timeouts are open
parameters (`CAP_PROP_OPEN_TIMEOUT_MSEC`, `CAP_PROP_READ_TIMEOUT_MSEC`), which is how a stalled
stream makes `read()` return instead of blocking for FFmpeg's default 30 s. V4L2 has no read timeout
parameter; its select() timeout comes from ``OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT`` (whole seconds,
read once per process), set here from `stall_timeout` unless already set.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from mpox_aism.contracts.images import IMAGE_SUFFIXES, DatasetError, list_images, load_rgb

__all__ = [
    "Frame",
    "ImageFolderSource",
    "LiveSource",
    "Source",
    "SourceError",
    "VideoFileSource",
    "open_source",
]

log = logging.getLogger(__name__)

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
V4L_SELECT_TIMEOUT_ENV = "OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT"
_RTSP_SCHEMES = ("rtsp://", "rtsps://")
_V4L_PATH = re.compile(r"^/dev/video(\d+)$")
_ENV_LOCK = threading.Lock()


class SourceError(RuntimeError):
    """A source cannot be created from what was given; the message names it and says why."""


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """One picture from a source.

    `timestamp` is `time.time()` when the frame was captured (read from the camera or file), so
    end-to-end latency is publish time minus it. `index` counts this source's frames, 0, 1, 2, ...
    (a live source's index keeps counting across reconnects; dropped frames leave gaps). `still_id`
    is set by the image-folder source only: which photo this is (its position in the sorted list);
    a change is a scene cut. Compared by identity (`eq=False`): comparing pixel arrays is not
    meaningful equality.
    """

    image: np.ndarray
    index: int
    timestamp: float
    source: str
    still_id: int | None = None
    path: str | None = None


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV gives BGR (sometimes grey or BGRA from odd cameras); every stage expects RGB uint8."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***``: camera URLs carry credentials, logs must not."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


@dataclass(frozen=True)
class SourceStats:
    """A source's counters at one moment, for health checks, metrics and benchmarks.

    ``connected`` is ``None`` for sources that have no connection (files, image folders), so "down"
    means a live camera that is really down, not a file that has ended.
    """

    frames: int = 0
    dropped_frames: int = 0
    reconnects: int = 0
    reconnect_attempts: int = 0
    connected: bool | None = None
    last_error: str | None = None
    last_frame_age_s: float | None = None


class Source(ABC):
    """An iterator of `Frame`s that holds a resource: use it in a `with` block or call `close()`."""

    name: str
    stills: bool = False  # frames are held photos (each its own scene), not a moving scene

    def __iter__(self) -> Self:
        return self

    @abstractmethod
    def __next__(self) -> Frame: ...

    @abstractmethod
    def close(self) -> None:
        """Release the file/camera; safe to call twice; iteration then stops."""

    def stats(self) -> SourceStats:
        """Counters for health checks and benchmarks; live sources add connection state."""
        return SourceStats(frames=getattr(self, "_frames", 0))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# ----------------------------------------------------------------------------------- video file


class VideoFileSource(Source):
    """Frames of a video file through OpenCV's FFmpeg backend; see the module docstring."""

    def __init__(self, path: str | Path, *, loop: bool = False, realtime: bool = False, name: str | None = None):
        self.path = Path(path)
        self.loop = loop
        self.realtime = realtime
        self.name = name or self.path.name
        if not self.path.is_file():
            raise SourceError(f"video file {self.path} does not exist")
        self._cap: cv2.VideoCapture | None = self._open()
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not (0.0 < self.fps < 1000.0):
            self.fps = 0.0
        self.frame_count = max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        # Decode one frame now, so that a file FFmpeg can open but not decode fails here, clearly.
        self._pending = self._read()
        if self._pending is None:
            self.close()
            raise SourceError(f"{self.path}: opened, but not a single frame could be decoded (corrupt or no video)")
        self._frames = 0
        self._pass_frames = 0
        self._t0: float | None = None

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"cannot open video file {self.path}: not a video, an unsupported codec, or truncated "
                "(an MP4 with its index at the end cannot be opened at all once cut short)"
            )
        return cap

    def _read(self) -> np.ndarray | None:
        if self._cap is None:
            return None
        try:
            ok, image = self._cap.read()
        except cv2.error as e:
            log.warning("%s: decoding failed, ending there: %s", self.path, e)
            return None
        return image if ok and image is not None and image.size else None

    def _end_of_pass(self) -> None:
        n, expected = self._pass_frames, self.frame_count
        # The frame count is exact for MP4 but estimated from duration × fps for some containers.
        if expected and n < expected - max(2, expected // 100):
            log.warning("%s ended after %d of %d frames: the file is truncated or corrupt", self.path, n, expected)
        else:
            log.info("%s: read %d frames", self.path, n)

    def __next__(self) -> Frame:
        if self._cap is None:
            raise StopIteration
        image = self._pending if self._pending is not None else self._read()
        self._pending = None
        if image is None:
            self._end_of_pass()
            if not (self.loop and self._pass_frames > 0):
                self.close()
                raise StopIteration
            self._cap.release()
            try:
                self._cap = self._open()
            except SourceError as e:  # e.g. the file went away: end, as promised, rather than raise
                log.warning("%s; stopping", e)
                self._cap = None
                raise StopIteration from None
            self._pass_frames = 0
            image = self._read()
            if image is None:
                log.warning("%s: no frame after rewinding, stopping", self.path)
                self.close()
                raise StopIteration
        if self.realtime and self.fps:
            self._pace()
        frame = Frame(_to_rgb(image), self._frames, time.time(), self.name, None, str(self.path))
        self._frames += 1
        self._pass_frames += 1
        return frame

    def _pace(self) -> None:
        """Hold each frame until its time on the file's clock; after a long hiccup, restart the clock
        instead of bursting to catch up (a camera would not deliver the missed frames either)."""
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        due = self._t0 + self._frames / self.fps
        if now - due > 1.0:
            self._t0 = now - self._frames / self.fps
        elif due > now:
            time.sleep(due - now)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


# --------------------------------------------------------------------------------- image folder


class ImageFolderSource(Source):
    """Every image under `root` (sorted by path), each repeated for `hold_frames` frames.

    Holding a photo for several frames is what a camera pointed at a still would give, so tracking
    and the decider's multi-frame consensus run as they do live. Unreadable images are skipped with
    one warning each; the folder is listed once, at construction.
    """

    stills = True

    def __init__(
        self,
        root: str | Path,
        *,
        hold_frames: int = 15,
        recursive: bool = True,
        loop: bool = False,
        name: str | None = None,
    ):
        self.root = Path(root)
        if hold_frames < 1:
            raise ValueError(f"hold_frames must be >= 1, got {hold_frames}")
        if not self.root.is_dir():
            raise SourceError(f"image folder {self.root} does not exist or is not a folder")
        self.paths = list_images(self.root, recursive=recursive)
        if not self.paths:
            raise SourceError(
                f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {self.root}"
                + ("" if recursive else " (not searching subfolders)")
            )
        self.hold_frames = hold_frames
        self.loop = loop
        self.name = name or self.root.name or str(self.root)
        self.skipped: set[Path] = set()
        self._pos = -1  # index into self.paths of the photo being shown
        self._image: np.ndarray | None = None
        self._held = 0
        self._shown_this_pass = 0
        self._frames = 0
        self._closed = False

    def _advance(self) -> bool:
        """Load the next readable photo into `_image`; False when there is none left."""
        while True:
            self._pos += 1
            if self._pos >= len(self.paths):
                if not (self.loop and self._shown_this_pass):
                    return False
                self._pos, self._shown_this_pass = 0, 0
            path = self.paths[self._pos]
            if path in self.skipped:
                continue
            try:
                self._image = load_rgb(path)
            except (DatasetError, OSError) as e:
                log.warning("skipping unreadable image %s: %s", path, e)
                self.skipped.add(path)
                continue
            self._held = 0
            self._shown_this_pass += 1
            return True

    def __next__(self) -> Frame:
        if self._closed:
            raise StopIteration
        if (self._image is None or self._held >= self.hold_frames) and not self._advance():
            if len(self.skipped) == len(self.paths):
                log.warning("%s: none of the %d images could be read", self.root, len(self.paths))
            self.close()
            raise StopIteration
        assert self._image is not None
        # A copy per frame: a stage that draws on its frame must not change the next held frame.
        image = self._image if self._held == self.hold_frames - 1 else self._image.copy()
        frame = Frame(image, self._frames, time.time(), self.name, self._pos, str(self.paths[self._pos]))
        self._held += 1
        self._frames += 1
        return frame

    def close(self) -> None:
        self._closed = True
        self._image = None


# ---------------------------------------------------------------------------------- live camera


class _LatestFrames:
    """A bounded FIFO that drops its OLDEST item when full and counts the drops; thread-safe."""

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError(f"queue size must be >= 1, got {maxsize}")
        self._items: deque[Frame] = deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, item: Frame) -> None:
        with self._cond:
            if len(self._items) >= self._maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The oldest queued frame; None on timeout or once closed and empty."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closed, timeout)
            return self._items.popleft() if self._items else None

    def newest(self) -> Frame | None:
        """Take every queued frame and return the newest (None when empty); the older ones count as dropped."""
        with self._cond:
            if not self._items:
                return None
            self.dropped += len(self._items) - 1
            newest = self._items[-1]
            self._items.clear()
            return newest

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


def _parse_live(url_or_index: str | int) -> tuple[str, str | int]:
    """("rtsp", url) or ("v4l2", index or /dev/videoN path); SourceError for anything else."""
    if isinstance(url_or_index, int) and not isinstance(url_or_index, bool):
        if url_or_index < 0:
            raise SourceError(f"camera index must be >= 0, got {url_or_index}")
        return "v4l2", url_or_index
    spec = str(url_or_index).strip()
    if spec.isdigit():
        return "v4l2", int(spec)
    if _V4L_PATH.match(spec):
        return "v4l2", spec
    if spec.lower().startswith(_RTSP_SCHEMES):
        return "rtsp", spec
    raise SourceError(f"not a live camera: {redact_url(spec)!r} (expected rtsp://…, a camera index or /dev/videoN)")


class LiveSource(Source):
    """A live camera (RTSP URL, V4L2 index or /dev/videoN), captured in a thread; see the module docstring.

    Iteration blocks until the next frame and ends only after `close()` (from another thread, or
    after breaking out of the loop); `get(timeout)` returns None instead of blocking forever.
    `reconnects` counts re-established connections (a reopen that delivered a frame), and
    `reconnect_attempts` every reopen tried (failed ones included); `reconnect_seconds[i]` is the
    time from the start of the successful reopen to its first frame, and `outage_seconds[i]` the
    gap between the last frame before the failure and that first frame (failure detection and
    backoff included: what the pipeline saw); `connect_seconds` is the first connection's time.
    """

    def __init__(
        self,
        url_or_index: str | int,
        *,
        reconnect_initial: float = 0.5,
        reconnect_max: float = 10.0,
        stall_timeout: float = 5.0,
        open_timeout: float = 10.0,
        queue_size: int = 2,
        name: str | None = None,
    ):
        self.kind, self.target = _parse_live(url_or_index)
        if not (0 < reconnect_initial <= reconnect_max):
            raise ValueError(f"need 0 < reconnect_initial <= reconnect_max, got {reconnect_initial}, {reconnect_max}")
        if stall_timeout <= 0 or open_timeout <= 0:
            raise ValueError("stall_timeout and open_timeout must be > 0")
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        self.stall_timeout = stall_timeout
        self.open_timeout = open_timeout
        self.device = f"/dev/video{self.target}" if isinstance(self.target, int) else self.target
        self.name = name or (redact_url(self.device) if self.kind == "rtsp" else self.device)
        self._queue = _LatestFrames(queue_size)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._frames = 0
        self._last_frame_mono: float | None = None
        self.connected = False
        self.last_error: str | None = None
        self.reconnects = 0
        self.reconnect_attempts = 0
        self.connect_seconds: float | None = None
        self.reconnect_seconds: list[float] = []
        self.outage_seconds: list[float] = []
        self._configure_env()
        self._thread = threading.Thread(target=self._run, name=f"capture:{self.name}", daemon=True)
        self._thread.start()

    # -- capture thread

    def _configure_env(self) -> None:
        with _ENV_LOCK:
            if self.kind == "rtsp":
                options = os.environ.get(FFMPEG_OPTIONS_ENV)
                if options is None:
                    os.environ[FFMPEG_OPTIONS_ENV] = "rtsp_transport;tcp"
                elif "rtsp_transport" not in options:
                    log.info("%s=%r has no rtsp_transport: FFmpeg picks the transport", FFMPEG_OPTIONS_ENV, options)
            else:
                os.environ.setdefault(V4L_SELECT_TIMEOUT_ENV, str(max(1, math.ceil(self.stall_timeout))))

    def _open(self) -> cv2.VideoCapture:
        """An opened capture, or raise OSError saying why (the thread records it as `last_error`)."""
        if self.kind == "v4l2":
            if not os.path.exists(self.device):
                raise OSError(f"V4L2 device {self.device} does not exist (camera unplugged or wrong index?)")
            cap = cv2.VideoCapture(self.target, cv2.CAP_V4L2)
        else:
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.stall_timeout * 1000),
            ]
            cap = cv2.VideoCapture(str(self.target), cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            why = "server down, wrong path, or timeout" if self.kind == "rtsp" else "busy, no permission, or no camera"
            raise OSError(f"cannot open {self.name} ({why})")
        return cap

    def _record_error(self, message: str) -> None:
        with self._lock:
            repeated = message == self.last_error
            self.last_error = message
            self.connected = False
        # One error line per distinct failure; a camera that stays away would flood the log otherwise.
        log.log(logging.DEBUG if repeated else logging.ERROR, "%s: %s; reconnecting (backoff up to %.1f s)",
                self.name, message, self.reconnect_max)

    def _run(self) -> None:
        delay = self.reconnect_initial
        attempts = 0
        while not self._stop.is_set():
            if attempts:
                with self._lock:
                    self.reconnect_attempts += 1
            attempts += 1
            delivered = False
            try:
                delivered = self._session()
            except OSError as e:
                self._record_error(str(e))
            except Exception as e:  # never let the thread die: a kiosk camera must come back by itself
                self._record_error(f"unexpected {type(e).__name__}: {e}")
            if delivered:
                delay = self.reconnect_initial
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, self.reconnect_max)
        with self._lock:
            self.connected = False

    def _session(self) -> bool:
        """Open (OSError if that fails), then read until a failure or `close()`; True if a frame arrived."""
        t_open = time.monotonic()
        cap = self._open()
        got_frame = False
        try:
            while not self._stop.is_set():
                t_read = time.monotonic()
                ok, image = cap.read()
                now_wall, now = time.time(), time.monotonic()
                if not ok or image is None or not image.size:
                    waited = now - t_read
                    what = f"stalled: no frame for {waited:.1f} s" if waited >= 0.9 * self.stall_timeout else (
                        "read failed (stream ended or connection lost)")
                    self._record_error(what + ("" if got_frame else " right after opening"))
                    break
                if not got_frame:
                    got_frame = True
                    self._on_first_frame(now - t_open, now)
                with self._lock:
                    index = self._frames
                    self._frames += 1
                    self._last_frame_mono = now
                self._queue.put(Frame(_to_rgb(image), index, now_wall, self.name))
        finally:
            cap.release()
            with self._lock:
                self.connected = False
        return got_frame

    def _on_first_frame(self, seconds: float, now: float) -> None:
        with self._lock:
            self.connected = True
            self.last_error = None
            if self.connect_seconds is None:
                self.connect_seconds = seconds
                log.info("%s: connected, first frame %.2f s after open", self.name, seconds)
                return
            self.reconnects += 1
            self.reconnect_seconds.append(seconds)
            # _last_frame_mono is still the previous connection's last frame here.
            gap = now - self._last_frame_mono if self._last_frame_mono is not None else seconds
            self.outage_seconds.append(gap)
        log.info("%s: reconnected (#%d), first frame %.2f s after reopen, %.2f s after the previous frame",
                 self.name, self.reconnects, seconds, gap)

    # -- consumer side

    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame, or None after `timeout` s without one (or once closed)."""
        return self._queue.get(timeout)

    def __next__(self) -> Frame:
        frame = self._queue.get(None)
        if frame is None:
            raise StopIteration
        return frame

    def newest(self, frame: Frame) -> Frame:
        """A newer frame than ``frame`` if one has arrived since (the frames in between count as dropped), else
        ``frame`` — for a consumer that waited before working on it (``pipeline.load.Turns``)."""
        newer = self._queue.newest()
        if newer is None:
            return frame
        self._queue.dropped += 1  # ``frame`` itself is not worked on either
        return newer

    def stats(self) -> SourceStats:
        """Counters for health checks; `connected` is False while the newest frame is older than
        `stall_timeout`, even before the capture thread has given up on a blocked read."""
        with self._lock:
            age = None if self._last_frame_mono is None else time.monotonic() - self._last_frame_mono
            return SourceStats(frames=self._frames, dropped_frames=self._queue.dropped, reconnects=self.reconnects,
                               reconnect_attempts=self.reconnect_attempts,
                               connected=bool(self.connected and age is not None and age < self.stall_timeout),
                               last_error=self.last_error, last_frame_age_s=age)

    @property
    def dropped_frames(self) -> int:
        return self._queue.dropped

    def close(self, timeout: float | None = None) -> None:
        """Stop the capture thread and release the camera. Waits at most `timeout` s (default: one
        open plus one read timeout) for a thread blocked inside OpenCV; it is a daemon thread, so a
        thread still stuck then cannot keep the process alive."""
        self._stop.set()
        self._queue.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(self.open_timeout + self.stall_timeout + 1.0 if timeout is None else timeout)
            if self._thread.is_alive():
                log.warning("%s: capture thread still blocked in OpenCV after close()", self.name)


# ------------------------------------------------------------------------------------ factory


# The keyword-only options each source takes (its first argument comes from the spec).
_OPTIONS: dict[type[Source], frozenset[str]] = {
    cls: frozenset(n for n, p in inspect.signature(cls.__init__).parameters.items() if p.kind is p.KEYWORD_ONLY)
    for cls in (VideoFileSource, ImageFolderSource, LiveSource)
}


def open_source(spec: str | Path, **opts: Any) -> Source:
    """The source for a spec: ``rtsp://…`` or a camera index / ``/dev/videoN`` → `LiveSource`, a folder →
    `ImageFolderSource`, a file → `VideoFileSource`.

    Options meant for another kind of source are ignored (a CLI can pass ``hold_frames`` whatever the
    spec is); an option no source knows is a TypeError, so typos do not pass silently.
    """
    text = str(spec).strip()
    if not text:
        raise SourceError("empty source spec")
    if text.lower().startswith(_RTSP_SCHEMES) or text.isdigit() or _V4L_PATH.match(text):
        cls: type[Source] = LiveSource
        first: Any = int(text) if text.isdigit() else text
    else:
        path = Path(text).expanduser()
        if path.is_dir():
            cls, first = ImageFolderSource, path
        elif path.is_file():
            cls, first = VideoFileSource, path
        elif "://" in text:
            raise SourceError(f"unsupported source URL {redact_url(text)!r}: only rtsp:// streams are supported")
        else:
            raise SourceError(f"source {text!r} is not a file, a folder, rtsp://…, a camera index or /dev/videoN")
    known = frozenset().union(*_OPTIONS.values())
    unknown = set(opts) - known
    if unknown:
        raise TypeError(f"unknown source option(s): {', '.join(sorted(unknown))}")
    own = {k: v for k, v in opts.items() if k in _OPTIONS[cls]}
    ignored = sorted(set(opts) - set(own))
    if ignored:
        log.debug("%s ignores option(s) %s", cls.__name__, ", ".join(ignored))
    return cls(first, **own)  # type: ignore[call-arg]

