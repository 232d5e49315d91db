"""Health you cannot miss (issue 29 item 3): what staff must see, raised and cleared as events.

Every second the daemon's main loop hands :class:`HealthMonitor` what it can see — each camera's frame
count and state, the outbox's depth and oldest age, the model versions — and gets back the transitions:
a check that starts (``raised``), one that ends (``cleared``), a one-off ``notice``. The monitor does no
I/O and takes its clocks, so its rules are tested with a fake clock; :class:`HealthReporter` does the
rest (outbox, snapshot, metrics, the model record). Each check has a stable id and a subject; the pair
is what a console keys its banner on.

The rules, and why:

- ``camera_stalled`` (subject: the camera; critical: its lane is not screened) — no new frame for
  ``health.camera_stall_s``. Measured here from the camera's frame counter, not from its source's
  ``last_frame_age_s``: the worker copies source stats only every 30 frames, and a stalled worker copies
  none. A camera that never produced a frame counts from the daemon's start. A file or image-folder
  source that ended normally (``done``, not live, no error) is *not* stalled: it has nothing more to show,
  and ``exit_when_done`` decides whether the kiosk exits. One that could not start, or gave up after its
  restarts (``done`` with an error), is: nothing brings it back short of a restart. Cleared when frames
  come again (or the file ends normally).
- ``outbox_filling`` (subject ``outbox``; warning: alerts are waiting, and at the bound the oldest are
  dropped) — depth ≥ ``health.outbox_warn_share`` × ``outbox.max_messages``, or the oldest message older
  than ``health.outbox_warn_age_s``. Cleared only under ``CLEAR_AT`` (half) of both thresholds, so a
  queue hovering at the line does not flap a banner on and off.
- ``model_changed`` (subject ``model`` or ``shadow``; a ``notice``, never cleared) — the current (or
  shadow) model differs from the one this kiosk last ran with, kept in ``<state dir>/health-models.json``.
  The very first start (no record) and a plain restart send nothing.

Delivery: each transition is a :class:`HealthEvent` (``docs/schema/health-v1.json``) written to the
outbox for ``<prefix>/health`` (QoS 1, not retained: the outbox keeps it while the broker is away, as it
keeps alerts); a retained :class:`HealthSnapshot` of what is raised now goes to ``<prefix>/health/active``,
best-effort like the status, so a console that starts later sees it. A health message never costs an
alert: it is not written while the outbox is at its bound (it would push out the oldest alert), and a
failing check is logged by the daemon, never raised into its main loop.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from mpox_aism.kiosk.config import HealthConfig

if TYPE_CHECKING:
    from mpox_aism.kiosk.camera import CameraState
    from mpox_aism.kiosk.metrics import KioskMetrics
    from mpox_aism.kiosk.mqtt import MqttPublisher
    from mpox_aism.kiosk.outbox import Outbox

log = logging.getLogger(__name__)
SCHEMA = "mpox-aism/health@1"
ACTIVE_SCHEMA = "mpox-aism/health-active@1"
MODEL_RECORD = "health-models.json"  # in the state directory: the models this kiosk last ran with
CLEAR_AT = 0.5  # outbox_filling clears under this share of both its thresholds (hysteresis)
Check = Literal["camera_stalled", "outbox_filling", "model_changed"]
RAISABLE: tuple[Check, ...] = ("camera_stalled", "outbox_filling")  # model_changed is a notice only
State = Literal["raised", "cleared", "notice"]
Severity = Literal["warning", "critical"]


def iso_utc(ts: float) -> str:
    """Wall-clock seconds as ISO 8601 UTC with milliseconds, as in events."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


