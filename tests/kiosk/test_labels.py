"""The label store (crops kept on the box, labels with history, retention) and the sink keeping crops."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from mpox_aism.contracts.labels import LABELS
from mpox_aism.kiosk.config import ConfigError, load_config, parse_config
from mpox_aism.kiosk.labels import (
    LABEL_CHOICES,
    UNUSABLE,
    CropGone,
    CropRecord,
    LabelStore,
    UnknownLabel,
)
from mpox_aism.kiosk.metrics import KioskMetrics
from mpox_aism.kiosk.outbox import Outbox
from mpox_aism.kiosk.sink import EventSink
from tests.conftest import REPO
from tests.kiosk.test_events import _decision

DAY = 24 * 3600.0


class Clock:
    """Wall-clock seconds the test moves by hand."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def crop_record(event_id: str, created: float, *, kind: str = "hand", track_id: int = 4,
                face_seen: bool | None = None) -> CropRecord:
    return CropRecord(event_id=event_id, station_id="gate-7", camera="entrance", run_id="run1", track_id=track_id,
                      kind=kind, model_version="m1", created=iso(created), face_seen=face_seen)


def noise(h: int = 180, w: int = 140, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> LabelStore:
    return LabelStore(tmp_path / "labels.sqlite3", retention_days=30, clock=clock)


def test_a_kept_crop_is_the_full_crop_at_jpeg_quality_95(store: LabelStore, clock: Clock) -> None:
    rgb = cv2.GaussianBlur(noise(301, 207), (0, 0), 3)  # smooth, like skin: JPEG keeps it close
    store.put(crop_record("ev-1", clock.t), rgb)
    back = cv2.cvtColor(cv2.imdecode(np.frombuffer(store.image("ev-1") or b"", np.uint8), cv2.IMREAD_COLOR),
                        cv2.COLOR_BGR2RGB)
    assert back.shape == rgb.shape  # full resolution, not the event's 256 px
    assert np.abs(back.astype(int) - rgb).mean() < 2.0  # quality 95, colour order kept
    assert store.crop("ev-1") == crop_record("ev-1", clock.t)
    assert store.crop("ev-1").group == "gate-7:entrance:run1:4"  # type: ignore[union-attr]
    store.put(crop_record("ev-1", clock.t, kind="face"), noise(seed=1))  # the same event again: the first stays
    assert store.crop("ev-1").kind == "hand" and store.count() == 1  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="RGB uint8"):
        store.put(crop_record("ev-bad", clock.t), np.zeros((0, 10, 3), np.uint8))
    assert store.crop("ev-bad") is None


def test_labels_latest_counts_history_is_kept(store: LabelStore, clock: Clock) -> None:
    for i in range(3):
        store.put(crop_record(f"ev-{i}", clock.t), noise(seed=i))
    first = store.label("ev-0", "measles", "officer.a")
    clock.t += 60
    second = store.label("ev-0", "mpox", "officer.b")
    store.label("ev-1", UNUSABLE, "officer.a")
    assert second.time > first.time
    assert store.latest(["ev-0", "ev-1", "ev-2", "nope"]) == {"ev-0": second,
                                                              "ev-1": store.history("ev-1")[0]}
    assert [(r.label, r.by) for r in store.history("ev-0")] == [("measles", "officer.a"), ("mpox", "officer.b")]
    labeled = {x.crop.event_id: x.label.label for x in store.labeled()}
    assert labeled == {"ev-0": "mpox", "ev-1": UNUSABLE}  # ev-2 has no label
    assert (*LABELS, "unusable") == LABEL_CHOICES
    with pytest.raises(UnknownLabel, match=r"smallpox.*mpox, chickenpox.*normal, unusable"):
        store.label("ev-0", "smallpox", "officer.a")
    with pytest.raises(CropGone, match="retention"):
        store.label("never-kept", "mpox", "officer.a")
    assert store.history("never-kept") == [] and not store.known("never-kept") and store.known("ev-2")
    with sqlite3.connect(store.path) as con, pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE labels SET label = 'normal'")  # history cannot be rewritten


