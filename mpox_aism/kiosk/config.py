"""Kiosk configuration: one pydantic model per concern, unknown keys are errors, every field described.

Secrets never live in the file: the MQTT password and the API token are read from environment
variables or from systemd credentials (``$CREDENTIALS_DIRECTORY/<name>``), see ``secret()``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mpox_aism.pipeline.crops import ImageMeasures
from mpox_aism.pipeline.decider import DecisionConfig
from mpox_aism.pipeline.pipeline import CLASSIFY_STRIDE, DETECT_STRIDE


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraConfig(_Model):
    name: str = Field(description="Camera name, used in events, topics and metrics.", pattern=r"^[A-Za-z0-9_.-]+$")
    source: str = Field(description="Video file, image folder, rtsp:// URL, or a camera index / /dev/videoN.")
    hold_frames: int = Field(15, ge=1, description="Image-folder sources: frames each photo is held for.")
    loop: bool = Field(False, description="File sources: start again at the end instead of finishing.")
    close_range: bool = Field(False, description="The camera always shows skin close to the lens (PC terminal): "
                              "classify the frame centre instead of face/hand regions.")
    detect_stride: int = Field(DETECT_STRIDE, ge=1, description="Run face/hand detection on every Nth frame.")
    classify_stride: int = Field(CLASSIFY_STRIDE, ge=1, description="Classify each track at most every Nth frame.")
    min_fps: float = Field(10.0, ge=0, description="Under load: a camera processed slower than this (a live one that "
                           "also drops frames) detects and classifies on fewer frames — both strides stretched one "
                           "step at a time up to max_stride_scale × — and steps back at 1.5 × this rate "
                           "(mpox_aism.pipeline.load; shown as mpox_aism_stride_scale). 0: never stretch.")
    max_stride_scale: int = Field(2, ge=1, le=4, description="The most both strides are stretched under load: 2 "
                                  "keeps detection at least every 4th frame and a track's min_crops within ~2 s at "
                                  "min_fps with the default strides. 1: never stretch.")


class DetectorConfig(_Model):
    min_face_score: float = Field(0.5, ge=0, le=1, description="Minimum face detection score.")
    min_hand_score: float = Field(0.5, ge=0, le=1, description="Minimum hand detection/presence score.")
    max_hands: int = Field(4, ge=0, le=8, description="Hands per frame; 0 turns hand detection off.")
    face_model: Literal["short_range", "full_range"] = Field(
        "short_range", description="short_range for people within ~2 m, full_range for further away.")


class ClassifierConfig(_Model):
    model: str | None = Field(None, description="Model directory (default: the shipped models/default).")
    backend: Literal["auto", "onnxruntime", "onnxruntime-int8", "torch", "tensorrt"] = Field(
        "auto", description="auto = onnxruntime when the model has model.onnx, else torch. onnxruntime-int8 runs "
        "model.int8.onnx (made by `mpox-aism export int8`), a CPU option: see docs/RESULTS.md for its cost in "
        "quality and its speed before choosing it.")
    device: str = Field("cpu", description="torch backend device: cpu or cuda[:N].")
    precision: Literal["fp32", "fp16", "bf16"] = Field("fp32", description="torch backend precision.")
    batch_wait_ms: float = Field(10.0, ge=0, le=100, description="How long the process's one inference worker "
                                 "waits for other cameras' crops to join a batch (only while another camera that "
                                 "asked in the last second has not yet): larger batches cost less per crop, a "
                                 "lone camera never waits. 0: never wait.")


class TlsConfig(_Model):
    ca_certs: str | None = Field(None, description="CA bundle that signed the broker's certificate.")
    certfile: str | None = Field(None, description="Client certificate (mutual TLS).")
    keyfile: str | None = Field(None, description="Client key (mutual TLS).")
    require: bool = Field(True, description="Refuse to start without a CA: never fall back to plaintext.")


class MqttConfig(_Model):
    url: str | None = Field(None, description="mqtt://host:port or mqtts://host:port; unset = events wait in "
                            "the outbox until a broker is configured.")
    topic_prefix: str = Field("mpox-aism/{station_id}", description="Topic prefix; {station_id} is filled in.")
    client_id: str | None = Field(None, description="MQTT client id (default mpox-aism-<station_id>); unique "
                                  "per kiosk.")
    username: str | None = Field(None, description="MQTT user name.")
    password_env: str = Field("MPOX_AISM_MQTT_PASSWORD", description="Environment variable holding the "
                              "password; the systemd credential 'mqtt-password' is used when present.")
    tls: TlsConfig | None = Field(None, description="TLS settings; required for mqtts://.")
    status_interval_s: float = Field(30.0, gt=0, description="Seconds between retained status messages.")
    keepalive_s: int = Field(30, ge=2, le=3600, description="MQTT keepalive: a broker that goes silent without "
                             "closing the connection (frozen, network partition) is noticed after ~1.5× this.")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        u = urlparse(v)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise ValueError(f"expected mqtt://host:port or mqtts://host:port, got {v!r}")
        return v

    @model_validator(mode="after")
    def _tls_for_mqtts(self) -> MqttConfig:
        if self.url and urlparse(self.url).scheme == "mqtts" and self.tls is None:
            raise ValueError("mqtts:// needs a tls: section (at least ca_certs)")
        return self


class OutboxConfig(_Model):
    path: str = Field("outbox.sqlite3", description="SQLite file; relative paths live in $STATE_DIRECTORY "
                      "(systemd) or ./runs.")
    max_messages: int = Field(10_000, ge=1, description="Bound: the oldest events beyond it are dropped, counted.")
    max_age_s: float = Field(7 * 24 * 3600, gt=0, description="Bound: events older than this are dropped, counted.")
    flush_timeout_s: float = Field(10.0, ge=0, description="On exit, seconds to wait for pending events to drain.")


class SessionLimits(_Model):
    """Staff sessions and login throttling (the kiosk config's ``http.sessions``)."""

    idle_s: float = Field(1800, gt=0, description="A session ends after this long without a request.")
    max_age_s: float = Field(12 * 3600, gt=0, description="…and after this long in all (a shift).")
    max_failures: int = Field(5, ge=1, description="Wrong passwords for one name or from one address…")
    window_s: float = Field(900, gt=0, description="…within this window lock it out…")
    lockout_s: float = Field(900, gt=0, description="…for this long.")


class HttpTlsConfig(_Model):
    certfile: str = Field(description="Server certificate (PEM): the staff pages and the API over HTTPS.")
    keyfile: str = Field(description="Its private key (PEM).")


class ApiLimits(BaseModel):
    """The diagnosis API's bounds (``http.limits``), enforced by ``kiosk.web.limits``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_rps: float = Field(4.0, gt=0, description="Diagnoses per second, all clients together: the API's CPU "
                           "budget (an explained diagnosis costs ~80 ms of CPU on a 2-core box, so 4/s is ~16 % "
                           "of it, taken from the cameras; docs/RESULTS.md).")
    max_rps_per_client: float = Field(2.0, gt=0, description="Diagnoses per second from one client address.")
    burst: int = Field(2, ge=1, description="Requests one client may send at once above its rate (all clients "
                                            "together: a second's worth, at least this).")
    concurrent: int = Field(2, ge=1, description="Photos decoded and classified at once.")
    queue: int = Field(4, ge=0, description="Requests that may wait for a free slot; beyond it 503.")
    max_held: int = Field(32, ge=0, description="Refusals of clients that came back before their Retry-After, held "
                          "back at once (each keeps its connection for up to 5 s; at most 2 per client). Keep it "
                          "under http.max_connections, so the staff pages and /healthz always get through.")
    max_failed_auth: int = Field(5, ge=1, description="Wrong tokens from one client within auth_window_s "
                                                      "before it is locked out.")
    auth_window_s: float = Field(60.0, gt=0, description="Window for counting wrong tokens.")
    auth_lockout_s: float = Field(300.0, gt=0, description="How long a client that guessed too often is refused.")


class PhotoChecks(_Model):
    """What an uploaded photo must show before the model's answer counts (``kiosk.web.diagnosis``).

    The camera's crops pass the crop stage's gates before they are classified; an upload has no crop
    stage, and the model answers anything — a grey square scores as familiar as a rash. So the photo,
    as the network sees it (224 px), is measured the same way (``pipeline.crops.ImageMeasures``); one
    that fails goes to a person as ``review`` / ``unfamiliar``, with what failed. Looser than the crop
    stage's gates, because a clinician's upload is a close-up, often from a low-resolution source; a
    greyscale photo's skin share is not checked (it has no colour). The cost, measured on the dev photos,
    is in docs/RESULTS.md.
    """

    min_brightness: float = Field(35.0, ge=0, le=255, description="Mean grey level below which a photo is too dark.")
    min_sharpness: float = Field(5.0, ge=0, description="Variance of the Laplacian at 224 px below which it is too "
                                 "blurred (uniform).")
    max_sharpness: float = Field(6000.0, gt=0, description="…above which it is noise or a pattern, not skin.")
    min_skin: float = Field(0.10, ge=0, le=1, description="Share of skin-coloured pixels below which it shows too "
                            "little skin.")

    def problem(self, view: ImageMeasures) -> str | None:
        """What the photo as the network sees it fails, or None. A greyscale photo has no skin colour to
        measure: its skin share is left to the familiarity score."""
        return view.problem(min_brightness=self.min_brightness, min_sharpness=self.min_sharpness,
                            min_skin=0.0 if view.monochrome else self.min_skin, max_sharpness=self.max_sharpness)


class HttpConfig(_Model):
    enabled: bool = Field(True, description="Serve /healthz, /metrics and the diagnosis API.")
    host: str = Field("127.0.0.1", description="Listen address (0.0.0.0 for the LAN).")
    port: int = Field(8080, ge=0, lt=65536, description="Listen port (0 = any free port).")
    token_env: str = Field("MPOX_AISM_API_TOKEN", description="Environment variable (or systemd credential "
                           "'api-token') holding the diagnosis API bearer token.")
    max_upload_mb: float = Field(10.0, gt=0, description="Largest accepted upload.")
    max_connections: int = Field(64, ge=2, description="Open connections and requests in progress the server "
                                 "holds at once (uvicorn's limit_concurrency); beyond it a request is answered "
                                 "503 at once. Bounds what misbehaving clients can make the kiosk keep.")
    keep_alive_s: int = Field(2, ge=1, le=300, description="Seconds an idle keep-alive connection is kept "
                                "before it is closed: short, so idle clients do not hold max_connections.")
    nice: int = Field(10, ge=0, le=19, description="Niceness of the HTTP server's thread and of the worker threads "
                      "it starts (decoding, checking and encoding uploads; Linux): the scheduler then gives the "
                      "camera workers (nice 5) and the inference worker (0) the CPU first, whatever the API is sent; "
                      "the API's forward passes wait their turn in the inference worker beside the cameras'.")
    tls: HttpTlsConfig | None = Field(None, description="Serve HTTPS (staff cookies are then Secure). Unset: "
                                      "plain HTTP, for 127.0.0.1 or behind a TLS reverse proxy.")
    sessions: SessionLimits = Field(default_factory=SessionLimits, description="Staff log-in sessions and "
                                    "wrong-password lock-out.")
    limits: ApiLimits = Field(default_factory=ApiLimits, description="Diagnosis API load shedding: rates, queue, "
                              "wrong-token lock-out (the camera keeps its CPU).")
    photo_checks: PhotoChecks = Field(default_factory=PhotoChecks, description="What an uploaded photo must show "
                                      "(light, detail, skin) before the model's answer counts.")

    @model_validator(mode="after")
    def _held_under_connections(self) -> HttpConfig:
        if self.limits.max_held >= self.max_connections:
            raise ValueError(f"limits.max_held ({self.limits.max_held}) must be under max_connections "
                             f"({self.max_connections}): held refusals would take every connection")
        return self


class PrivacyConfig(_Model):
    publish_crops: bool = Field(True, description="Attach the lesion crop and its Grad-CAM overlay to events.")
    allow_full_face: bool = Field(False, description="Also attach crops of face regions (a full face image).")
    crop_max_px: int = Field(256, ge=32, description="Longest side of attached images.")


class EventsConfig(_Model):
    schema_version: Literal[1, 2] = Field(2, description="Event payload version on MQTT: 2 (docs/schema/"
                                          "event-v2.json) carries each review's reason and other_condition; 1 "
                                          "keeps consumers written for event-v1.json working until they move.")
    other_condition: bool = Field(True, description="Publish a confident call of a disease that is not notifiable "
                                  "(chickenpox, measles…) as an 'other_condition' event. Off: counted, not sent.")

    @model_validator(mode="after")
    def _v1_cannot_say_other_condition(self) -> EventsConfig:
        if self.schema_version == 1 and self.other_condition:
            raise ValueError("event schema version 1 has no 'other_condition' state: set other_condition: false "
                             "(those decisions are then counted, not sent) or move the consumers to version 2")
        return self


class LabelsConfig(_Model):
    """Crops kept on the box so reviewers can label them for a site head (``kiosk.labels``).

    Kept whatever ``privacy`` says about publishing (face crops too): they never leave the box by
    themselves, only through ``mpox-aism reviews export``, which leaves faces out unless told. Kept for a
    bounded time: personal images must not pile up on a checkpoint box.
    """

    enabled: bool = Field(True, description="Keep each published event's best crop on the box (full resolution, "
                          "faces too; never sent) so reviewers can label it on the staff page. Off: no new crops "
                          "are kept; those already kept still expire on time.")
    crop_retention_days: float = Field(30.0, gt=0, description="Days a kept crop may stay on the box; older ones "
                                       "cannot be labeled or exported and are deleted (at start-up and every "
                                       "minute). Labels stay in the audit trail after their crop is gone.")


class HealthConfig(_Model):
    """Health checks (``kiosk.health``): conditions staff must see, sent as health events over MQTT
    (``<topic_prefix>/health``, through the outbox) for the console's banners."""

    enabled: bool = Field(True, description="Check camera stalls, a filling outbox and model changes every second "
                          "and publish each raise, clear and notice. Off: none checked or sent.")
    camera_stall_s: float = Field(60.0, gt=0, description="A camera with no new frame for this long is raised as "
                                  "camera_stalled (counted from the daemon's start when it never had one); a file "
                                  "source that ended normally is not stalled.")
    outbox_warn_share: float = Field(0.5, gt=0, le=1, description="outbox_filling is raised when the outbox holds "
                                     "this share of outbox.max_messages, and cleared under half of it.")
    outbox_warn_age_s: float = Field(300.0, gt=0, description="…or when its oldest message is older than this "
                                     "(cleared under half of it): the broker has not taken alerts for that long.")


class LoadConfig(_Model):
    """How the cameras share the box's CPU under load (``pipeline.load``)."""

    frames_at_once: int | None = Field(None, ge=1, description="Cameras working on a frame at once; the others "
                                       "wait their turn, in arrival order, before they take their next frame: "
                                       "fresher decisions for fewer frames in all (2 on a 2-core box: p99 frame → "
                                       "decision 0.2–0.3 s instead of 0.6–0.7 s at 8 cameras, 3–14 % fewer "
                                       "frames; docs/RESULTS.md). Unset: every camera at once (the most frames).")


class KioskConfig(_Model):
    station_id: str = Field(description="This checkpoint's id; in every event and topic.", pattern=r"^[A-Za-z0-9_.-]+$")
    cameras: list[CameraConfig] = Field(min_length=1, description="Cameras served by this process.")
    detector: DetectorConfig = Field(default_factory=DetectorConfig, description="Face/hand detection.")
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig, description="The skin classifier.")
    load: LoadConfig = Field(default_factory=LoadConfig, description="Cameras sharing the CPU under load.")
    decision: DecisionConfig = Field(default_factory=DecisionConfig, description="Per-track decision rule.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="Alerts to security staff.")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="Persistent event queue.")
    http: HttpConfig = Field(default_factory=HttpConfig, description="HTTP API.")
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig, description="What images leave the box.")
    events: EventsConfig = Field(default_factory=EventsConfig, description="Which decisions become events, in "
                                 "which payload version.")
    labels: LabelsConfig = Field(default_factory=LabelsConfig, description="Crops kept on the box for staff "
                                 "labels (training data for a site head), and for how long.")
    health: HealthConfig = Field(default_factory=HealthConfig, description="Health events for the console: "
                                 "stalled cameras, a filling outbox, model changes.")
    exit_when_done: bool = Field(True, description="Exit once every (non-looping) file source has ended.")
    reference_dir: str | None = Field(None, description="A folder per class of photos the operator is licensed to "
                                      "show: the upload page and event cards show up to 3 typical ones of the "
                                      "predicted class. Unset: off.")

    @model_validator(mode="after")
    def _unique_cameras(self) -> KioskConfig:
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")
        return self


M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """The first problem of a config file, with its path (e.g. ``cameras.0.source``)."""


def format_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(x) for x in err["loc"]) or "(top level)"
    return f"{where}: {err['msg']}" + (f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else "")


def read_yaml(path: str | Path) -> object:
    """A config file's YAML, every way it can fail as one :class:`ConfigError` line naming the file."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start}): is this the config file?") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    except (ValueError, TypeError, RecursionError) as e:  # PyYAML's constructors (bad dates, deep nesting)
        raise ConfigError(f"{p}: YAML value not understood: {e}") from None


def validate(model: type[M], data: object, source: str = "config") -> M:
    """``data`` as ``model`` (the kiosk's or the console's config), its first problem as a ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{source}: {format_error(e)}") from None


def load_config(path: str | Path) -> KioskConfig:
    return parse_config(read_yaml(path), str(path))


def parse_config(data: object, source: str = "config") -> KioskConfig:
    return validate(KioskConfig, data, source)


def secret(env_name: str, credential: str) -> str | None:
    """A secret from the systemd credential directory, else from the environment, else None."""
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir and (Path(cred_dir) / credential).is_file():
        return (Path(cred_dir) / credential).read_text().strip()
    return os.environ.get(env_name) or None
