"""Prometheus metrics of one kiosk, in a registry of its own.

A private ``CollectorRegistry`` (not prometheus-client's global one) so two daemons or two tests in one
process never collide on metric names, and ``/metrics`` shows only what this kiosk owns. Label values are
created up front where they are known (decision states), so a rate over them is 0, not absent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from mpox_aism.contracts.decision import REVIEW_REASONS
from mpox_aism.contracts.decision import STATES as DECISION_STATES
from mpox_aism.inference.service import BatchRecord
from mpox_aism.kiosk.health import RAISABLE

# classifier latency on CPU is tens of ms to seconds; a GPU batch is a few ms
INFERENCE_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class _OutboxDroppedCollector(Collector):
    """``mpox_aism_outbox_dropped_total`` as a real counter whose value the outbox owns.

    The outbox keeps its all-time dropped count in SQLite (it survives restarts), so the value is set, not
    incremented; a Gauge named ``*_total`` would be typed wrongly for ``rate()`` and linters.
    """

    def __init__(self) -> None:
        self.value = 0.0

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily("mpox_aism_outbox_dropped", "Events the outbox dropped (bounds hit), all time.",
                                  value=self.value)


class KioskMetrics:
    """The kiosk's metrics and the small update methods the daemon, pipeline and HTTP API call."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.frames = Counter("mpox_aism_frames_total", "Frames read from a camera.", ["camera"], registry=r)
        self.fps = Gauge("mpox_aism_fps", "Frames per second a camera is processed at.", ["camera"], registry=r)
        self.stride_scale = Gauge("mpox_aism_stride_scale", "How far load has stretched a camera's detect and "
                                  "classify strides (1: as configured).", ["camera"], registry=r)
        self.dropped_frames = Counter("mpox_aism_dropped_frames_total", "Frames a camera source dropped.",
                                      ["camera"], registry=r)
        self.inference_seconds = Histogram("mpox_aism_inference_seconds", "One forward pass of the inference "
                                           "service (a batch of every camera's crops, or one heat map).",
                                           buckets=INFERENCE_BUCKETS, registry=r)
        self.inference_batch_crops = Histogram("mpox_aism_inference_batch_crops", "Crops per forward pass.",
                                               buckets=BATCH_BUCKETS, registry=r)
        self.inference_queue_seconds = Histogram("mpox_aism_inference_queue_seconds", "How long a batch's oldest "
                                                 "request waited for the inference worker.",
                                                 buckets=INFERENCE_BUCKETS, registry=r)
        self.turn_wait_seconds = Histogram("mpox_aism_turn_wait_seconds", "How long a camera waited for its turn "
                                           "at the CPU before its next frame (load.frames_at_once; empty when off).",
                                           buckets=INFERENCE_BUCKETS, registry=r)
        self.inference_failures = Counter("mpox_aism_inference_failures_total", "Inference requests answered "
                                          "with an error (their frame is dropped and counted).", registry=r)
        self.detections = Counter("mpox_aism_detections_total", "Skin regions detected, by kind (face, hand…).",
                                  ["kind"], registry=r)
        self.decisions = Counter("mpox_aism_decisions_total", "Track decisions, by state.", ["state"], registry=r)
        self.review_reasons = Counter("mpox_aism_review_reasons_total", "Review decisions, by why a person "
                                      "must look (unfamiliar, low_confidence…).", ["reason"], registry=r)
        self.outbox_depth = Gauge("mpox_aism_outbox_depth", "Events waiting in the outbox.", registry=r)
        self.broker_connected = Gauge("mpox_aism_broker_connected", "1 while connected to the MQTT broker.",
                                      registry=r)
        self.diagnose_requests = Counter("mpox_aism_diagnose_requests_total",
                                         "Diagnosis API requests, by HTTP status.", ["status"], registry=r)
        self.withheld_images = Counter("mpox_aism_event_images_withheld_total",
                                       "Events published without images because a face was visible in the crop.",
                                       registry=r)
        self.label_crops = Counter("mpox_aism_label_crops_total", "Event crops offered to the on-box label store, "
                                   "by result (kept, failed: the event was sent without it).", ["result"],
                                   registry=r)
        self.label_crops_expired = Counter("mpox_aism_label_crops_expired_total", "Kept crops deleted under the "
                                           "retention limit (labels.crop_retention_days).", registry=r)
        self.shadow_decisions = Counter("mpox_aism_shadow_decisions_total", "The shadow model's track decisions, "
                                        "by state (counted only, never events).", ["state"], registry=r)
        self.shadow_tracks_compared = Counter("mpox_aism_shadow_tracks_compared_total", "Ended tracks that the "
                                              "current or the shadow model decided.", registry=r)
        self.shadow_tracks_differ = Counter("mpox_aism_shadow_tracks_differ_total", "Ended tracks where the shadow "
                                            "and the current model ended in different states.", registry=r)
        self.shadow_errors = Counter("mpox_aism_shadow_errors_total", "Shadow model failures (load or classify); "
                                     "the current model carries on.", registry=r)
        self.health_raised = Gauge("mpox_aism_health_raised", "Health checks raised now, by check "
                                   "(camera_stalled: cameras; outbox_filling: 0 or 1).", ["check"], registry=r)
        self._outbox_dropped = _OutboxDroppedCollector()
        r.register(self._outbox_dropped)
        for state in DECISION_STATES:
            self.decisions.labels(state=state)
        for state in DECISION_STATES:
            self.shadow_decisions.labels(state=state)
        for reason in REVIEW_REASONS:
            self.review_reasons.labels(reason=reason)
        for result in ("kept", "failed"):
            self.label_crops.labels(result=result)
        for check in RAISABLE:
            self.health_raised.labels(check=check)

    # ------------------------------------------------------------------ cameras and pipeline
    def frame(self, camera: str, n: int = 1) -> None:
        self.frames.labels(camera=camera).inc(n)

    def set_fps(self, camera: str, fps: float) -> None:
        self.fps.labels(camera=camera).set(fps)

    def set_stride_scale(self, camera: str, scale: int) -> None:
        self.stride_scale.labels(camera=camera).set(scale)

    def dropped_frame(self, camera: str, n: int = 1) -> None:
        if n:
            self.dropped_frames.labels(camera=camera).inc(n)

    def inference_batch(self, b: BatchRecord) -> None:
        """One forward pass of the inference service (called in its worker thread)."""
        self.inference_seconds.observe(b.seconds)
        self.inference_batch_crops.observe(b.crops)
        self.inference_queue_seconds.observe(b.waited_s)
        if b.failed:
            self.inference_failures.inc(b.failed)

    def detection(self, kind: str, n: int = 1) -> None:
        if n:
            self.detections.labels(kind=kind).inc(n)

    def decision(self, state: str, n: int = 1) -> None:
        if n:
            self.decisions.labels(state=state).inc(n)

    def review_reason(self, reason: str, n: int = 1) -> None:
        if n:
            self.review_reasons.labels(reason=reason).inc(n)

    def shadow_decision(self, state: str, n: int = 1) -> None:
        if n:
            self.shadow_decisions.labels(state=state).inc(n)

    def shadow_tracks(self, compared: int, differ: int) -> None:
        if compared:
            self.shadow_tracks_compared.inc(compared)
        if differ:
            self.shadow_tracks_differ.inc(differ)

    def shadow_error(self, n: int = 1) -> None:
        if n:
            self.shadow_errors.inc(n)

    def images_withheld(self) -> None:
        self.withheld_images.inc()

    # ------------------------------------------------------------------ crops kept for labels
    def label_crop(self, kept: bool) -> None:
        self.label_crops.labels(result="kept" if kept else "failed").inc()

    def label_crops_purged(self, n: int) -> None:
        if n:
            self.label_crops_expired.inc(n)

    # ------------------------------------------------------------------ outbox and broker
    def set_outbox(self, stats: Mapping[str, float | int | None]) -> None:
        """From ``Outbox.stats()``: ``{depth, dropped, ...}``."""
        self.outbox_depth.set(float(stats.get("depth") or 0))
        self._outbox_dropped.value = float(stats.get("dropped") or 0)

    def set_broker_connected(self, connected: bool) -> None:
        self.broker_connected.set(1.0 if connected else 0.0)

    # ------------------------------------------------------------------ health checks
    def set_health_raised(self, counts: Mapping[str, int]) -> None:
        """From ``HealthMonitor.raised_counts()``: every check that can be raised, 0 included."""
        for check, n in counts.items():
            self.health_raised.labels(check=check).set(n)

    # ------------------------------------------------------------------ HTTP API
    def diagnose_request(self, status: int) -> None:
        self.diagnose_requests.labels(status=str(int(status))).inc()

    def exposition(self) -> bytes:
        """The text format served at ``/metrics``."""
        return generate_latest(self.registry)
