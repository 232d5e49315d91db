"""One MQTT message → one typed thing the store understands: an event, an availability, a status, a health
message, a staff action, or a reject.

Pure (no I/O, no clock), so every rule is tested without a broker:

- The topic says which station sent it (``<root>/<station>/events|availability|status``); the broker's ACL
  lets a kiosk publish only under its own station, so the topic is the authenticated part. An event whose
  payload names another station is rejected (``station mismatch``): otherwise one compromised kiosk could
  raise alerts in another's name.
- An event must be a valid ``Event`` (``docs/schema/event-v2.json``). Version-1 payloads (a kiosk left on
  ``events.schema_version: 1``) are rejected with that reason: the console reads version 2 only, and the
  rejection is counted, logged and kept (``rejected`` table, payload included) so it can be replayed once
  understood, never silently dropped.
- Availability is ``online`` / ``offline`` (the kiosk's last will says ``offline``); status is the kiosk's
  ``KioskStatus``. Anything else is rejected the same way.
- Staff actions (``mpox_aism.kiosk.actions``, ``docs/schema/action-v1.json``): ``<root>/<station>/actions`` is
  one action a person took on that kiosk's page — its ``station_id`` and ``origin`` must both be the topic's
  station (a kiosk speaks only for its own page); ``<root>/<station>/acks/<event_id>`` is an event's whole
  history as a console published it (retained), checked like the kiosk checks it; an empty one is a console
  clearing the topic after its retention horizon (:class:`HistoryIn` with ``history=None``).
- Health (``mpox_aism.kiosk.health``, ``docs/schema/health-v1.json``): ``<root>/<station>/health`` is one
  transition (a valid ``HealthEvent``), ``<root>/<station>/health/active`` the retained ``HealthSnapshot`` of
  what is raised now. The kiosk's own models, so both ends read one contract. Their ``station_id`` (the
  snapshot's and every raised message in it) must be the topic's, as for events; their ``time`` must be
  readable, because the store orders a check's messages by it; a ``model_changed`` must be a ``notice`` and
  the other checks ``raised``/``cleared`` (the schema's rule, which the model alone does not enforce).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from enum import StrEnum

from pydantic import ValidationError

from mpox_aism.kiosk.acks import ACKS, parse_history
from mpox_aism.kiosk.actions import Action, ActionHistory
from mpox_aism.kiosk.events import SCHEMA_V1, Event
from mpox_aism.kiosk.health import HealthEvent, HealthSnapshot
from mpox_aism.kiosk.status import KioskStatus


class Kind(StrEnum):
    EVENTS = "events"
    AVAILABILITY = "availability"
    STATUS = "status"
    ACTIONS = "actions"  # a kiosk page's staff action
    ACKS = ACKS  # <root>/<station>/acks/<event_id>: an event's history, retained, from the consoles
    HEALTH = "health"  # one health transition (QoS 1, through the kiosk's outbox)
    HEALTH_ACTIVE = "health/active"  # what is raised now (retained, best-effort)


@dataclass(frozen=True)
class StationTopic:
    station_id: str
    kind: Kind
    event_id: str = ""  # acks only


def subscriptions(root: str) -> list[str]:
    """The wildcard topics the console subscribes to."""
    return [f"{root}/+/{k.value}" + ("/+" if k is Kind.ACKS else "") for k in Kind]


def parse_topic(root: str, topic: str) -> StationTopic | None:
    """``<root>/<station>/<kind>`` (or ``<root>/<station>/acks/<event_id>``) → its parts; None for anything else."""
    if not topic.startswith(root + "/"):
        return None
    station, _, rest = topic[len(root) + 1:].partition("/")
    if not station:
        return None
    acks, _, event_id = rest.partition("/")
    if acks == Kind.ACKS.value:
        return StationTopic(station, Kind.ACKS, event_id) if event_id and "/" not in event_id else None
    try:
        return StationTopic(station, Kind(rest))
    except ValueError:
        return None


@dataclass(frozen=True)
class EventIn:
    station_id: str
    event: Event
    event_ts: float | None  # the event's own time as epoch seconds; None if the kiosk's clock string is odd
    payload: bytes  # the wire bytes, stored unchanged


@dataclass(frozen=True)
class AvailabilityIn:
    station_id: str
    online: bool


@dataclass(frozen=True)
class StatusIn:
    station_id: str
    status: KioskStatus
    payload: bytes


@dataclass(frozen=True)
class ActionIn:
    station_id: str
    action: Action


@dataclass(frozen=True)
class HistoryIn:
    station_id: str
    event_id: str
    history: ActionHistory | None  # None: the topic was cleared


@dataclass(frozen=True)
class HealthIn:
    station_id: str
    event: HealthEvent
    time_ts: float  # the message's own time (the kiosk's clock): what orders a check's messages


@dataclass(frozen=True)
class HealthActiveIn:
    station_id: str
    snapshot: HealthSnapshot
    time_ts: float


@dataclass(frozen=True)
class Rejected:
    topic: str
    error: str
    payload: bytes


Parsed = EventIn | AvailabilityIn | StatusIn | ActionIn | HistoryIn | HealthIn | HealthActiveIn | Rejected


def iso_to_epoch(value: str) -> float | None:
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def _short(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(x) for x in err["loc"]) or "(top level)"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{where}: {err['msg']}{more}"


def parse(root: str, topic: str, payload: bytes) -> Parsed:
    """Classify one message; never raises (a bad message is a :class:`Rejected` with the reason)."""
    where = parse_topic(root, topic)
    if where is None:
        return Rejected(topic, "unexpected topic", payload)
    if where.kind is Kind.AVAILABILITY:
        if payload in (b"online", b"offline"):
            return AvailabilityIn(where.station_id, payload == b"online")
        return Rejected(topic, f"availability must be online or offline, got {payload[:40]!r}", payload)
    if where.kind is Kind.STATUS:
        try:
            return StatusIn(where.station_id, KioskStatus.model_validate_json(payload), payload)
        except ValidationError as e:
            return Rejected(topic, f"not a kiosk status: {_short(e)}", payload)
    if where.kind is Kind.ACKS:
        try:
            return HistoryIn(where.station_id, where.event_id, parse_history(where.station_id, where.event_id, payload))
        except ValueError as e:
            return Rejected(topic, str(e), payload)
    if where.kind is Kind.ACTIONS:
        return _action(topic, where.station_id, payload)
    if where.kind is Kind.HEALTH:
        return _health(topic, where.station_id, payload)
    if where.kind is Kind.HEALTH_ACTIVE:
        return _health_active(topic, where.station_id, payload)
    try:
        event = Event.model_validate_json(payload)
    except ValidationError as e:
        return Rejected(topic, _event_error(payload, e), payload)
    if event.station_id != where.station_id:
        return Rejected(topic, f"station mismatch: the topic says {where.station_id!r}, the event says "
                               f"{event.station_id!r}", payload)
    return EventIn(where.station_id, event, iso_to_epoch(event.time), payload)


def _event_error(payload: bytes, e: ValidationError) -> str:
    try:
        schema = json.loads(payload).get("schema")
    except (ValueError, AttributeError):
        schema = None
    if schema == SCHEMA_V1:
        return "event schema version 1: the console reads version 2 (set events.schema_version: 2 on the kiosk)"
    return f"not a valid event: {_short(e)}"


def _action(topic: str, station_id: str, payload: bytes) -> ActionIn | Rejected:
    try:
        action = Action.model_validate_json(payload)
    except ValidationError as e:
        return Rejected(topic, f"not a staff action: {_short(e)}", payload)
    if action.station_id != station_id or action.origin != station_id:
        return Rejected(topic, f"station mismatch: the topic says {station_id!r}, the action says station "
                               f"{action.station_id!r}, origin {action.origin!r}", payload)
    return ActionIn(station_id, action)


def _health_error(station_id: str, e: HealthEvent) -> str | None:
    """What is wrong with one health message from ``station_id``'s topic; None: nothing."""
    if e.station_id != station_id:
        return f"station mismatch: the topic says {station_id!r}, the health message says {e.station_id!r}"
    if (e.check == "model_changed") != (e.state == "notice"):
        return f"{e.check} cannot be {e.state!r} (model_changed is a notice, the other checks raised/cleared)"
    if iso_to_epoch(e.time) is None:
        return f"unreadable time {e.time[:40]!r}"
    return None


