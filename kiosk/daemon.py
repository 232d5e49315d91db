"""``mpox-aism run``: cameras → pipeline → events → outbox → MQTT, with health, metrics and sd_notify.

One capture+pipeline worker thread per camera (a camera that fails is logged, counted and, for
live sources, reconnected by its source; a session that dies of an unexpected error is restarted by
the worker's watchdog with backoff; it never takes the others down). The main thread owns
the lifecycle: READY=1 once everything is up, a WATCHDOG=1 ping every second from the main loop
(it proves the main loop is alive, not each camera: a camera without frames is its source's job
to reconnect, not a reason for systemd to restart the whole kiosk), the retained status message,
SIGTERM/SIGINT → clean stop within seconds.
Every review/suspected decision becomes an event written to the outbox before any send.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import signal
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kiosk.config import CameraConfig, KioskConfig, secret
from kiosk.events import build_event, images_allowed
from kiosk.outbox import Outbox
from kiosk.privacy import FaceGuard

log = logging.getLogger(__name__)
RESTART_MIN_S, RESTART_MAX_S = 1.0, 30.0  # backoff between restarts of a camera whose session died
MAX_UNSAVED = 1000  # events held in memory while the outbox cannot be written (disk full)
FILE_RESTARTS = 3  # a file's error may be deterministic: do not loop on it forever


def sd_notify(message: str) -> bool:
    """Tell systemd (Type=notify) about READY/WATCHDOG/STOPPING; a no-op outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode())
        return True
    except OSError as e:
        log.warning("sd_notify(%s) failed: %s", message, e)
        return False


def state_dir() -> Path:
    d = Path(os.environ.get("STATE_DIRECTORY", "runs/state").split(":")[0])
    d.mkdir(parents=True, exist_ok=True)
    return d


@dataclass
class CameraState:
    config: CameraConfig
    frames: int = 0
    events: int = 0
    errors: int = 0
    restarts: int = 0
    live: bool = False
    done: bool = False
    last_error: str | None = None
    source_stats: dict = field(default_factory=dict)
    pipeline_summary: dict = field(default_factory=dict)