def test_expired_crops_are_refused_at_once_and_purged_bytes_and_all(store: LabelStore, clock: Clock) -> None:
    store.put(crop_record("old", clock.t - 29 * DAY), noise(seed=1))
    store.put(crop_record("old-unlabeled-5f3a9c", clock.t - 29.5 * DAY), noise(seed=3))
    store.put(crop_record("new", clock.t), noise(seed=2))
    store.label("old", "eczema", "officer.a")
    old_jpeg = store.image("old")
    assert old_jpeg and store.kept(["old", "new"]) == {"old", "new"}

    clock.t += 2 * DAY  # "old" is 31 days old now, not yet purged: already gone for labels and exports
    assert store.crop("old") is None and store.image("old") is None and store.kept(["old", "new"]) == {"new"}
    assert [x.crop.event_id for x in store.labeled()] == []
    with pytest.raises(CropGone, match="30 days"):
        store.label("old", "mpox", "officer.a")
    assert [r.label for r in store.history("old")] == ["eczema"]  # the refused label was not recorded
    assert store.count() == 3

    assert store.purge() == 2 and store.count() == 1 and store.purge() == 0
    files = b"".join(p.read_bytes() for p in store.path.parent.glob("labels.sqlite3*"))
    # its pixels (not the header every JPEG shares): overwritten, not left in free pages or the write-ahead log
    assert old_jpeg[-600:-100] not in files
    assert b"old-unlabeled-5f3a9c" not in files  # nor its record (secure_delete: a freed cell is zeroed)
    assert store.image("new") is not None
    assert [r.label for r in store.history("old")] == ["eczema"] and store.known("old")  # the label stays


# ------------------------------------------------------------------------------------------ the sink
def _sink(tmp_path: Path, crops: Any, **privacy: Any) -> tuple[EventSink, Outbox, KioskMetrics]:
    config = parse_config({"station_id": "gate-7", "cameras": [{"name": "c", "source": "0"}],
                           "privacy": {"publish_crops": False, **privacy}})
    outbox, metrics = Outbox(tmp_path / "outbox.sqlite3"), KioskMetrics()
    # images are not attached, so the explainer is never asked: none is built (no model needed)
    sink = EventSink(config, run_id="run9", model_version="m", outbox=outbox, topic="t", explainer=None,  # type: ignore[arg-type]
                     metrics=metrics, crops=crops)
    return sink, outbox, metrics


def _metric(metrics: KioskMetrics, result: str) -> float:
    return metrics.registry.get_sample_value("mpox_aism_label_crops_total", {"result": result}) or 0.0


def test_the_sink_keeps_every_events_crop_faces_too_whatever_publishing_says(tmp_path: Path) -> None:
    store = LabelStore(tmp_path / "labels.sqlite3")
    sink, outbox, metrics = _sink(tmp_path, store)
    face = sink.emit("c", _decision(kind="face"), None)
    hand = sink.emit("c", _decision(kind="hand", state="review", reason="low_confidence"), None)
    assert sink.emit("c", _decision(state="clear", label="normal"), None) is None  # no event, no crop
    assert face is not None and hand is not None
    assert face.crop_jpeg_base64 is None  # publishing is off: nothing left the box …
    kept = store.crop(face.event_id)
    assert kept == CropRecord(event_id=face.event_id, station_id="gate-7", camera="c", run_id="run9", track_id=3,
                              kind="face", model_version="m", created=face.time, face_seen=None)  # … kept anyway
    assert store.crop(hand.event_id).kind == "hand" and store.count() == 2  # type: ignore[union-attr]
    assert (sink.crops_kept, sink.crops_failed, _metric(metrics, "kept")) == (2, 0, 2.0)
    assert len(outbox.pending()) == 2