def _health(topic: str, station_id: str, payload: bytes) -> HealthIn | Rejected:
    try:
        event = HealthEvent.model_validate_json(payload)
    except ValidationError as e:
        return Rejected(topic, f"not a health event: {_short(e)}", payload)
    error = _health_error(station_id, event)
    if error is not None:
        return Rejected(topic, error, payload)
    return HealthIn(station_id, event, iso_to_epoch(event.time) or 0.0)


def _health_active(topic: str, station_id: str, payload: bytes) -> HealthActiveIn | Rejected:
    try:
        snap = HealthSnapshot.model_validate_json(payload)
    except ValidationError as e:
        return Rejected(topic, f"not a health snapshot: {_short(e)}", payload)
    ts = iso_to_epoch(snap.time)
    if snap.station_id != station_id:
        return Rejected(topic, f"station mismatch: the topic says {station_id!r}, the snapshot says "
                               f"{snap.station_id!r}", payload)
    if ts is None:
        return Rejected(topic, f"unreadable time {snap.time[:40]!r}", payload)
    for e in snap.raised:
        error = _health_error(station_id, e) or (None if e.state == "raised" else f"{e.state!r} in a snapshot of "
                                                                                   "raised checks")
        if error is not None:
            return Rejected(topic, f"raised {e.check} {e.subject!r}: {error}", payload)
    return HealthActiveIn(station_id, snap, ts)
