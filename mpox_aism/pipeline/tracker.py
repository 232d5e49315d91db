"""Crops → tracks: one track per person, stable ids, ended on leave or on a scene cut.

A person is anchored by a face (or a ``close`` region); a hand joins the nearest face track when
its centre is within ``hand_reach`` face-widths, else it anchors a track of its own. Across
frames an anchor joins the live track whose last anchor box overlaps it most (IoU) or, failing
that, whose centre is nearest (within one box size).

Position alone cannot tell two close-ups apart, so a scene cut ends every track: a new still of an
image-folder source (``still_id`` changes), or a frame whose 32×32 grey thumbnail differs from the
previous one by more than ``cut_threshold`` (mean absolute difference, 0..255) — a different
person stepping in front of a close-range camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from mpox_aism.pipeline.crops import Crop
from mpox_aism.pipeline.regions import Region


def iou(a: Region, b: Region) -> float:
    ix = max(0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = ix * iy
    union = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter
    return inter / union if union > 0 else 0.0


def centre(r: Region) -> tuple[float, float]:
    return (r.x0 + r.x1) / 2, (r.y0 + r.y1) / 2


@dataclass
class Track:
    track_id: int
    anchor: Region
    first_frame: int
    last_frame: int
    hits: int = 1


@dataclass
class TrackerConfig:
    max_age: int = 30  # frames without a detection before a track ends
    min_iou: float = 0.2
    hand_reach: float = 2.5  # face widths
    cut_threshold: float = 40.0  # thumbnail mean abs difference that counts as a scene cut


@dataclass
class TrackUpdate:
    """What one frame did to the tracks: crops assigned to track ids, and tracks that ended."""

    assigned: list[tuple[int, Crop]] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)
    scene_cut: bool = False


class Tracker:
    def __init__(self, config: TrackerConfig | None = None):
        self.config = config or TrackerConfig()
        self.tracks: dict[int, Track] = {}
        self._next_id = 1
        self._thumb: np.ndarray | None = None
        self._still: int | None = None
        self.total_tracks = 0

    def _is_cut(self, frame: np.ndarray, still_id: int | None) -> bool:
        thumb = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), (32, 32), interpolation=cv2.INTER_AREA)
        thumb = thumb.astype(np.float32)
        cut = (still_id is not None and self._still is not None and still_id != self._still) or (
            self._thumb is not None and float(np.abs(thumb - self._thumb).mean()) > self.config.cut_threshold)
        self._thumb, self._still = thumb, still_id
        return cut

    def _new(self, anchor: Region, index: int) -> Track:
        t = Track(self._next_id, anchor, index, index)
        self.tracks[t.track_id] = t
        self._next_id += 1
        self.total_tracks += 1
        return t

    def _match(self, anchor: Region, taken: set[int]) -> Track | None:
        best, best_score = None, 0.0
        for t in self.tracks.values():
            if t.track_id in taken or (t.anchor.kind == "hand") != (anchor.kind == "hand"):
                continue
            score = iou(t.anchor, anchor)
            if score < self.config.min_iou:
                (ax, ay), (bx, by) = centre(t.anchor), centre(anchor)
                size = max(anchor.x1 - anchor.x0, anchor.y1 - anchor.y0, 1)
                dist = ((ax - bx) ** 2 + (ay - by) ** 2) ** 0.5
                score = 0.5 * max(0.0, 1 - dist / size) * self.config.min_iou  # weaker than any overlap
            if score > best_score:
                best, best_score = t, score
        return best

    def update(self, frame: np.ndarray, index: int, crops: list[Crop], *, still_id: int | None = None,
               detected: bool = True) -> TrackUpdate:
        """Assign this frame's crops; ``detected`` False (a frame skipped by the detection stride)
        does not age the tracks."""
        up = TrackUpdate()
        if self._is_cut(frame, still_id):
            up.scene_cut = True
            up.ended += list(self.tracks)
            self.tracks.clear()
        anchors = [c for c in crops if c.region.kind in ("face", "close")]
        hands = [c for c in crops if c.region.kind == "hand"]
        taken: set[int] = set()
        for c in anchors:
            t = self._match(c.region, taken) or self._new(c.region, index)
            t.anchor, t.last_frame = c.region, index
            t.hits += 1
            taken.add(t.track_id)
            up.assigned.append((t.track_id, c))
        for c in hands:
            hx, hy = centre(c.region)
            owner, owner_dist = None, float("inf")
            for tid in taken:
                t = self.tracks[tid]
                if t.anchor.kind == "hand":
                    continue
                fx, fy = centre(t.anchor)
                reach = self.config.hand_reach * (t.anchor.x1 - t.anchor.x0)
                d = ((hx - fx) ** 2 + (hy - fy) ** 2) ** 0.5
                if d <= reach and d < owner_dist:
                    owner, owner_dist = t, d
            if owner is None:
                owner = self._match(c.region, taken) or self._new(c.region, index)
                owner.anchor = c.region
                taken.add(owner.track_id)
            owner.last_frame = index
            up.assigned.append((owner.track_id, c))
        if detected:
            for tid, t in list(self.tracks.items()):
                if index - t.last_frame > self.config.max_age:
                    up.ended.append(tid)
                    del self.tracks[tid]
        return up

    def end_all(self) -> list[int]:
        ended = list(self.tracks)
        self.tracks.clear()
        return ended
