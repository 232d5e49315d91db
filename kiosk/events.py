"""Decision → event payload (schema ``docs/schema/event-v1.json``), with the privacy rules applied.

``event_id`` is a uuid5 of (station, camera, run id, track id, state, first frame): the same
decision always gets the same id, and the id is stored with the payload in the outbox, so a
re-publish after a reconnect or a crash carries the same id and the consumer can de-duplicate.
Images: the lesion crop and its Grad-CAM overlay are attached (JPEG, base64, at most
``crop_max_px``) only for hand / close-range crops — a face crop is a full face, attached only when
``privacy.allow_full_face`` says so; and the daemon withholds any crop in which a face detector finds a
face (``kiosk.privacy.FaceGuard``), whatever region it came from.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid

import cv2
import numpy as np

from kiosk.config import PrivacyConfig
from pipeline.decider import Decision

SCHEMA = "mpox-aism/event@1"
NAMESPACE = uuid.UUID("6f1d2b1e-8c55-4c1e-9d7a-2f0a4b6c9e11")


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def jpeg_b64(rgb: np.ndarray, max_px: int, quality: int = 85) -> str:
    h, w = rgb.shape[:2]
    scale = max_px / max(h, w)
    if scale < 1:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return base64.b64encode(buf.tobytes()).decode()


def images_allowed(d: Decision, privacy: PrivacyConfig) -> bool:
    return privacy.publish_crops and (privacy.allow_full_face or d.best_kind != "face")


def build_event(d: Decision, *, station_id: str, camera: str, run_id: str, model_version: str,
                privacy: PrivacyConfig, gradcam: np.ndarray | None = None,
                attach_images: bool | None = None) -> dict:
    """``attach_images``: the caller's final word (after its face check); None = the policy alone."""
    event_id = uuid.uuid5(NAMESPACE, f"{station_id}|{camera}|{run_id}|{d.track_id}|{d.state}|{d.first_frame}")
    event = {
        "schema": SCHEMA,
        "event_id": str(event_id),
        "station_id": station_id,
        "camera": camera,
        "track_id": d.track_id,
        "decision": d.state,
        "label": d.label,
        "probability": round(d.probability, 4),
        "probabilities": {k: round(v, 4) for k, v in d.probabilities.items()},
        "region_kinds": list(d.region_kinds),
        "n_crops": d.n_crops,
        "model_version": model_version,
        "time": _iso(dt.datetime.now(dt.UTC).timestamp()),
        "frame_time": {"first": _iso(d.first_timestamp), "last": _iso(d.last_timestamp)},
        "final": d.final,
        "research_use_only": True,
    }
    if images_allowed(d, privacy) if attach_images is None else attach_images:
        event["crop_jpeg_base64"] = jpeg_b64(d.best_crop, privacy.crop_max_px)
        if gradcam is not None:
            event["gradcam_jpeg_base64"] = jpeg_b64(gradcam, privacy.crop_max_px)
    return event
