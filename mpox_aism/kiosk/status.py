"""The kiosk's status as types (``/healthz``, the retained MQTT status message) and its metrics feed.

``down`` lists what is not working — a camera with an error, a lost connection or a raised
``camera_stalled`` health check, the broker when one is configured and not connected, the outbox when
it cannot be written — while the kiosk still classifies and queues alerts; ``/healthz`` answers 200
"degraded" for it, so nothing restarts it. ``health`` lists every raised health check (``kiosk.health``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from mpox_aism.contracts.decision import STATES
from mpox_aism.kiosk.camera import CameraState
from mpox_aism.kiosk.health import RaisedCheck
from mpox_aism.kiosk.metrics import KioskMetrics
from mpox_aism.kiosk.mqtt import MqttPublisher
from mpox_aism.kiosk.outbox import Outbox
from mpox_aism.kiosk.sink import EventSink
from mpox_aism.pipeline.shadow import ShadowCounts


class CameraStatus(BaseModel):
    frames: int
    events: int
    errors: int
    restarts: int
    done: bool
    last_error: str | None
    connected: bool | None = Field(description="None for sources without a connection (files, image folders).")
    dropped_frames: int
    reconnects: int
    stride_scale: int = Field(1, description="How far the box's load has stretched this camera's detect and classify "
                              "strides (1: as configured; mpox_aism.pipeline.load).")


class MqttStatus(BaseModel):
    configured: bool
    connected: bool
    published: int
    last_error: str | None


class OutboxStatus(BaseModel):
    depth: int
    dropped: int
    oldest_age_s: float | None
    unsaved: int = Field(description="Events held in memory because the outbox could not take them.")
    unsaved_dropped: int
    write_error: str | None


class ShadowStatus(BaseModel):
    """The shadow head (``mpox-aism models install``): it classifies what the current model classifies, never
    decides; its decisions are only counted."""

    model_version: str
    running: bool = Field(description="False when it failed to load or switched itself off after errors.")
    decisions: dict[str, int] = Field(description="Its decisions by state, all cameras (never events).")
    tracks_compared: int = Field(description="Ended tracks that the current or the shadow model decided.")
    tracks_differ: int = Field(description="Of those, tracks where the two ended in different states.")
    errors: int


class KioskStatus(BaseModel):
    down: list[str]
    health: list[RaisedCheck] = Field(default_factory=list, description="Health checks raised now (kiosk.health): "
                                      "what the console shows as banners.")
    station_id: str
    run_id: str
    model_version: str = Field(description="The current model: it decides, and every event names it.")
    shadow: ShadowStatus | None = Field(None, description="The shadow model, when one is installed.")
    cameras: dict[str, CameraStatus]
    mqtt: MqttStatus
    outbox: OutboxStatus


def camera_status(c: CameraState) -> CameraStatus:
    return CameraStatus(frames=c.frames, events=c.events, errors=c.errors, restarts=c.restarts, done=c.done,
                        last_error=c.last_error, connected=c.source.connected,
                        dropped_frames=c.source.dropped_frames, reconnects=c.source.reconnects,
                        stride_scale=c.stride_scale)


def shadow_status(model_version: str | None, cameras: dict[str, CameraState], *, loaded: bool) -> ShadowStatus | None:
    """The shadow's counters summed over the cameras; None when no shadow is installed."""
    if not model_version:
        return None
    decisions: dict[str, int] = dict.fromkeys(STATES, 0)
    compared = differ = errors = 0
    running = loaded
    for c in cameras.values():
        sc = c.counts.shadow
        if sc is None:
            continue
        for k, v in sc.decisions.items():
            decisions[k] = decisions.get(k, 0) + v
        compared, differ, errors = compared + sc.compared, differ + sc.differ, errors + sc.errors
        running = running and sc.active
    return ShadowStatus(model_version=model_version, running=running, decisions=decisions,
                        tracks_compared=compared, tracks_differ=differ, errors=errors + (0 if loaded else 1))


