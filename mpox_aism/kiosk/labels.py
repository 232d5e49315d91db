"""Crops kept on the box and the labels reviewers give them: the data a site head is fitted on (issue 26).

Why: a reviewer who looks at an event knows more than the model did, and until now that knowledge was
thrown away. The event sink keeps each published event's best crop here (JPEG quality 95, the crop's
full resolution) with where it came from; a reviewer labels it on the staff page (one of the 8 classes,
or ``unusable``); ``mpox-aism reviews export`` turns the labeled crops into a training folder.

The rules, and why:

- **Kept whatever ``privacy`` says about publishing**, face crops too: this store never sends anything.
  Only the export reads it, and it leaves face crops out unless told otherwise.
- **Kept for ``labels.crop_retention_days`` only.** A crop past it counts as gone at once (it cannot be
  labeled or exported), and the daemon deletes it at start-up and once a minute (:meth:`LabelStore.purge`).
  ``secure_delete`` overwrites the deleted bytes and the write-ahead log is truncated after a purge, so
  an expired face is not left in the file's free pages.
- **No features are stored.** The site-head fitter re-extracts them from the exported JPEGs: features
  belong to one backbone (one ``model_version``), a crop serves every later one.
- **Labels are appended, never changed in place** (SQLite triggers refuse UPDATE/DELETE, as for the
  audit trail): the latest label of an event counts, the history stays. A label row outlives its crop;
  the audit trail records who labeled what as well.
- **A failed write is the caller's to log and count** (the sink does): an alert never waits on, or is
  lost to, this store.

A connection per call, as in the review store: the web threadpool, the camera threads (via the sink)
and the daemon's main loop all use it.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mpox_aism.contracts.labels import LABELS

STORE = "labels.sqlite3"  # in the kiosk's state directory, beside reviews.sqlite3 and staff.sqlite3
UNUSABLE = "unusable"  # "not skin / unusable": a reviewer's answer that is no class, never exported
LABEL_CHOICES: tuple[str, ...] = (*LABELS, UNUSABLE)
JPEG_QUALITY = 95
DAY_S = 24 * 3600

SCHEMA = """
CREATE TABLE IF NOT EXISTS crops (
    event_id TEXT PRIMARY KEY, station_id TEXT NOT NULL, camera TEXT NOT NULL, run_id TEXT NOT NULL,
    track_id INTEGER NOT NULL, kind TEXT NOT NULL, face_seen INTEGER, model_version TEXT NOT NULL,
    created TEXT NOT NULL, created_ts REAL NOT NULL, jpeg BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS crops_created ON crops (created_ts);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, label TEXT NOT NULL, by TEXT NOT NULL,
    time TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS labels_event ON labels (event_id, id);
CREATE TRIGGER IF NOT EXISTS labels_no_update BEFORE UPDATE ON labels
    BEGIN SELECT RAISE(ABORT, 'labels are append-only: record a new one'); END;
CREATE TRIGGER IF NOT EXISTS labels_no_delete BEFORE DELETE ON labels
    BEGIN SELECT RAISE(ABORT, 'labels are append-only: record a new one'); END;
"""


class UnknownLabel(ValueError):
    """A label outside :data:`LABEL_CHOICES`; the message names the allowed ones."""


class CropGone(LookupError):
    """No crop of this event on the box: expired under the retention limit, or never kept."""


@dataclass(frozen=True)
class CropRecord:
    """Where a kept crop came from (the image itself is in the store)."""

    event_id: str
    station_id: str
    camera: str
    run_id: str
    track_id: int
    kind: str  # region kind of the crop: face, hand or close
    model_version: str
    created: str  # ISO 8601 UTC: the event's time; the retention clock starts here
    face_seen: bool | None = None  # the camera's face check saw (or could not rule out) a face; None: not checked

    @property
    def group(self) -> str:
        """One traveller (a track of one run of one camera): their crops stay on one side of any split."""
        return f"{self.station_id}:{self.camera}:{self.run_id}:{self.track_id}"

    @property
    def shows_face(self) -> bool:
        """A face region, or a crop in which the face check saw a face (a hand raised to the chin)."""
        return self.kind == "face" or bool(self.face_seen)


class LabelRecord(BaseModel):
    """One label given to one event's crop (also the label API's answer)."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    label: str = Field(description="One of the 8 classes, or 'unusable' (not skin / unusable).")
    by: str = Field(description="The staff account that labeled it.")
    time: str = Field(description="When it was recorded, ISO 8601 UTC.")


