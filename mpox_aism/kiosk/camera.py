"""One camera: its worker thread, its watchdog, its session and its live-view snapshot.

A watchdog around each camera, as Frigate's: a session that dies of an unexpected error is
restarted with backoff (forever for a live camera, ``FILE_RESTARTS`` times for a file, whose error
may be deterministic); a source that cannot be opened at all, or ends, is done. The other cameras
never notice. The ``Pipeline`` survives a restart (its counters, its decider); its tracks end with
the session, because frame indices restart with the new source, and their last decisions are real
and are emitted. A camera's own counters live in :class:`CameraState`, which the main thread reads.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from mpox_aism.contracts.preprocess import fit_within
from mpox_aism.inference.classifier import Classifier, CropClassifier
from mpox_aism.kiosk.config import CameraConfig, KioskConfig
from mpox_aism.kiosk.host import lower_thread_priority
from mpox_aism.kiosk.privacy import FaceGuard
from mpox_aism.kiosk.sink import EventSink
from mpox_aism.pipeline.crops import CropConfig
from mpox_aism.pipeline.decider import Decision
from mpox_aism.pipeline.load import StrideScale, Turns
from mpox_aism.pipeline.pipeline import FrameResult, Pipeline, PipelineConfig, PipelineCounts
from mpox_aism.pipeline.regions import Region, RegionDetector
from mpox_aism.pipeline.shadow import Shadow
from mpox_aism.pipeline.sources import Frame, LiveSource, Source, SourceStats, open_source

log = logging.getLogger(__name__)
RESTART_MIN_S, RESTART_MAX_S = 1.0, 30.0  # backoff between restarts of a camera whose session died
FILE_RESTARTS = 3  # a file's error may be deterministic: do not loop on it forever
CAMERA_NICE = 5  # with 2+ cameras: under the inference worker (0) they all wait on; over the API (http.nice)
LIVE_VIEW_MAX_SIDE = 480  # the staff page's live view: small enough to refresh every second
SNAPSHOT_EVERY, STATS_EVERY = 10, 30  # frames between live-view snapshots / between counter copies
COLOURS = {"face": (0, 200, 0), "hand": (255, 160, 0), "close": (0, 160, 255)}
Outcome = Literal["cannot start", "ended", "stopped", "crashed"]


@dataclass
class CameraState:
    """A camera's counters, written by its worker, read by the main thread and the web views."""

    config: CameraConfig
    frames: int = 0
    events: int = 0
    errors: int = 0
    restarts: int = 0
    live: bool = False
    stride_scale: int = 1  # the strides' stretch under load (mpox_aism.pipeline.load)
    done: bool = False
    last_error: str | None = None
    source: SourceStats = field(default_factory=SourceStats)
    counts: PipelineCounts = field(default_factory=PipelineCounts)
    summary: dict = field(default_factory=dict)  # the pipeline's JSON summary (for the exit summary file)
    latest_jpeg: bytes | None = None  # annotated JPEG of a recent frame: stays on the box, never published


def pipeline_config(camera: CameraConfig, kiosk: KioskConfig) -> PipelineConfig:
    """The camera's pipeline settings, built once from the config."""
    return PipelineConfig(detect_stride=camera.detect_stride, classify_stride=camera.classify_stride,
                          crop=CropConfig(close_range=camera.close_range), decision=kiosk.decision)