class HealthEvent(BaseModel):
    """One transition of one check, as it leaves the box (QoS 1 on ``<topic_prefix>/health``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["mpox-aism/health@1"] = Field(SCHEMA, alias="schema", description="Payload version.")
    health_id: str = Field(description="uuid4 of this transition: the de-duplication key (re-sends keep it).")
    station_id: str
    run_id: str = Field(description="The daemon run that saw it (a restart starts a new one).")
    check: Check = Field(description="Which rule: camera_stalled, outbox_filling, model_changed.")
    subject: str = Field(description="What it is about: a camera's name, 'outbox', 'model' or 'shadow'.")
    state: State = Field(description="raised / cleared (the banner for check+subject comes and goes), or a "
                         "one-off notice.")
    severity: Severity
    since: str = Field(description="When the condition began (the same in its raised and cleared messages).")
    time: str = Field(description="When this message was made.")
    detail: str = Field(description="What is wrong, in words for the console's banner.")

    def payload(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)

    def wire(self) -> bytes:
        """The one wire form: compact UTF-8 JSON, as the outbox keeps it and MQTT sends it."""
        return json.dumps(self.payload(), separators=(",", ":"), ensure_ascii=False).encode()


class HealthSnapshot(BaseModel):
    """What is raised now (retained on ``<topic_prefix>/health/active``): a late console's starting point."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["mpox-aism/health-active@1"] = Field(ACTIVE_SCHEMA, alias="schema")
    station_id: str
    run_id: str
    time: str
    raised: list[HealthEvent] = Field(description="The raised message of every check not yet cleared.")

    def payload(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)


class RaisedCheck(BaseModel):
    """A raised check in the kiosk's status (``/healthz``, the retained status message)."""

    check: Check
    subject: str
    severity: Severity
    since: str
    detail: str


# ------------------------------------------------------------------------------------ what the monitor sees
@dataclass(frozen=True)
class CameraSample:
    name: str
    frames: int
    done: bool
    live: bool
    error: str | None

    @classmethod
    def of(cls, name: str, cam: CameraState) -> CameraSample:
        return cls(name, cam.frames, cam.done, cam.live, cam.last_error)


@dataclass(frozen=True)
class OutboxSample:
    depth: int
    max_messages: int
    oldest_age_s: float | None

    @classmethod
    def of(cls, outbox: Outbox) -> OutboxSample:
        st = outbox.stats()
        age = st["oldest_age_s"]
        return cls(int(st["depth"] or 0), outbox.max_messages, None if age is None else float(age))


@dataclass(frozen=True)
class ModelVersions:
    """The models a kiosk runs: what ``model_changed`` compares with the last run's record."""

    current: str
    shadow: str | None = None


def load_model_record(path: Path) -> ModelVersions | None:
    """The last run's models; None when there is no record (first start) or it cannot be read (logged)."""
    try:
        d = json.loads(path.read_text())
        return ModelVersions(current=str(d["current"]), shadow=str(d["shadow"]) if d.get("shadow") else None)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as e:
        log.warning("model record %s unreadable (%s): no model_changed notice this start", path, e)
        return None


