"""The data path as a chain of small stages: frame → regions → crops → tracks → classify → decide.

Each stage is timed; a stage that fails on one frame is logged and counted and the frame is
dropped, never the process. Detection can run on every ``detect_stride``-th frame (the regions
of the last detection are reused in between: people move little in 1/15 s) and each track is
classified at most every ``classify_stride``-th frame, the two knobs that buy real time on a CPU.
Crops of all tracks in a frame go to the classifier as one batch.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from export.classifier import Classifier
from pipeline.crops import CropConfig, CropExtractor
from pipeline.decider import Decider, Decision, DecisionConfig
from pipeline.regions import Region
from pipeline.tracker import Tracker, TrackerConfig

log = logging.getLogger(__name__)
STAGES = ("detect", "crop", "track", "classify", "decide")


@dataclass
class PipelineConfig:
    detect_stride: int = 1
    classify_stride: int = 1
    crop: CropConfig = field(default_factory=CropConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)


@dataclass
class PipelineStats:
    frames: int = 0
    frames_with_face: int = 0
    frames_with_hand: int = 0
    frames_with_close: int = 0
    crops: int = 0
    rejected: Counter = field(default_factory=Counter)
    stage_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    latency_ms: list[float] = field(default_factory=list)
    decisions: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latency_ms) if self.latency_ms else np.zeros(1)
        n = max(1, self.frames)
        return {
            "frames": self.frames,
            "stage_ms": {s: round(1000 * self.stage_seconds[s] / n, 3) for s in STAGES},
            "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 2),
                           "p99": round(float(np.percentile(lat, 99)), 2)},
            "frames_with_face": self.frames_with_face,
            "frames_with_hand": self.frames_with_hand,
            "frames_with_close": self.frames_with_close,
            "crops": self.crops,
            "rejected_crops": dict(self.rejected),
            "decisions": {s: self.decisions.get(s, 0) for s in ("clear", "review", "suspected")},
            "errors": dict(self.errors),
        }


class Pipeline:
    def __init__(self, classifier: Classifier, detector: Any, config: PipelineConfig | None = None):
        self.config = config or PipelineConfig()
        self.classifier = classifier
        self.detector = detector  # anything with detect(frame_rgb) -> list[Region]
        self.extractor = CropExtractor(self.config.crop)
        self.tracker = Tracker(self.config.tracker)
        self.decider = Decider(self.config.decision, classifier.labels)
        self.stats = PipelineStats()
        self._regions: list[Region] = []
        self._last_classified: dict[int, int] = {}
        self._still: int | None = None

    def _timed(self, stage: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.stats.stage_seconds[stage] += time.perf_counter() - t0

    def process(self, frame: Any) -> list[Decision]:
        """One frame (a ``pipeline.sources.Frame``) through every stage; returns new decisions."""
        s = self.stats
        s.frames += 1
        stage = "detect"
        try:
            image = frame.image
            still = getattr(frame, "still_id", None)
            detected = frame.index % self.config.detect_stride == 0 or still != self._still or s.frames == 1
            self._still = still
            if detected:
                self._regions = self._timed("detect", self.detector.detect, image)
                detected = True
            kinds = {r.kind for r in self._regions}
            s.frames_with_face += "face" in kinds
            s.frames_with_hand += "hand" in kinds
            stage = "crop"
            crops, rejected = self._timed("crop", self.extractor, image, self._regions)
            s.frames_with_close += any(c.region.kind == "close" for c in crops)
            s.crops += len(crops)
            s.rejected.update(reason for _, reason in rejected)
            stage = "track"
            up = self._timed("track", self.tracker.update, image, frame.index, crops,
                             still_id=still, detected=detected)
            decisions: list[Decision] = []
            stage = "decide"
            for tid in up.ended:
                decisions += [d for d in [self._timed("decide", self.decider.end, tid)] if d]
                self._last_classified.pop(tid, None)
            due = [(tid, c) for tid, c in up.assigned
                   if frame.index - self._last_classified.get(tid, -10**9) >= self.config.classify_stride
                   or up.scene_cut]
            if due:
                stage = "classify"
                probs = self._timed("classify", self.classifier.predict, [c.image for _, c in due])
                stage = "decide"
                for (tid, c), p in zip(due, probs, strict=True):
                    self._last_classified[tid] = frame.index
                    d = self._timed("decide", self.decider.add, tid, c, p, frame.timestamp, frame.index)
                    if d:
                        decisions.append(d)
        except Exception as e:  # one bad frame must not stop the checkpoint
            s.errors[stage] += 1
            log.warning("frame %s dropped at stage %s: %s", getattr(frame, "index", "?"), stage, e)
            return []
        s.latency_ms.append(1000 * (time.time() - frame.timestamp))
        for d in decisions:
            s.decisions[d.state] += 1
        return decisions

    def finish(self) -> Iterator[Decision]:
        """The source ended: close every track and yield their final decisions."""
        ended = [self.decider.end(tid) for tid in self.tracker.end_all()]
        for d in [*ended, *self.decider.end_all()]:
            if d is not None:
                self.stats.decisions[d.state] += 1
                yield d

    def run(self, frames: Iterable[Any]) -> Iterator[Decision]:
        for frame in frames:
            yield from self.process(frame)
        yield from self.finish()

    @property
    def regions(self) -> list[Region]:
        """The regions of the latest detection (reused between strided detections)."""
        return self._regions

    @property
    def tracks(self) -> int:
        return self.tracker.total_tracks
