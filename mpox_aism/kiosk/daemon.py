"""``mpox-aism run``: the kiosk's lifecycle — build the parts, start the cameras, watch, stop.

The parts, each in its own module: ``camera`` (one worker thread per camera, with its watchdog),
``sink`` (decision → face guard → explanation → event → outbox), ``mqtt`` (outbox → broker),
``status`` (typed status and the metrics feed) and ``server`` (HTTP API and staff page, which
see the kiosk only through :class:`KioskView`). The main thread owns the lifecycle: READY=1 once
everything is up, a WATCHDOG=1 ping every second from the main loop (it proves the main loop is
alive, not each camera: a camera without frames is its source's job to reconnect, not a reason for
systemd to restart the whole kiosk), the retained status message, SIGTERM/SIGINT → clean stop
within seconds. Every review/suspected decision becomes an event written to the outbox before any
send. The label store (``kiosk.labels``: each event's crop, kept for staff labels) is opened here and
its expired crops deleted at start-up and once a minute by the main loop; a store that cannot be
opened costs the labels, never the alerts. The health checks (``kiosk.health``: a stalled camera, a
filling outbox, a model change) run in the main loop too, each second; one that fails is logged and
costs nothing else.
"""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mpox_aism.contracts.decision import REVIEW_REASONS, STATES
from mpox_aism.contracts.model import default_backend
from mpox_aism.inference.classifier import Classifier, CropClassifier
from mpox_aism.inference.explainer import ExplainerService
from mpox_aism.inference.service import InferenceService
from mpox_aism.kiosk.acks import KioskAcks, start_acks
from mpox_aism.kiosk.camera import CAMERA_NICE, CameraState, CameraWorker
from mpox_aism.kiosk.config import KioskConfig, secret
from mpox_aism.kiosk.events import Event
from mpox_aism.kiosk.health import MODEL_RECORD, HealthMonitor, HealthReporter, ModelVersions, load_model_record
from mpox_aism.kiosk.host import sd_notify, state_dir
from mpox_aism.kiosk.labels import STORE as LABEL_STORE
from mpox_aism.kiosk.labels import LabelStore
from mpox_aism.kiosk.metrics import KioskMetrics
from mpox_aism.kiosk.models import active_models
from mpox_aism.kiosk.mqtt import MqttPublisher
from mpox_aism.kiosk.outbox import Outbox
from mpox_aism.kiosk.sink import EventSink
from mpox_aism.kiosk.status import KioskStatus, MetricsFeed, kiosk_status, shadow_status
from mpox_aism.pipeline.load import Turns

log = logging.getLogger(__name__)
PURGE_EVERY_S = 60.0  # expired crops are deleted at most this late (and at start-up)