def kiosk_status(*, station_id: str, run_id: str, model_version: str, cameras: dict[str, CameraState],
                 outbox: Outbox, sink: EventSink, publisher: MqttPublisher | None,
                 shadow: ShadowStatus | None = None, health: list[RaisedCheck] | None = None) -> KioskStatus:
    pub = publisher.stats() if publisher else None
    ob = outbox.stats()
    health = health or []
    stalled = {h.subject for h in health if h.check == "camera_stalled"}
    down = [f"camera:{n}" for n, c in cameras.items() if c.last_error or c.source.connected is False or n in stalled]
    if pub is not None and not pub["connected"]:
        down.append("mqtt")
    if sink.store_error is not None:
        down.append("outbox")
    return KioskStatus(
        down=down, health=health, station_id=station_id, run_id=run_id, model_version=model_version, shadow=shadow,
        cameras={n: camera_status(c) for n, c in cameras.items()},
        mqtt=MqttStatus(configured=pub is not None, connected=bool(pub and pub["connected"]),
                        published=int(pub["published"]) if pub else 0, last_error=pub["last_error"] if pub else None),
        outbox=OutboxStatus(depth=int(ob["depth"] or 0), dropped=int(ob["dropped"] or 0),
                            oldest_age_s=ob["oldest_age_s"], unsaved=sink.unsaved_count(),
                            unsaved_dropped=sink.unsaved_dropped, write_error=sink.store_error))


@dataclass
class _Seen:
    t: float
    frames: int = 0
    dropped: int = 0
    decisions: dict[str, int] = field(default_factory=dict)
    review_reasons: dict[str, int] = field(default_factory=dict)
    detections: dict[str, int] = field(default_factory=dict)
    shadow_decisions: dict[str, int] = field(default_factory=dict)
    shadow_compared: int = 0
    shadow_differ: int = 0
    shadow_errors: int = 0


def _deltas(now: Mapping[str, int], seen: dict[str, int]) -> Iterator[tuple[str, int]]:
    """(key, growth since the last call) of a worker's running counts; ``seen`` is moved on. Never negative:
    a counter that went back (a restarted pipeline) is not un-counted."""
    for key, n in now.items():
        yield key, max(0, n - seen.get(key, 0))
        seen[key] = max(n, seen.get(key, 0))


class MetricsFeed:
    """Turns the workers' counters into Prometheus metrics: deltas since the last call, per camera."""

    def __init__(self, metrics: KioskMetrics) -> None:
        self.metrics = metrics
        self._seen: dict[str, _Seen] = {}

    def update(self, cameras: dict[str, CameraState], outbox: Outbox, publisher: MqttPublisher | None) -> None:
        now, m = time.monotonic(), self.metrics
        for name, cam in cameras.items():
            seen = self._seen.setdefault(name, _Seen(t=now))
            counts = cam.counts
            df = cam.frames - seen.frames
            if df > 0:
                m.frame(name, df)
            m.set_fps(name, df / max(1e-3, now - seen.t))
            m.set_stride_scale(name, cam.stride_scale)
            dropped = cam.source.dropped_frames
            if dropped > seen.dropped:
                m.dropped_frame(name, dropped - seen.dropped)
            for state, d in _deltas(counts.decisions, seen.decisions):
                m.decision(state, d)
            for reason, d in _deltas(counts.review_reasons, seen.review_reasons):
                m.review_reason(reason, d)
            for kind, d in _deltas(counts.frames_with, seen.detections):
                m.detection(kind, d)
            if counts.shadow is not None:
                self._shadow(seen, counts.shadow)
            seen.t, seen.frames, seen.dropped = now, cam.frames, dropped
        m.set_outbox(outbox.stats())
        m.set_broker_connected(bool(publisher and publisher.connected))

    def _shadow(self, seen: _Seen, sc: ShadowCounts) -> None:
        m = self.metrics
        for state, d in _deltas(sc.decisions, seen.shadow_decisions):
            m.shadow_decision(state, d)
        m.shadow_tracks(max(0, sc.compared - seen.shadow_compared), max(0, sc.differ - seen.shadow_differ))
        m.shadow_error(max(0, sc.errors - seen.shadow_errors))
        seen.shadow_compared = max(sc.compared, seen.shadow_compared)
        seen.shadow_differ = max(sc.differ, seen.shadow_differ)
        seen.shadow_errors = max(sc.errors, seen.shadow_errors)