@dataclass(frozen=True)
class LabeledCrop:
    crop: CropRecord
    label: LabelRecord  # the latest one


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def _timestamp(iso: str) -> float:
    t = dt.datetime.fromisoformat(iso)
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """The crop as it was classified, at full resolution (no resize: a later backbone may want more pixels)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or 0 in rgb.shape[:2]:
        raise ValueError(f"expected an RGB uint8 image, got shape {rgb.shape} dtype {rgb.dtype}")
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


_CROP_COLUMNS = "event_id, station_id, camera, run_id, track_id, kind, model_version, created, face_seen"


def _crop(row: tuple) -> CropRecord:
    *head, face_seen = row
    return CropRecord(*head, face_seen=None if face_seen is None else bool(face_seen))


class LabelStore:
    """Kept crops and their labels in one SQLite file; ``clock``: wall-clock seconds (tests move it)."""

    def __init__(self, path: str | Path, *, retention_days: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        if retention_days <= 0:
            raise ValueError(f"retention_days must be > 0, got {retention_days}")
        self.path = Path(path)
        self.retention_days = retention_days
        self.clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes on a new file: purged space is returned
            con.execute("PRAGMA journal_mode=WAL")  # the staff page's polls never block the camera's writes
            con.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=10)) as con, con:  # inner `con`: commit or roll back
            con.execute("PRAGMA synchronous=FULL")  # a recorded label survives a power cut
            con.execute("PRAGMA secure_delete=ON")  # a deleted crop's bytes are overwritten, not left in free pages
            yield con

    def _cutoff(self) -> float:
        """Crops created before this (epoch seconds) are expired."""
        return self.clock() - self.retention_days * DAY_S

    # ------------------------------------------------------------------------------------ crops
    def put(self, crop: CropRecord, rgb: np.ndarray) -> None:
        """Keep one event's crop; a second put of the same event keeps the first (ids are stable per decision).

        Raises on failure (sqlite3.Error, OSError, ValueError): the caller logs and counts it.
        """
        jpeg = encode_jpeg(rgb)
        with self._connect() as con:
            con.execute(f"INSERT OR IGNORE INTO crops ({_CROP_COLUMNS}, created_ts, jpeg) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (crop.event_id, crop.station_id, crop.camera, crop.run_id, crop.track_id, crop.kind,
                         crop.model_version, crop.created, None if crop.face_seen is None else int(crop.face_seen),
                         _timestamp(crop.created), jpeg))

    def crop(self, event_id: str) -> CropRecord | None:
        """The event's crop record, while it is within the retention limit."""
        with self._connect() as con:
            row = con.execute(f"SELECT {_CROP_COLUMNS} FROM crops WHERE event_id = ? AND created_ts >= ?",
                              (event_id, self._cutoff())).fetchone()
        return None if row is None else _crop(row)

    def image(self, event_id: str) -> bytes | None:
        """The event's crop as JPEG, while it is within the retention limit."""
        with self._connect() as con:
            row = con.execute("SELECT jpeg FROM crops WHERE event_id = ? AND created_ts >= ?",
                              (event_id, self._cutoff())).fetchone()
        return None if row is None else bytes(row[0])

    def kept(self, event_ids: Iterable[str]) -> set[str]:
        """Which of these events still have a crop to label."""
        ids, cutoff, found = list(dict.fromkeys(event_ids)), self._cutoff(), set()
        with self._connect() as con:
            for i in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
                chunk = ids[i:i + 500]
                rows = con.execute(f"SELECT event_id FROM crops WHERE created_ts >= ? AND event_id IN "
                                   f"({','.join('?' * len(chunk))})", (cutoff, *chunk))
                found.update(r[0] for r in rows)
        return found

    def known(self, event_id: str) -> bool:
        """Has this store ever seen the event (a crop, expired or not yet purged, or a label)?"""
        with self._connect() as con:
            row = con.execute("SELECT EXISTS (SELECT 1 FROM crops WHERE event_id = ?) OR "
                              "EXISTS (SELECT 1 FROM labels WHERE event_id = ?)", (event_id, event_id)).fetchone()
        return bool(row[0])

    def count(self) -> int:
        """Crops on the box (expired ones not yet purged included)."""
        with self._connect() as con:
            return int(con.execute("SELECT COUNT(*) FROM crops").fetchone()[0])

    def purge(self) -> int:
        """Delete the crops past the retention limit, image bytes and all; returns how many went."""
        with self._connect() as con:
            gone = con.execute("DELETE FROM crops WHERE created_ts < ?", (self._cutoff(),)).rowcount
        if gone:
            with closing(sqlite3.connect(self.path, timeout=10)) as con:  # outside a transaction, as both need
                con.executescript("PRAGMA incremental_vacuum;")  # executescript steps it to the end
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # no copy of the deleted pages left in the log
        return gone

    # ----------------------------------------------------------------------------------- labels
    def label(self, event_id: str, label: str, by: str) -> LabelRecord:
        """Record a label; the crop must still be on the box (checked in the same statement as the insert)."""
        if label not in LABEL_CHOICES:
            raise UnknownLabel(f"unknown label {label!r}; choose one of {', '.join(LABEL_CHOICES)}")
        now = _iso(self.clock())
        with self._connect() as con:
            added = con.execute("INSERT INTO labels (event_id, label, by, time) SELECT ?, ?, ?, ? WHERE EXISTS "
                                "(SELECT 1 FROM crops WHERE event_id = ? AND created_ts >= ?)",
                                (event_id, label, by, now, event_id, self._cutoff())).rowcount
        if not added:
            raise CropGone(f"the crop of event {event_id} is not on the box: crops are kept "
                           f"{self.retention_days:g} days (labels.crop_retention_days) and this one expired "
                           "under that retention limit or was never kept; the label was not recorded")
        return LabelRecord(event_id=event_id, label=label, by=by, time=now)

    def latest(self, event_ids: Iterable[str]) -> dict[str, LabelRecord]:
        """The newest label of each given event that has one."""
        ids = list(dict.fromkeys(event_ids))
        out: dict[str, LabelRecord] = {}
        with self._connect() as con:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                rows = con.execute(f"SELECT event_id, label, by, time FROM labels WHERE id IN (SELECT MAX(id) FROM "
                                   f"labels WHERE event_id IN ({','.join('?' * len(chunk))}) GROUP BY event_id)", chunk)
                for e, lab, by, t in rows:
                    out[e] = LabelRecord(event_id=e, label=lab, by=by, time=t)
        return out

    def history(self, event_id: str) -> list[LabelRecord]:
        """Every label of the event, oldest first."""
        with self._connect() as con:
            rows = con.execute("SELECT label, by, time FROM labels WHERE event_id = ? ORDER BY id", (event_id,))
            return [LabelRecord(event_id=event_id, label=lab, by=by, time=t) for lab, by, t in rows]

    def labeled(self) -> list[LabeledCrop]:
        """Every crop still within the retention limit that has a label, with its latest label, oldest first."""
        with self._connect() as con:
            rows = con.execute(
                f"SELECT {', '.join('c.' + c.strip() for c in _CROP_COLUMNS.split(','))}, l.label, l.by, l.time "
                "FROM crops c JOIN labels l ON l.id = (SELECT MAX(id) FROM labels WHERE event_id = c.event_id) "
                "WHERE c.created_ts >= ? ORDER BY c.created_ts, c.event_id", (self._cutoff(),)).fetchall()
        out = []
        for row in rows:
            crop = _crop(row[:9])
            out.append(LabeledCrop(crop, LabelRecord(event_id=crop.event_id, label=row[9], by=row[10], time=row[11])))
        return out
