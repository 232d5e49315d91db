"""Decision → image policy → explanation → ``Event`` → outbox: where a decision leaves the pipeline.

The event path as a chain, one stage each: ``clear`` stops here (counted, not published), and so does
``other_condition`` where ``events.other_condition`` is off; the image
policy (``kiosk.privacy``: settings, region kind, the camera's face guard) decides whether images may
leave the box; the crop is explained by the process's one explainer (``inference.explainer``: class
maps from the forward pass, else Grad-CAM built on first use); the ``Event`` is encoded once and
written to the outbox before any send. When the write fails (disk
full, I/O error) the event waits in memory behind any earlier ones and ``retry`` (the daemon's main
loop, every second) saves it later: an alert is not dropped because one write failed, and the
camera does not stop for it.

After the outbox, the event's best crop is kept on the box for staff labels (``kiosk.labels``), whatever
the image policy decided about publishing it; a crop that cannot be kept is logged and counted, and
the event goes on without it (it is already in the outbox).
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import threading
from typing import Protocol

import numpy as np

from mpox_aism.inference.explainer import ExplainerService
from mpox_aism.kiosk.config import KioskConfig
from mpox_aism.kiosk.events import Event, build_event
from mpox_aism.kiosk.labels import CropRecord, LabelStore
from mpox_aism.kiosk.metrics import KioskMetrics
from mpox_aism.kiosk.outbox import Outbox
from mpox_aism.kiosk.privacy import FaceGuard, ImagePolicy, Verdict
from mpox_aism.pipeline.decider import Decision

log = logging.getLogger(__name__)
MAX_UNSAVED = 1000  # events held in memory while the outbox cannot be written (disk full)
RECENT = 200  # events kept for the staff page


class Waker(Protocol):
    def wake(self) -> None: ...


class EventSink:
    def __init__(self, config: KioskConfig, *, run_id: str, model_version: str, outbox: Outbox,
                 topic: str, explainer: ExplainerService, metrics: KioskMetrics,
                 waker: Waker | None = None, crops: LabelStore | None = None) -> None:
        """``crops``: where each event's best crop is kept for staff labels (None: none kept)."""
        self.config, self.run_id, self.model_version = config, run_id, model_version
        self.crops = crops
        self.outbox, self.topic, self.waker = outbox, topic, waker
        self.explainer, self.metrics = explainer, metrics
        self.policy = ImagePolicy(config.privacy)
        self._recent: collections.deque[Event] = collections.deque(maxlen=RECENT)
        self._recent_lock = threading.Lock()
        self._store_lock = threading.Lock()
        self._unsaved: collections.deque[Event] = collections.deque()
        self.store_error: str | None = None
        self.unsaved_dropped = 0
        self.crops_kept = 0
        self.crops_failed = 0

    def emit(self, camera: str, decision: Decision, guard: FaceGuard | None) -> Event | None:
        """The chain for one decision; returns the event written (None when the state is not published)."""
        if decision.state == "clear" or (decision.state == "other_condition"
                                         and not self.config.events.other_condition):
            return None
        verdict = self._verdict(decision, guard)
        attach = verdict == "attach"
        event = build_event(decision, station_id=self.config.station_id, camera=camera, run_id=self.run_id,
                            model_version=self.model_version, attach_images=attach,
                            crop_max_px=self.config.privacy.crop_max_px,
                            gradcam=self._explain(decision) if attach else None)
        self._store(event)
        self._keep_crop(event, decision, verdict)  # before the staff page can see the event: labelable at once
        with self._recent_lock:
            self._recent.append(event)
        log.info("event %s: camera %s track %s %s%s (%s %.2f)", event.event_id[:8], camera, decision.track_id,
                 decision.state, f" ({decision.reason})" if decision.reason else "", decision.label,
                 decision.probability)
        return event

    def _verdict(self, decision: Decision, guard: FaceGuard | None) -> Verdict:
        verdict = self.policy.verdict(decision, guard)
        if verdict == "face_seen":
            self.metrics.images_withheld()
            log.info("track %s: a face is (or may be) visible in the crop; event published without images",
                     decision.track_id)
        return verdict

    def _keep_crop(self, event: Event, decision: Decision, verdict: Verdict) -> None:
        """The crop for staff labels; the face check's answer goes with it, so an export can leave faces out."""
        if self.crops is None:
            return
        # "attach" after a face check means none was seen; with allow_full_face no check ran: unknown
        checked = verdict == "face_seen" or (verdict == "attach" and not self.config.privacy.allow_full_face)
        record = CropRecord(event_id=event.event_id, station_id=event.station_id, camera=event.camera,
                            run_id=self.run_id, track_id=event.track_id, kind=decision.best_kind,
                            model_version=event.model_version, created=event.time,
                            face_seen=(verdict == "face_seen") if checked else None)
        try:
            self.crops.put(record, decision.best_crop)
        except Exception as e:  # disk full, I/O, a bad crop: one label fewer, never a lost or late alert
            self.crops_failed += 1
            self.metrics.label_crop(kept=False)
            log.warning("crop of event %s not kept for labels: %s: %s", event.event_id[:8], type(e).__name__, e)
            return
        self.crops_kept += 1
        self.metrics.label_crop(kept=True)

    def _explain(self, decision: Decision) -> np.ndarray | None:
        try:
            return self.explainer.explain(decision.best_crop).overlay
        except Exception as e:  # the alert stands without its picture
            log.warning("Grad-CAM failed for track %s: %s", decision.track_id, e)
            return None

    def recent(self) -> list[Event]:
        """The latest events (for the staff page), oldest first."""
        with self._recent_lock:
            return list(self._recent)

    # ------------------------------------------------------------------------------ storing
    def _store(self, event: Event) -> None:
        with self._store_lock:
            self._unsaved.append(event)
            if len(self._unsaved) > MAX_UNSAVED:  # memory is finite too: drop the oldest, counted, loudly
                lost = self._unsaved.popleft()
                self.unsaved_dropped += 1
                log.error("outbox unwritable and %d events held: dropped event %s", MAX_UNSAVED, lost.event_id)
            self._save_locked()

    def _save_locked(self) -> None:
        while self._unsaved:
            try:
                self.outbox.put(self.topic, self._unsaved[0].wire(self.config.events.schema_version))
            except (sqlite3.Error, OSError) as e:
                if self.store_error is None:
                    log.error("cannot write the outbox %s (%s): %d event(s) held in memory, retrying every second",
                              self.outbox.path, e, len(self._unsaved))
                self.store_error = f"{type(e).__name__}: {e}"
                return
            self._unsaved.popleft()
            if self.waker is not None:
                self.waker.wake()
        if self.store_error is not None:
            log.warning("outbox %s writable again; every held event is saved", self.outbox.path)
            self.store_error = None

    def unsaved_count(self) -> int:
        """Events held in memory because the outbox could not take them."""
        with self._store_lock:
            return len(self._unsaved)

    def unsaved_ids(self) -> list[str]:
        with self._store_lock:
            return [e.event_id for e in self._unsaved]

    def retry(self) -> int:
        """Try to save the held events now; returns how many are still held."""
        with self._store_lock:
            self._save_locked()
            return len(self._unsaved)
