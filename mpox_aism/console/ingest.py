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
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from enum import StrEnum

from pydantic import ValidationError

from mpox_aism.kiosk.events import SCHEMA_V1, Event
from mpox_aism.kiosk.status import KioskStatus


class Kind(StrEnum):
    EVENTS = "events"
    AVAILABILITY = "availability"
    STATUS = "status"


@dataclass(frozen=True)
class StationTopic:
    station_id: str
    kind: Kind


def subscriptions(root: str) -> list[str]:
    """The three wildcard topics the console subscribes to."""
    return [f"{root}/+/{k.value}" for k in Kind]


def parse_topic(root: str, topic: str) -> StationTopic | None:
    """``<root>/<station>/<kind>`` → its parts; None for anything else."""
    if not topic.startswith(root + "/"):
        return None
    parts = topic[len(root) + 1:].split("/")
    if len(parts) != 2 or not parts[0]:
        return None
    try:
        return StationTopic(parts[0], Kind(parts[1]))
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
class Rejected:
    topic: str
    error: str
    payload: bytes


Parsed = EventIn | AvailabilityIn | StatusIn | Rejected


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