def annotate(image: np.ndarray, regions: list[Region]) -> bytes | None:
    """The frame with its regions boxed, as a small JPEG for the live view."""
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    for r in regions:
        colour = COLOURS.get(r.kind, (255, 255, 255))
        cv2.rectangle(bgr, (r.x0, r.y0), (r.x1, r.y1), colour, 2)
        cv2.putText(bgr, r.kind, (r.x0, max(12, r.y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1)
    ok, buf = cv2.imencode(".jpg", fit_within(bgr, LIVE_VIEW_MAX_SIDE), [cv2.IMWRITE_JPEG_QUALITY, 75])
    return buf.tobytes() if ok else None


class CameraWorker:
    def __init__(self, state: CameraState, kiosk: KioskConfig, *, classifier: CropClassifier, sink: EventSink,
                 stop: threading.Event, shadow: Classifier | None = None, nice: int = CAMERA_NICE,
                 turns: Turns | None = None) -> None:
        """``nice``: this worker's niceness (Linux). The daemon gives a lone camera 0: it only ever waits for the
        inference worker, never competes with it, so lowering it would only yield the CPU to other processes.
        ``turns``: shared by the process's cameras; each frame is read (a file) or started (a live camera) in
        a turn (``pipeline.load.Turns``). None: no turns."""
        self.state, self.kiosk, self.classifier, self.sink, self.stop = state, kiosk, classifier, sink, stop
        self.nice, self.turns = nice, turns
        self.shadow = shadow  # a second head that only counts (pipeline.shadow); its decider is this camera's
        self.pipeline: Pipeline | None = None
        self.scale = StrideScale(state.config.min_fps, state.config.max_stride_scale)

    def run(self) -> None:
        """The watchdog loop (the thread's target)."""
        cam, delay = self.state, RESTART_MIN_S
        lower_thread_priority(self.nice, "camera")
        try:
            while not self.stop.is_set():
                if self._session() != "crashed":
                    break
                if not cam.live and cam.restarts >= FILE_RESTARTS:
                    log.error("camera %s: gave up after %d restarts", cam.config.name, cam.restarts)
                    break
                cam.restarts += 1
                log.warning("camera %s: restarting in %.0f s (restart %d)", cam.config.name, delay, cam.restarts)
                if self.stop.wait(delay):
                    break
                delay = min(2 * delay, RESTART_MAX_S)
        finally:
            cam.done = True

    def _failed(self, e: Exception) -> None:
        self.state.errors += 1
        self.state.last_error = f"{type(e).__name__}: {e}"

    def _session(self) -> Outcome:
        """Open the source and detectors, run frames until the source ends, a stop, or an error."""
        cam, c, k = self.state, self.state.config, self.kiosk
        opened = contextlib.ExitStack()  # what a failed start had already opened is closed again
        try:
            det = opened.enter_context(RegionDetector(
                min_face_score=k.detector.min_face_score, min_hand_score=k.detector.min_hand_score,
                max_hands=k.detector.max_hands, face_model=k.detector.face_model))
            source = opened.enter_context(open_source(c.source, hold_frames=c.hold_frames, loop=c.loop, name=c.name))
            guard = self.sink.policy.guard()
            if guard is not None:
                opened.enter_context(guard)
            if self.pipeline is None:
                shadow = Shadow(self.shadow, k.decision) if self.shadow is not None else None
                self.pipeline = Pipeline(self.classifier, det, pipeline_config(c, k), shadow=shadow)
        except Exception as e:
            opened.close()
            self._failed(e)
            log.error("camera %s cannot start: %s", c.name, cam.last_error)
            return "cannot start"
        cam.live = isinstance(source, LiveSource)
        pipe = self.pipeline
        pipe.use_detector(det)
        outcome: Outcome = "ended"
        first = True
        frames = opened.enter_context(contextlib.closing(self._frames(source, cam.live)))
        try:
            with opened:
                try:
                    for frame in frames:
                        if self.stop.is_set():
                            outcome = "stopped"
                            break
                        if first and cam.restarts:
                            cam.last_error = None  # back after a restart
                        first = False
                        cam.frames += 1
                        self._handle(pipe.process(frame), frame.image, guard)
                        pipe.stride_scale = cam.stride_scale = self.scale.update(
                            time.monotonic(), source.dropped_frames if cam.live else 0, live=cam.live)
                        if cam.frames % STATS_EVERY == 0:
                            cam.source, cam.counts = source.stats(), pipe.counts()
                            cam.summary = pipe.stats.summary()
                finally:
                    frames.close()  # give back this camera's turn before its last decisions are emitted
                    for decision in pipe.finish():
                        self._emit(decision, guard)
                cam.source = source.stats()
        except Exception as e:  # the worker must report, not vanish
            self._failed(e)
            log.exception("camera %s stopped", c.name)
            outcome = "crashed"
        finally:
            cam.counts, cam.summary = pipe.counts(), pipe.stats.summary()
        return outcome

    def _frames(self, source: Source, live: bool) -> Iterator[Frame]:
        """The source's frames, each yielded inside this camera's turn (the caller works on it before the next).

        A file is read inside the turn, so the frame is as fresh as it can be when work on it starts; a live
        camera waits for its frame first (holding a turn while its camera is between frames would keep the
        others waiting), and the live source's short queue keeps that frame fresh.
        """
        it = iter(source)
        working = getattr(self.classifier, "working", None)  # the shared worker waits for its crops only then
        while not self.stop.is_set():
            frame = next(it, None) if live else None
            if live and frame is None:
                return
            with contextlib.ExitStack() as turn:
                if self.turns is not None:
                    turn.enter_context(self.turns.turn())
                    if self.stop.is_set():  # stopped while waiting: the turn goes to the next camera at once
                        return
                    if isinstance(source, LiveSource):  # frames that arrived while it waited: the newest
                        frame = source.newest(frame)  # type: ignore[arg-type]
                if working is not None:
                    turn.enter_context(working())
                if not live:
                    frame = next(it, None)
                    if frame is None:
                        return
                yield frame  # type: ignore[misc]

    def _handle(self, result: FrameResult, image: np.ndarray, guard: FaceGuard | None) -> None:
        for decision in result.decisions:
            self._emit(decision, guard)
        if self.state.frames % SNAPSHOT_EVERY == 0:
            try:
                self.state.latest_jpeg = annotate(image, result.regions) or self.state.latest_jpeg
            except Exception as e:  # the live view is a convenience: never let it stop a camera
                log.debug("snapshot failed: %s", e)

    def _emit(self, decision: Decision, guard: FaceGuard | None) -> None:
        if self.sink.emit(self.state.config.name, decision, guard) is not None:
            self.state.events += 1