def save_model_record(path: Path, models: ModelVersions) -> None:
    """Write the record atomically (a power cut leaves the old one or the new one)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(asdict(models)) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# ------------------------------------------------------------------------------------ the rules
class HealthMonitor:
    """The rules of the module docstring. Pure: :meth:`check` takes samples, returns transitions."""

    def __init__(self, config: HealthConfig, *, station_id: str, run_id: str,
                 last_models: ModelVersions | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        """``last_models``: the record of the last run (None: none). ``clock`` measures durations (monotonic:
        a clock step must not raise or clear a stall); ``wall`` dates the messages."""
        self.config, self.station_id, self.run_id = config, station_id, run_id
        self.last_models = last_models
        self.clock, self.wall = clock, wall
        self.started = clock()
        self._progress: dict[str, tuple[int, float]] = {}  # camera -> (frames, when they last grew)
        self._raised: dict[tuple[Check, str], HealthEvent] = {}
        self._active: tuple[HealthEvent, ...] = ()  # replaced whole after each check: other threads read it

    def check(self, cameras: Iterable[CameraSample], outbox: OutboxSample | None,
              models: ModelVersions | None) -> list[HealthEvent]:
        """One round of every rule; the transitions it found (most rounds: none). None skips a rule."""
        now = self.clock()
        out: list[HealthEvent] = []
        for cam in cameras:
            out += self._camera(cam, now)
        if outbox is not None:
            out += self._outbox(outbox, now)
        if models is not None:
            out += self._models(models, now)
        if out:
            self._active = tuple(sorted(self._raised.values(), key=lambda e: (e.since, e.check, e.subject)))
        return out

    def active(self) -> list[HealthEvent]:
        """The raised message of every check not cleared yet, oldest first (safe from any thread)."""
        return list(self._active)

    def raised_counts(self) -> dict[Check, int]:
        counts: dict[Check, int] = dict.fromkeys(RAISABLE, 0)
        for e in self._active:
            counts[e.check] += 1
        return counts

    # -------------------------------------------------------------------------------- one check each
    def _camera(self, cam: CameraSample, now: float) -> list[HealthEvent]:
        frames, last = self._progress.get(cam.name, (0, self.started))
        if cam.frames != frames:
            frames, last = cam.frames, now
        self._progress[cam.name] = (frames, last)
        ended = cam.done and not cam.live and cam.error is None
        idle = now - last
        key: tuple[Check, str] = ("camera_stalled", cam.name)
        if not ended and idle >= self.config.camera_stall_s and key not in self._raised:
            what = f"no frame for {idle:.0f} s" if frames else f"no frame since the kiosk started {idle:.0f} s ago"
            if cam.done:
                what += ": the camera stopped and is not restarted (restart the kiosk once its source is fixed)"
            why = f"; last error: {cam.error}" if cam.error else ""
            return [self._raise(key, "critical", now - idle, f"camera {cam.name}: {what}{why}", now)]
        if key in self._raised and (ended or idle < self.config.camera_stall_s):
            how = "its source ended normally" if ended else "frames again"
            return [self._clear(key, f"camera {cam.name}: {how}")]
        return []

    def _outbox(self, ob: OutboxSample, now: float) -> list[HealthEvent]:
        c = self.config
        depth_limit = c.outbox_warn_share * ob.max_messages
        age = ob.oldest_age_s
        key: tuple[Check, str] = ("outbox_filling", "outbox")
        if key not in self._raised:
            if ob.depth < depth_limit and (age is None or age < c.outbox_warn_age_s):
                return []
            since = now - (age or 0.0)
            oldest = f", the oldest {age:.0f} s old" if age is not None else ""
            detail = (f"outbox: {ob.depth} message(s) waiting{oldest} (bound {ob.max_messages}: beyond it the "
                      "oldest alerts are dropped); the broker is not taking them")
            return [self._raise(key, "warning", since, detail, now)]
        if ob.depth < CLEAR_AT * depth_limit and (age is None or age < CLEAR_AT * c.outbox_warn_age_s):
            return [self._clear(key, f"outbox: drained to {ob.depth} message(s)")]
        return []

    def _models(self, models: ModelVersions, now: float) -> list[HealthEvent]:
        last, self.last_models = self.last_models, models
        if last is None or last == models:
            return []  # the first start records; a plain restart says nothing
        out: list[HealthEvent] = []
        if models.current != last.current:
            out.append(self._notice("model", f"current model {last.current} → {models.current}: it decides, and "
                                    "events now carry its model_version", now))
        if models.shadow != last.shadow:
            if last.shadow is None:
                what = f"shadow model {models.shadow} installed: it classifies beside the current model, never decides"
            elif models.shadow is None:
                what = f"shadow model {last.shadow} removed"
            else:
                what = f"shadow model {last.shadow} → {models.shadow}"
            out.append(self._notice("shadow", what, now))
        return out

    # -------------------------------------------------------------------------------- transitions
    def _event(self, check: Check, subject: str, state: State, severity: Severity, since: float, detail: str,
               now: float) -> HealthEvent:
        wall = self.wall()
        return HealthEvent(health_id=str(uuid.uuid4()), station_id=self.station_id, run_id=self.run_id,
                           check=check, subject=subject, state=state, severity=severity,
                           since=iso_utc(wall - (now - since)), time=iso_utc(wall), detail=detail)

    def _raise(self, key: tuple[Check, str], severity: Severity, since: float, detail: str,
               now: float) -> HealthEvent:
        event = self._event(key[0], key[1], "raised", severity, since, detail, now)
        self._raised[key] = event
        return event

    def _clear(self, key: tuple[Check, str], detail: str) -> HealthEvent:
        raised = self._raised.pop(key)
        wall = self.wall()
        return HealthEvent(health_id=str(uuid.uuid4()), station_id=self.station_id, run_id=self.run_id,
                           check=raised.check, subject=raised.subject, state="cleared", severity=raised.severity,
                           since=raised.since, time=iso_utc(wall), detail=detail)

    def _notice(self, subject: str, detail: str, now: float) -> HealthEvent:
        return self._event("model_changed", subject, "notice", "warning", now, detail, now)


# ------------------------------------------------------------------------------------ the I/O
class HealthReporter:
    """Runs the monitor for the daemon: transitions to the outbox, the retained snapshot, the metrics, the
    model record. :meth:`tick` may raise (a bug, a broken disk): the daemon catches and logs it."""

    def __init__(self, monitor: HealthMonitor, *, outbox: Outbox, topic: str, publisher: MqttPublisher | None,
                 metrics: KioskMetrics | None, record_path: Path, snapshot_every_s: float = 30.0) -> None:
        self.monitor, self.outbox, self.topic, self.publisher = monitor, outbox, topic, publisher
        self.metrics, self.record_path, self.snapshot_every_s = metrics, record_path, snapshot_every_s
        self._recorded = monitor.last_models
        self._snapshot_due = True  # a new run replaces the last run's retained snapshot
        self._next_snapshot = 0.0
        self.not_queued = 0  # health messages left out because the outbox was at its bound or unwritable

    def tick(self, cameras: Mapping[str, CameraState], models: ModelVersions | None) -> list[HealthEvent]:
        samples = [CameraSample.of(n, c) for n, c in cameras.items()]
        events = self.monitor.check(samples, OutboxSample.of(self.outbox), models)
        for e in events:
            self._send(e)
        if events:
            self._snapshot_due = True
        if self.metrics is not None:
            self.metrics.set_health_raised(self.monitor.raised_counts())
        if self.monitor.last_models is not None and self.monitor.last_models != self._recorded:
            try:  # after the notice is in the outbox: a crash in between repeats it rather than loses it
                save_model_record(self.record_path, self.monitor.last_models)
                self._recorded = self.monitor.last_models
            except OSError as e:
                log.error("model record %s not written (%s): the next start may repeat a model_changed notice",
                          self.record_path, e)
                self._recorded = self.monitor.last_models  # tried once; not every second
        self._publish_snapshot()
        return events

    def snapshot(self) -> HealthSnapshot:
        m = self.monitor
        return HealthSnapshot(station_id=m.station_id, run_id=m.run_id, time=iso_utc(m.wall()), raised=m.active())

    def raised(self) -> list[RaisedCheck]:
        return [RaisedCheck(check=e.check, subject=e.subject, severity=e.severity, since=e.since, detail=e.detail)
                for e in self.monitor.active()]

    def _send(self, e: HealthEvent) -> None:
        level = logging.WARNING if e.state == "raised" else logging.INFO
        log.log(level, "health %s %s %s: %s", e.check, e.subject, e.state, e.detail)
        try:
            if self.outbox.depth() >= self.outbox.max_messages:
                # one more row would push the oldest alert out of the bound: the alert matters more
                self.not_queued += 1
                log.error("health %s %s %s not queued: the outbox is at its bound (%d)", e.check, e.subject,
                          e.state, self.outbox.max_messages)
                return
            self.outbox.put(self.topic, e.wire(), qos=1, retain=False)
        except (sqlite3.Error, OSError) as err:
            self.not_queued += 1
            log.error("health %s %s %s not queued: cannot write the outbox (%s)", e.check, e.subject, e.state, err)
            return
        if self.publisher is not None:
            self.publisher.wake()

    def _publish_snapshot(self) -> None:
        if self.publisher is None:
            return
        now = time.monotonic()
        if not self._snapshot_due and now < self._next_snapshot:
            return
        if self.publisher.publish_status("health/active", self.snapshot().payload()):
            self._snapshot_due = False
            self._next_snapshot = now + self.snapshot_every_s