class Daemon:
    def __init__(self, config: KioskConfig, *, summary_path: str | Path | None = None):
        self.config = config
        self.summary_path = Path(summary_path) if summary_path else None
        self.run_id = uuid.uuid4().hex[:12]
        self.stop_event = threading.Event()
        self.cameras = {c.name: CameraState(c) for c in config.cameras}
        self.recent: list[dict] = []  # the latest events (for the staff page), newest last
        self.latest_jpeg: dict[str, bytes] = {}  # camera → annotated JPEG of a recent frame (staff page)
        self._lock = threading.Lock()
        self.explain_lock = threading.Lock()  # Grad-CAM hooks on the shared torch model: one at a time
        self.publisher = None
        self.outbox: Outbox | None = None
        self.http_url: str | None = None
        self._http_server = None
        from kiosk.metrics import KioskMetrics

        self.metrics = KioskMetrics()
        self._seen: dict[str, dict[str, float]] = {}
        self._store_lock = threading.Lock()
        self._unsaved: collections.deque[dict] = collections.deque()  # events the outbox could not take yet
        self.store_error: str | None = None
        self.unsaved_dropped = 0

    # -------------------------------------------------------------------------------- building
    def _classifier(self):
        from export.backends import load_classifier
        from pipeline.bench import default_backend

        c = self.config.classifier
        backend = default_backend(c.model) if c.backend == "auto" else c.backend
        opts: dict[str, Any] = {"device": c.device, "precision": c.precision} if backend == "torch" else {}
        return load_classifier(backend, c.model, **opts)

    def _publisher(self):
        from kiosk.mqtt import MqttPublisher

        m = self.config.mqtt
        if not m.url:
            log.warning("no MQTT broker configured: events are kept in the outbox %s until one is", self.outbox_path)
            return None
        u = urlparse(m.url)
        tls = m.tls.model_dump() if m.tls else None
        pub = MqttPublisher(self.outbox, host=u.hostname or "", port=u.port or (8883 if u.scheme == "mqtts" else 1883),
                            client_id=m.client_id or f"mpox-aism-{self.config.station_id}",
                            topic_prefix=self.topic_prefix, username=m.username,
                            password=secret(m.password_env, "mqtt-password") if m.username else None, tls=tls,
                            keepalive=m.keepalive_s)
        pub.start()
        return pub

    @property
    def topic_prefix(self) -> str:
        return self.config.mqtt.topic_prefix.replace("{station_id}", self.config.station_id)

    @property
    def outbox_path(self) -> Path:
        p = Path(self.config.outbox.path)
        return p if p.is_absolute() else state_dir() / p

    # -------------------------------------------------------------------------------- workers
    def _camera_worker(self, cam: CameraState, classifier, explainer_factory) -> None:
        """A watchdog around one camera, as Frigate's: a session that dies of an unexpected error is
        restarted with backoff (forever for a live camera, ``FILE_RESTARTS`` times for a file, whose
        error may be deterministic); a source that cannot be opened at all, or ends, is done. The
        other cameras never notice."""
        delay = RESTART_MIN_S
        pipe = None
        try:
            while not self.stop_event.is_set():
                outcome, pipe = self._camera_session(cam, classifier, explainer_factory, pipe)
                if outcome != "crashed":
                    break
                if not cam.live and cam.restarts >= FILE_RESTARTS:
                    log.error("camera %s: gave up after %d restarts", cam.config.name, cam.restarts)
                    break
                cam.restarts += 1
                log.warning("camera %s: restarting in %.0f s (restart %d)", cam.config.name, delay, cam.restarts)
                if self.stop_event.wait(delay):
                    break
                delay = min(2 * delay, RESTART_MAX_S)
        finally:
            cam.done = True

    def _camera_session(self, cam: CameraState, classifier, explainer_factory, pipe):
        """Open the source and detectors, run frames until the source ends, a stop, or an error.

        Returns (``"cannot start" | "ended" | "stopped" | "crashed"``, the pipeline): the pipeline (its
        stats, decider) lives across restarts; its open tracks are closed when a session dies.
        """
        from pipeline.crops import CropConfig
        from pipeline.decider import DecisionConfig
        from pipeline.pipeline import Pipeline, PipelineConfig
        from pipeline.regions import RegionDetector
        from pipeline.sources import ImageFolderSource, LiveSource, open_source

        c, cfg = cam.config, self.config
        d = cfg.decision
        try:
            det = RegionDetector(min_face_score=cfg.detector.min_face_score,
                                 min_hand_score=cfg.detector.min_hand_score, max_hands=cfg.detector.max_hands,
                                 face_model=cfg.detector.face_model)
            source = open_source(c.source, hold_frames=c.hold_frames, loop=c.loop, name=c.name)
            guard = None if cfg.privacy.allow_full_face or not cfg.privacy.publish_crops else FaceGuard()
        except Exception as e:
            cam.errors += 1
            cam.last_error = f"{type(e).__name__}: {e}"
            log.error("camera %s cannot start: %s", c.name, cam.last_error)
            return "cannot start", pipe
        cam.live = isinstance(source, LiveSource)
        if pipe is None:
            pconf = PipelineConfig(
                detect_stride=c.detect_stride, classify_stride=c.classify_stride,
                crop=CropConfig(close_range=c.close_range),
                decision=DecisionConfig(threshold=d.threshold, notifiable=tuple(d.notifiable), window=d.window,
                                        min_crops=d.min_crops, consensus=d.consensus))
            if isinstance(source, ImageFolderSource):
                # each still is its own scene held a few frames: strides would leave it under min_crops
                pconf.detect_stride = pconf.classify_stride = 1
            pipe = Pipeline(classifier, det, pconf)
        pipe.detector = det
        outcome = "ended"
        first = True
        try:
            with source, det, guard or contextlib.nullcontext():
                try:
                    for frame in source:
                        if self.stop_event.is_set():
                            outcome = "stopped"
                            break
                        if first and cam.restarts:
                            cam.last_error, first = None, False  # back after a restart
                        cam.frames += 1
                        for decision in pipe.process(frame):
                            self._emit(cam, decision, explainer_factory, guard)
                        if cam.frames % 10 == 0:
                            self._snapshot(c.name, frame.image, pipe)
                        if cam.frames % 30 == 0:
                            cam.source_stats = source.stats()
                            cam.pipeline_summary = pipe.stats.summary()
                finally:
                    # the tracks end with the session (frame indices restart with the next source);
                    # their last decisions are real and are emitted
                    for decision in pipe.finish():
                        self._emit(cam, decision, explainer_factory, guard)
                cam.source_stats = source.stats()
        except Exception as e:  # the worker must report, not vanish
            cam.errors += 1
            cam.last_error = f"{type(e).__name__}: {e}"
            log.exception("camera %s stopped", c.name)
            outcome = "crashed"
        finally:
            cam.pipeline_summary = pipe.stats.summary()
        return outcome, pipe

    def _snapshot(self, camera: str, image, pipe) -> None:
        """A small annotated JPEG for the staff page's live view (stays on the box, never published)."""
        import cv2

        try:
            bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
            colours = {"face": (0, 200, 0), "hand": (255, 160, 0), "close": (0, 160, 255)}
            for r in pipe.regions:
                cv2.rectangle(bgr, (r.x0, r.y0), (r.x1, r.y1), colours.get(r.kind, (255, 255, 255)), 2)
                cv2.putText(bgr, r.kind, (r.x0, max(12, r.y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                            colours.get(r.kind, (255, 255, 255)), 1)
            scale = 480 / max(bgr.shape[:2])
            if scale < 1:
                bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 75])
            if ok:
                self.latest_jpeg[camera] = buf.tobytes()
        except Exception as e:  # the live view is a convenience: never let it stop a camera
            log.debug("snapshot failed: %s", e)

    def recent_events(self) -> list[dict]:
        with self._lock:
            return list(self.recent)

    def _emit(self, cam: CameraState, decision, explainer_factory, guard: FaceGuard | None = None) -> None:
        if decision.state == "clear":
            return
        gradcam = None
        attach = images_allowed(decision, self.config.privacy)
        if attach and guard is not None and guard.contains_face(decision.best_crop):
            attach = False
            self.metrics.images_withheld()
            log.info("track %s: a face is visible in the crop; event published without images", decision.track_id)
        if attach:
            try:
                with self.explain_lock:
                    gradcam = explainer_factory().explain(decision.best_crop).overlay
            except Exception as e:
                log.warning("Grad-CAM failed for track %s: %s", decision.track_id, e)
        event = build_event(decision, station_id=self.config.station_id, camera=cam.config.name,
                            run_id=self.run_id, model_version=self.model_version, privacy=self.config.privacy,
                            gradcam=gradcam, attach_images=attach)
        self._store(event)
        cam.events += 1
        with self._lock:
            self.recent.append(event)
            del self.recent[:-200]
        log.info("event %s: camera %s track %s %s (%s %.2f)", event["event_id"][:8], cam.config.name,
                 decision.track_id, decision.state, decision.label, decision.probability)

    def _store(self, event: dict) -> None:
        """Outbox first, always. When the write fails (disk full, I/O error) the event waits in memory,
        behind any earlier ones, and the main loop retries every second: an alert is not dropped because
        one write failed, and the camera does not stop for it."""
        with self._store_lock:
            self._unsaved.append(event)
            if len(self._unsaved) > MAX_UNSAVED:  # memory is finite too: drop the oldest, counted, loudly
                lost = self._unsaved.popleft()
                self.unsaved_dropped += 1
                log.error("outbox unwritable and %d events held: dropped event %s", MAX_UNSAVED, lost["event_id"])
            self._save_unsaved_locked()

    def _save_unsaved_locked(self) -> None:
        while self._unsaved:
            event = self._unsaved[0]
            try:
                if self.publisher is not None:
                    self.publisher.publish_event("events", event)
                else:
                    self.outbox.put(f"{self.topic_prefix}/events",
                                    json.dumps(event, separators=(",", ":")).encode())
            except (sqlite3.Error, OSError) as e:
                if self.store_error is None:
                    log.error("cannot write the outbox %s (%s): %d event(s) held in memory, retrying every second",
                              self.outbox_path, e, len(self._unsaved))
                self.store_error = f"{type(e).__name__}: {e}"
                return
            self._unsaved.popleft()
        if self.store_error is not None:
            log.warning("outbox %s writable again; every held event is saved", self.outbox_path)
            self.store_error = None

    def unsaved_count(self) -> int:
        """Events held in memory because the outbox could not take them."""
        with self._store_lock:
            return len(self._unsaved)

    def retry_unsaved(self) -> int:
        """Try to save the held events now; returns how many are still held."""
        with self._store_lock:
            self._save_unsaved_locked()
            return len(self._unsaved)

    # -------------------------------------------------------------------------------- lifecycle
    def status(self) -> dict:
        pub = self.publisher.stats() if self.publisher else {"connected": False, "published": 0,
                                                             **self.outbox.stats()}
        down = [f"camera:{n}" for n, c in self.cameras.items()
                if c.last_error or c.source_stats.get("connected") is False]
        if self.publisher is not None and not pub.get("connected", False):
            down.append("mqtt")
        if self.store_error is not None:
            down.append("outbox")
        return {
            "down": down,
            "station_id": self.config.station_id, "run_id": self.run_id, "model_version": self.model_version,
            "cameras": {n: {"frames": c.frames, "events": c.events, "errors": c.errors, "restarts": c.restarts,
                            "done": c.done,
                            "last_error": c.last_error, **{k: c.source_stats.get(k) for k in
                                                           ("connected", "dropped_frames", "reconnects")}}
                        for n, c in self.cameras.items()},
            "mqtt": {"configured": self.publisher is not None, "connected": pub.get("connected", False),
                     "published": pub.get("published", 0), "last_error": pub.get("last_error")},
            "outbox": {**self.outbox.stats(), "unsaved": len(self._unsaved), "unsaved_dropped": self.unsaved_dropped,
                       "write_error": self.store_error},
        }

    def summary(self) -> dict:
        st = self.publisher.stats() if self.publisher else {"published": 0}
        decisions: dict[str, int] = {"clear": 0, "review": 0, "suspected": 0}
        for c in self.cameras.values():
            for k, v in c.pipeline_summary.get("decisions", {}).items():
                decisions[k] = decisions.get(k, 0) + v
        return {"frames": sum(c.frames for c in self.cameras.values()),
                "events": sum(c.events for c in self.cameras.values()),
                "decisions": decisions,
                "published": st.get("published", 0), "pending": self.outbox.depth(),
                "unsaved": len(self._unsaved), "unsaved_dropped": self.unsaved_dropped,
                "cameras": {n: {"frames": c.frames, "events": c.events, "errors": c.errors, "restarts": c.restarts,
                                "pipeline": c.pipeline_summary} for n, c in self.cameras.items()}}

    def _start_http(self, classifier, explainer_factory) -> None:
        h = self.config.http
        if not h.enabled:
            return
        try:
            from kiosk.server import start_http

            self._http_server, self.http_url = start_http(self, classifier, explainer_factory)
        except Exception as e:  # the checkpoint's alerts matter more than its web page
            log.error("HTTP API not started: %s", e)

    def request_stop(self, *_: Any) -> None:
        if not self.stop_event.is_set():
            log.info("stopping")
            sd_notify("STOPPING=1")
        self.stop_event.set()

    def run(self) -> int:
        from export.gradcam import GradCamExplainer

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)
        classifier = self._classifier()
        self.model_version = classifier.meta.model_version
        explainer: list[GradCamExplainer] = []

        def explainer_factory() -> GradCamExplainer:
            if not explainer:  # built on the first flagged crop: keeps the torch weights off the hot path
                explainer.append(GradCamExplainer(self.config.classifier.model))
            return explainer[0]

        self.outbox = Outbox(self.outbox_path, max_messages=self.config.outbox.max_messages,
                             max_age_s=self.config.outbox.max_age_s)
        self.publisher = self._publisher()
        self._start_http(classifier, explainer_factory)
        workers = [threading.Thread(target=self._camera_worker, args=(cam, classifier, explainer_factory),
                                    name=f"camera-{name}", daemon=True) for name, cam in self.cameras.items()]
        for w in workers:
            w.start()
        sd_notify("READY=1")
        where = (f", staff page {self.http_url} , upload page {self.http_url}upload , API docs "
                 f"{self.http_url}docs" if self.http_url else "")
        print(f"mpox-aism running: station {self.config.station_id}, {len(workers)} camera(s), model "
              f"{self.model_version}{where}", flush=True)
        next_status = 0.0
        while not self.stop_event.is_set():
            if all(c.done for c in self.cameras.values()) and self.config.exit_when_done:
                break
            sd_notify("WATCHDOG=1")
            if self._unsaved:
                self.retry_unsaved()
            self._update_metrics()
            if self.publisher is not None and time.monotonic() >= next_status:
                self.publisher.publish_status("status", self.status())
                next_status = time.monotonic() + self.config.mqtt.status_interval_s
            self.stop_event.wait(1.0)
        self.stop_event.set()
        for w in workers:
            w.join(timeout=5)
        return self._shutdown(classifier)

    def _update_metrics(self) -> None:
        """Turn the workers' counters into Prometheus metrics (deltas since the last call)."""
        now = time.monotonic()
        m = self.metrics
        for name, cam in self.cameras.items():
            seen = self._seen.setdefault(name, {"t": now, "frames": 0, "dropped": 0})
            summ = cam.pipeline_summary
            df = cam.frames - seen["frames"]
            if df > 0:
                m.frame(name, int(df))
            m.set_fps(name, df / max(1e-3, now - seen["t"]))
            dropped = int(cam.source_stats.get("dropped_frames") or 0)
            if dropped > seen["dropped"]:
                m.dropped_frame(name, dropped - int(seen["dropped"]))
            for state, n in summ.get("decisions", {}).items():
                key = f"decisions_{state}"
                if n > seen.get(key, 0):
                    for _ in range(int(n - seen.get(key, 0))):
                        m.decision(state)
                    seen[key] = n
            for kind in ("face", "hand", "close"):
                n = int(summ.get(f"frames_with_{kind}", 0))
                if n > seen.get(f"det_{kind}", 0):
                    m.detection(kind, n - int(seen.get(f"det_{kind}", 0)))
                    seen[f"det_{kind}"] = n
            classify_ms = summ.get("stage_ms", {}).get("classify")
            if classify_ms and df > 0:
                m.observe_inference(classify_ms / 1000)
            seen.update(t=now, frames=cam.frames, dropped=dropped)
        m.set_outbox(self.outbox.stats())
        m.set_broker_connected(bool(self.publisher and self.publisher.connected))

    def _shutdown(self, classifier) -> int:
        if self.retry_unsaved():
            log.error("exiting with %d event(s) the outbox could not take (%s): %s", len(self._unsaved),
                      self.store_error, ", ".join(e["event_id"] for e in self._unsaved))
        if self.publisher is not None:
            deadline = time.monotonic() + self.config.outbox.flush_timeout_s
            # wait for the broker too: a source that ended during an outage must not exit with alerts queued
            # (they would survive on disk, but only be sent at the next start)
            while self.outbox.depth() and time.monotonic() < deadline:
                time.sleep(0.1)
            self.publisher.publish_status("status", self.status())
        summary = self.summary()
        if self.publisher is not None:
            self.publisher.close()
        if self._http_server is not None:
            self._http_server.stop()
        classifier.close()
        self.outbox.close()
        if self.summary_path:
            self.summary_path.parent.mkdir(parents=True, exist_ok=True)
            self.summary_path.write_text(json.dumps(summary, indent=2) + "\n")
        found = ", ".join(f"{v} {k}" for k, v in summary["decisions"].items())
        print(f"mpox-aism done: {summary['frames']} frames, decisions: {found}; {summary['events']} events, "
              f"{summary['published']} published, {summary['pending']} pending in the outbox", flush=True)
        return 0