class _SeesAFace:
    def contains_face(self, rgb: np.ndarray) -> bool:
        return True


def test_the_face_checks_answer_is_kept_with_the_crop(tmp_path: Path) -> None:
    store = LabelStore(tmp_path / "labels.sqlite3")
    sink, _, _ = _sink(tmp_path, store, publish_crops=True)
    event = sink.emit("c", _decision(kind="hand"), _SeesAFace())  # type: ignore[arg-type]
    assert event is not None and event.crop_jpeg_base64 is None
    kept = store.crop(event.event_id)
    assert kept is not None and kept.face_seen is True and kept.shows_face


def test_a_crop_that_cannot_be_kept_never_stops_or_loses_the_event(tmp_path: Path, caplog) -> None:
    store = LabelStore(tmp_path / "state" / "labels.sqlite3")
    sink, outbox, metrics = _sink(tmp_path, store)
    for p in store.path.parent.glob("labels.sqlite3*"):
        p.unlink()
    store.path.mkdir()  # a real failure: SQLite cannot open a folder as its file
    first = sink.emit("c", _decision(), None)
    bad = _decision(kind="hand", state="review", reason="too_few_crops")
    bad.best_crop = np.zeros((0, 0, 3), np.uint8)  # and a crop that cannot be encoded
    second = sink.emit("c", bad, None)
    assert first is not None and second is not None
    assert [json.loads(m.payload)["event_id"] for m in outbox.pending()] == [first.event_id, second.event_id]
    assert [e.event_id for e in sink.recent()] == [first.event_id, second.event_id]
    assert (sink.crops_kept, sink.crops_failed, _metric(metrics, "failed")) == (0, 2, 2.0)
    assert "not kept for labels" in caplog.text


def test_no_store_no_crops(tmp_path: Path) -> None:
    sink, outbox, _ = _sink(tmp_path, None)
    assert sink.emit("c", _decision(), None) is not None and len(outbox.pending()) == 1
    assert (sink.crops_kept, sink.crops_failed) == (0, 0)


# ------------------------------------------------------------------------------ config and the daemon
def test_labels_config_defaults_bounds_and_unknown_keys() -> None:
    base = {"station_id": "s", "cameras": [{"name": "c", "source": "0"}]}
    cfg = parse_config(base)
    assert cfg.labels.enabled is True and cfg.labels.crop_retention_days == 30
    short = parse_config({**base, "labels": {"enabled": False, "crop_retention_days": 7}})
    assert short.labels.crop_retention_days == 7 and short.labels.enabled is False
    with pytest.raises(ConfigError, match=r"labels\.keep_forever"):
        parse_config({**base, "labels": {"keep_forever": True}})
    with pytest.raises(ConfigError, match=r"labels\.crop_retention_days"):
        parse_config({**base, "labels": {"crop_retention_days": 0}})
    for name, f in type(cfg.labels).model_fields.items():
        assert f.description, name
    example = load_config(REPO / "configs" / "kiosk.yaml")
    assert example.labels == type(cfg.labels)()  # the example shows the defaults, every key


def test_the_daemon_purges_expired_crops_at_start_up(tmp_path: Path, monkeypatch) -> None:
    from mpox_aism.kiosk.daemon import Daemon

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    store = LabelStore(tmp_path / "labels.sqlite3", retention_days=30)
    store.put(crop_record("ancient", time.time() - 8 * DAY), noise())
    store.put(crop_record("fresh", time.time()), noise())
    cfg = parse_config({"station_id": "s", "cameras": [{"name": "c", "source": "0"}],
                        "labels": {"crop_retention_days": 7}})
    daemon = Daemon(cfg)
    opened = daemon._label_store()
    assert opened is not None and opened.retention_days == 7
    assert store.count() == 1 and store.crop("fresh") is not None
    assert daemon.metrics.registry.get_sample_value("mpox_aism_label_crops_expired_total") == 1.0
