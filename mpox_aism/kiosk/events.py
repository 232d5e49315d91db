"""Decision → ``Event`` (schema ``docs/schema/event-v2.json``).

``Event`` is the schema as a type: every field of ``event-v2.json``, nothing else (a test holds
the two together), and :meth:`Event.wire` is the one JSON encoding of an event — the outbox stores
those bytes and MQTT sends them unchanged.

Version 2 adds the state ``other_condition``, the ``reason`` of every review and ``unfamiliar_crops``.
A consumer written for version 1 reads the ``schema`` field and is told by it; one that cannot be
updated yet keeps working with ``events.schema_version: 1`` in the kiosk's config: the same events
in the version-1 form (``event-v1.json``), without the new fields — and without ``other_condition``
events, which version 1 cannot express (the config refuses the combination, so none is lost silently).

``event_id`` is a uuid5 of (station, camera, run id, track id, state, first frame): the same
decision always gets the same id, and the id is stored with the payload in the outbox, so a
re-publish after a reconnect or a crash carries the same id and the consumer can de-duplicate.
Images: the lesion crop and its Grad-CAM overlay (JPEG, base64, at most ``crop_max_px``) are attached
when the caller says so; whether they may leave the box is ``mpox_aism.kiosk.privacy.ImagePolicy``'s
rule, decided once, by the sink.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mpox_aism.contracts.decision import ReviewReason
from mpox_aism.contracts.preprocess import fit_within
from mpox_aism.pipeline.decider import Decision
from mpox_aism.pipeline.regions import RegionKind

SCHEMA = "mpox-aism/event@2"
SCHEMA_V1 = "mpox-aism/event@1"
SchemaVersion = Literal[1, 2]
PublishedState = Literal["other_condition", "review", "suspected"]  # ``clear`` never leaves the box
V2_ONLY_FIELDS = frozenset({"reason", "unfamiliar_crops"})
NAMESPACE = uuid.UUID("6f1d2b1e-8c55-4c1e-9d7a-2f0a4b6c9e11")


class FrameTime(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    first: str = Field(description="Capture time of the first frame that contributed (ISO 8601, UTC).")
    last: str = Field(description="Capture time of the last frame that contributed.")


class Event(BaseModel):
    """One suspected / review / other_condition decision as it leaves the box (QoS 1 on ``<topic_prefix>/events``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_: Literal["mpox-aism/event@2"] = Field(SCHEMA, alias="schema", description="Payload version.")
    event_id: str = Field(description="Stable per decision: the de-duplication key.")
    station_id: str
    camera: str
    track_id: int = Field(ge=1, description="Per camera and run; one person (or one close-up).")
    decision: PublishedState
    reason: ReviewReason | None = Field(None, description="Why a review; present on reviews only.")
    label: str
    probability: float = Field(ge=0, le=1)
    probabilities: dict[str, float]
    region_kinds: list[RegionKind]
    n_crops: int = Field(ge=1)
    unfamiliar_crops: int = Field(ge=0, description="Window crops the familiarity score found unfamiliar.")
    model_version: str
    time: str = Field(description="When the event was made.")
    frame_time: FrameTime
    final: bool = Field(description="Emitted when the track ended (else when it first had enough crops or "
                                    "changed state).")
    research_use_only: Literal[True] = True
    crop_jpeg_base64: str | None = Field(None, description="Lesion crop; never a face unless "
                                                           "privacy.allow_full_face.")
    gradcam_jpeg_base64: str | None = Field(None, description="Grad-CAM overlay of the crop; same privacy rule.")

    @model_validator(mode="after")
    def _reason_iff_review(self) -> Event:
        if (self.decision == "review") != (self.reason is not None):
            raise ValueError("a review event needs a reason, and only a review has one")
        return self

    def payload(self, schema_version: SchemaVersion = 2) -> dict[str, Any]:
        """The JSON object of the schema (absent images are absent, not null); version 1 on request."""
        body = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        if schema_version == 1:
            if self.decision not in ("review", "suspected"):
                raise ValueError(f"event-v1 cannot express the state {self.decision!r}")
            body = {k: v for k, v in body.items() if k not in V2_ONLY_FIELDS} | {"schema": SCHEMA_V1}
        return body

    def wire(self, schema_version: SchemaVersion = 2) -> bytes:
        """The one wire form: compact UTF-8 JSON of :meth:`payload`."""
        return json.dumps(self.payload(schema_version), separators=(",", ":"), ensure_ascii=False).encode()


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def jpeg_b64(rgb: np.ndarray, max_px: int, quality: int = 85) -> str:
    bgr = cv2.cvtColor(fit_within(rgb, max_px), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return base64.b64encode(buf.tobytes()).decode()


def build_event(d: Decision, *, station_id: str, camera: str, run_id: str, model_version: str,
                attach_images: bool, crop_max_px: int, gradcam: np.ndarray | None = None) -> Event:
    """``attach_images``: the image policy's verdict (``kiosk.privacy``); images at most ``crop_max_px``."""
    if d.state == "clear":
        raise ValueError("a clear decision is not an event")
    event_id = uuid.uuid5(NAMESPACE, f"{station_id}|{camera}|{run_id}|{d.track_id}|{d.state}|{d.first_frame}")
    attach = attach_images
    return Event(
        event_id=str(event_id), station_id=station_id, camera=camera, track_id=d.track_id, decision=d.state,
        reason=d.reason, label=d.label, probability=round(d.probability, 4),
        probabilities={k: round(v, 4) for k, v in d.probabilities.items()},
        region_kinds=list(d.region_kinds), n_crops=d.n_crops, unfamiliar_crops=d.unfamiliar,
        model_version=model_version,
        time=_iso(dt.datetime.now(dt.UTC).timestamp()),
        frame_time=FrameTime(first=_iso(d.first_timestamp), last=_iso(d.last_timestamp)), final=d.final,
        crop_jpeg_base64=jpeg_b64(d.best_crop, crop_max_px) if attach else None,
        gradcam_jpeg_base64=jpeg_b64(gradcam, crop_max_px) if attach and gradcam is not None else None)
