"""One MQTT message → one typed thing the store understands: an event, an availability, a status, or a reject.

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
from mpox_aism.kiosk.status import KioskStatus


class Kind(StrEnum):
    EVENTS = "events"
    AVAILABILITY = "availability"
    STATUS = "status"
    ACTIONS = "actions"  # a kiosk page's staff action
    ACKS = ACKS  # <root>/<station>/acks/<event_id>: an event's history, retained, from the consoles


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
    parts = topic[len(root) + 1:].split("/")
    if not parts[0] or len(parts) not in (2, 3):
        return None
    try:
        kind = Kind(parts[1])
    except ValueError:
        return None
    if (kind is Kind.ACKS) != (len(parts) == 3) or (len(parts) == 3 and not parts[2]):
        return None
    return StationTopic(parts[0], kind, parts[2] if len(parts) == 3 else "")


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
class Rejected:
    topic: str
    error: str
    payload: bytes


Parsed = EventIn | AvailabilityIn | StatusIn | ActionIn | HistoryIn | Rejected


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