class Daemon:
    def __init__(self, config: KioskConfig, *, summary_path: str | Path | None = None):
        self.config = config
        self.summary_path = Path(summary_path) if summary_path else None
        self.run_id = uuid.uuid4().hex[:12]
        self.stop_event = threading.Event()
        self.cameras = {c.name: CameraState(c) for c in config.cameras}
        self.metrics = KioskMetrics()
        self.model_version = ""
        self.model_dir: str | None = config.classifier.model  # the current model's directory (None: the default)
        self.shadow_version: str | None = None  # the installed shadow's version (set even when it failed to load)
        self.shadow: Classifier | None = None
        self.publisher: MqttPublisher | None = None
        self.outbox: Outbox | None = None
        self.sink: EventSink | None = None
        self.labels: LabelStore | None = None
        self.inference: InferenceService | None = None
        self.health: HealthReporter | None = None
        self._health_error: str | None = None
        self.http_url: str | None = None
        self._http_server: Any = None
        self.acks: KioskAcks | None = None  # staff actions to and from the consoles

    # -------------------------------------------------------------------------------- building
    def _classifier(self) -> Classifier:
        """The current model: the installed current slot when there is one, else ``classifier.model``;
        and the installed shadow, with the same backend (``self.shadow``; None when absent or broken)."""
        from mpox_aism.inference.backends import load_classifier

        c = self.config.classifier
        active = active_models(state_dir())
        if active.current is not None:
            log.info("model slot current: %s (installed with `mpox-aism models`; overrides classifier.model %s)",
                     active.current, c.model or "models/default")
            self.model_dir = str(active.current)
        backend = default_backend(self.model_dir) if c.backend == "auto" else c.backend
        opts: dict[str, Any] = {"device": c.device, "precision": c.precision} if backend == "torch" else {}
        classifier = load_classifier(backend, self.model_dir, **opts)
        if active.shadow is not None:
            self.shadow_version = active.shadow.name
            try:
                self.shadow = load_classifier(backend, active.shadow, **opts)
                self.shadow_version = self.shadow.meta.model_version
                log.info("model slot shadow: %s classifies beside the current model %s and never decides",
                         self.shadow_version, classifier.meta.model_version)
            except Exception as e:  # a broken shadow costs its comparison, never the alerts
                self.metrics.shadow_error()
                log.error("shadow model %s not loaded (%s: %s): running without it", active.shadow,
                          type(e).__name__, e)
        return classifier

    def _publisher(self, outbox: Outbox) -> MqttPublisher | None:
        m = self.config.mqtt
        if not m.url:
            log.warning("no MQTT broker configured: events are kept in the outbox %s until one is", self.outbox_path)
            return None
        u = urlparse(m.url)
        tls = m.tls.model_dump() if m.tls else None
        pub = MqttPublisher(outbox, host=u.hostname or "", port=u.port or (8883 if u.scheme == "mqtts" else 1883),
                            client_id=m.client_id or f"mpox-aism-{self.config.station_id}",
                            topic_prefix=self.topic_prefix, username=m.username,
                            password=secret(m.password_env, "mqtt-password") if m.username else None, tls=tls,
                            keepalive=m.keepalive_s)
        pub.start()
        return pub

    def _label_store(self) -> LabelStore | None:
        """The crops kept for staff labels, expired ones deleted now; None (logged) when it cannot be opened."""
        lc = self.config.labels
        try:
            store = LabelStore(state_dir() / LABEL_STORE, retention_days=lc.crop_retention_days)
        except (sqlite3.Error, OSError) as e:  # the alerts matter more than the labels
            log.error("label store %s not opened (%s): events are sent, no crops kept for labels",
                      state_dir() / LABEL_STORE, e)
            return None
        self._purge(store)
        if not lc.enabled:
            log.info("labels.enabled is false: no new crops are kept for labels (kept ones still expire)")
        return store

    def _purge(self, store: LabelStore) -> None:
        try:
            gone = store.purge()
        except (sqlite3.Error, OSError) as e:
            log.error("could not delete expired crops from %s: %s (tried again in a minute)", store.path, e)
            return
        self.metrics.label_crops_purged(gone)
        if gone:
            log.info("deleted %d crop(s) older than %g days (labels.crop_retention_days)", gone,
                     store.retention_days)

    def _health(self) -> HealthReporter | None:
        """The health checks, started now: a camera without frames counts from here."""
        h = self.config.health
        if not h.enabled:
            return None
        assert self.outbox is not None
        record = state_dir() / MODEL_RECORD
        monitor = HealthMonitor(h, station_id=self.config.station_id, run_id=self.run_id,
                                last_models=load_model_record(record))
        return HealthReporter(monitor, outbox=self.outbox, topic=f"{self.topic_prefix}/health",
                              publisher=self.publisher, metrics=self.metrics, record_path=record,
                              snapshot_every_s=self.config.mqtt.status_interval_s)

    def _check_health(self) -> None:
        """One round of health checks; never raises: a health check must not cost an alert or the loop."""
        if self.health is None:
            return
        try:
            self.health.tick(self.cameras, ModelVersions(self.model_version, self.shadow_version))
        except Exception as e:
            msg = f"{type(e).__name__}: {e}"
            # the same failure every second would flood the log: once at error, then at debug
            log.log(logging.DEBUG if msg == self._health_error else logging.ERROR, "health check failed: %s", msg,
                    exc_info=msg != self._health_error)
            self._health_error = msg
        else:
            self._health_error = None

    @property
    def topic_prefix(self) -> str:
        return self.config.mqtt.topic_prefix.replace("{station_id}", self.config.station_id)

    @property
    def outbox_path(self) -> Path:
        p = Path(self.config.outbox.path)
        return p if p.is_absolute() else state_dir() / p

    # -------------------------------------------------------------------------------- the view
    def status(self) -> KioskStatus:
        assert self.outbox is not None and self.sink is not None, "status() before run()"
        return kiosk_status(station_id=self.config.station_id, run_id=self.run_id, model_version=self.model_version,
                            cameras=self.cameras, outbox=self.outbox, sink=self.sink, publisher=self.publisher,
                            shadow=shadow_status(self.shadow_version, self.cameras, loaded=self.shadow is not None),
                            health=self.health.raised() if self.health else None)

    def recent_events(self) -> list[Event]:
        return self.sink.recent() if self.sink else []

    def latest_frame(self, camera: str) -> bytes | None:
        cam = self.cameras.get(camera)
        return cam.latest_jpeg if cam else None

    def camera_names(self) -> list[str]:
        return list(self.cameras)

    def unsaved_count(self) -> int:
        return self.sink.unsaved_count() if self.sink else 0

    @property
    def unsaved_dropped(self) -> int:
        return self.sink.unsaved_dropped if self.sink else 0

    def summary(self) -> dict:
        assert self.outbox is not None
        st = self.publisher.stats() if self.publisher else {"published": 0}
        decisions: dict[str, int] = dict.fromkeys(STATES, 0)
        reasons: dict[str, int] = dict.fromkeys(REVIEW_REASONS, 0)
        for c in self.cameras.values():
            for k, v in c.counts.decisions.items():
                decisions[k] = decisions.get(k, 0) + v
            for k, v in c.counts.review_reasons.items():
                reasons[k] = reasons.get(k, 0) + v
        shadow = shadow_status(self.shadow_version, self.cameras, loaded=self.shadow is not None)
        return {"model_version": self.model_version, "shadow": shadow.model_dump() if shadow else None,
                "frames": sum(c.frames for c in self.cameras.values()),
                "events": sum(c.events for c in self.cameras.values()),
                "decisions": decisions, "review_reasons": reasons,
                "published": st.get("published", 0), "pending": self.outbox.depth(),
                "unsaved": self.unsaved_count(), "unsaved_dropped": self.unsaved_dropped,
                "crops": {"kept": self.sink.crops_kept if self.sink else 0,
                          "failed": self.sink.crops_failed if self.sink else 0},
                "cameras": {n: {"frames": c.frames, "events": c.events, "errors": c.errors, "restarts": c.restarts,
                                "pipeline": c.summary} for n, c in self.cameras.items()}}

    # -------------------------------------------------------------------------------- lifecycle
    def _start_http(self, classifier: CropClassifier, explainer: ExplainerService) -> None:
        if not self.config.http.enabled:
            return
        try:
            from mpox_aism.kiosk.web.server import start_http

            assert self.sink is not None
            self._http_server, self.http_url = start_http(self, self.config, classifier=classifier,
                                                          explainer=explainer,
                                                          metrics=self.metrics,
                                                          reviews_path=state_dir() / "reviews.sqlite3",
                                                          labels=self.labels,
                                                          accounts_path=state_dir() / "staff.sqlite3")
        except Exception as e:  # the checkpoint's alerts matter more than its web page
            log.error("HTTP API not started: %s", e)

    def request_stop(self, *_: Any) -> None:
        if not self.stop_event.is_set():
            log.info("stopping")
            sd_notify("STOPPING=1")
        self.stop_event.set()

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)
        classifier = self._classifier()
        self.model_version = classifier.meta.model_version
        c = self.config
        self.outbox = Outbox(self.outbox_path, max_messages=c.outbox.max_messages, max_age_s=c.outbox.max_age_s)
        self.publisher = self._publisher(self.outbox)
        self.labels = self._label_store()
        # one inference worker for the process: every camera, the event sink and the API wait their turn in it
        self.inference = InferenceService(classifier, max_wait_ms=c.classifier.batch_wait_ms,
                                          on_batch=self.metrics.inference_batch)
        explainer = ExplainerService(classifier, model=self.model_dir)
        events = self.inference.client("events")
        self.sink = EventSink(c, run_id=self.run_id, model_version=self.model_version, outbox=self.outbox,
                              topic=f"{self.topic_prefix}/events", explainer=explainer.with_classifier(events),
                              metrics=self.metrics, waker=self.publisher,
                              crops=self.labels if c.labels.enabled else None)
        self.health = self._health()
        self._check_health()  # at once: a model change is noticed (and recorded) even by a run that ends fast
        api = self.inference.client("api")
        self._start_http(api, explainer.with_classifier(api))
        self.acks = start_acks(self)
        turns = (Turns(c.load.frames_at_once, on_wait=self.metrics.turn_wait_seconds.observe)
                 if c.load.frames_at_once else None)  # cameras working on a frame at once
        workers = [threading.Thread(target=CameraWorker(cam, c, classifier=self.inference.client(f"camera:{name}"),
                                                        sink=self.sink, stop=self.stop_event, shadow=self.shadow,
                                                        nice=CAMERA_NICE if len(self.cameras) > 1 else 0,
                                                        turns=turns).run,
                                    name=f"camera-{name}", daemon=True) for name, cam in self.cameras.items()]
        for w in workers:
            w.start()
        sd_notify("READY=1")
        where = (f", staff page {self.http_url} , upload page {self.http_url}upload , API docs "
                 f"{self.http_url}docs" if self.http_url else "")
        shadow = (f" (shadow {self.shadow_version}{'' if self.shadow else ': not loaded'})"
                  if self.shadow_version else "")
        print(f"mpox-aism running: station {c.station_id}, {len(workers)} camera(s), model "
              f"{self.model_version}{shadow}{where}", flush=True)
        feed = MetricsFeed(self.metrics)
        next_status = 0.0
        next_purge = time.monotonic() + PURGE_EVERY_S  # the first purge ran at start-up
        while not self.stop_event.is_set():
            if all(cam.done for cam in self.cameras.values()) and c.exit_when_done:
                break
            sd_notify("WATCHDOG=1")
            if self.sink.unsaved_count():
                self.sink.retry()
            feed.update(self.cameras, self.outbox, self.publisher)
            self._check_health()
            if self.labels is not None and time.monotonic() >= next_purge:
                self._purge(self.labels)
                next_purge = time.monotonic() + PURGE_EVERY_S
            if self.publisher is not None and time.monotonic() >= next_status:
                self.publisher.publish_status("status", self.status().model_dump(mode="json"))
                next_status = time.monotonic() + c.mqtt.status_interval_s
            self.stop_event.wait(1.0)
        self.stop_event.set()
        for w in workers:
            w.join(timeout=5)
        return self._shutdown(classifier)

    def _shutdown(self, classifier: Classifier) -> int:
        assert self.outbox is not None and self.sink is not None
        if self.sink.retry():
            log.error("exiting with %d event(s) the outbox could not take (%s): %s", self.sink.unsaved_count(),
                      self.sink.store_error, ", ".join(self.sink.unsaved_ids()))
        if self.publisher is not None:
            deadline = time.monotonic() + self.config.outbox.flush_timeout_s
            # wait for the broker too: a source that ended during an outage must not exit with alerts queued
            # (they would survive on disk, but only be sent at the next start)
            while self.outbox.depth() and time.monotonic() < deadline:
                time.sleep(0.1)
            self.publisher.publish_status("status", self.status().model_dump(mode="json"))
        summary = self.summary()
        if self.acks is not None:
            self.acks.close()
        if self.publisher is not None:
            self.publisher.close()
        if self._http_server is not None:
            self._http_server.stop()
        if self.inference is not None:
            self.inference.close()  # after the cameras and the API: it answers what they still queued
        classifier.close()
        if self.shadow is not None:
            self.shadow.close()
        self.outbox.close()
        if self.summary_path:
            self.summary_path.parent.mkdir(parents=True, exist_ok=True)
            self.summary_path.write_text(json.dumps(summary, indent=2) + "\n")
        found = ", ".join(f"{v} {k}" for k, v in summary["decisions"].items())
        print(f"mpox-aism done: {summary['frames']} frames, decisions: {found}; {summary['events']} events, "
              f"{summary['published']} published, {summary['pending']} pending in the outbox", flush=True)
        return 0
