"""The data path as a chain of small stages: frame → regions → crops → tracks → classify → decide.

Each stage is timed; a stage that fails on one frame is logged and counted and the frame is
dropped, never the process. Detection can run on every ``detect_stride``-th frame (the regions
of the last detection are reused in between: people move little in 1/15 s) and each track is
classified at most every ``classify_stride``-th frame, the two knobs that buy real time on a CPU; a camera
stretches both by ``stride_scale`` when the box cannot keep up (``mpox_aism.pipeline.load``).
Crops of all tracks in a frame go to the classifier as one batch. Frames of a still (an image-folder
source sets ``still_id``) ignore both strides: each photo is its own scene, held only a few frames,
and strides would leave it under ``min_crops``.

``process`` returns a :class:`FrameResult` — the new decisions and the regions the frame was cropped
from — so a caller that draws or counts them needs nothing else of the mpox_aism.pipeline's insides.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mpox_aism.contracts.decision import REVIEW_REASONS, STATES, State
from mpox_aism.inference.classifier import CropClassifier
from mpox_aism.pipeline.crops import CropConfig, CropExtractor
from mpox_aism.pipeline.decider import Decider, Decision, DecisionConfig
from mpox_aism.pipeline.regions import REGION_KINDS, Region
from mpox_aism.pipeline.shadow import Shadow, ShadowCounts
from mpox_aism.pipeline.tracker import Tracker, TrackerConfig

log = logging.getLogger(__name__)
STAGES = ("detect", "crop", "track", "classify", "decide")
DETECT_STRIDE = 2  # hand detection is the CPU cost; people move little in 1/15 s
CLASSIFY_STRIDE = 3  # a track's crops 3 frames apart are still 5 a second at 15 fps


@dataclass
class PipelineConfig:
    detect_stride: int = DETECT_STRIDE
    classify_stride: int = CLASSIFY_STRIDE
    crop: CropConfig = field(default_factory=CropConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)


@dataclass(frozen=True)
class PipelineCounts:
    """A copy of the counters another thread may read (metrics) while the pipeline runs on."""

    frames: int = 0
    frames_with: dict[str, int] = field(default_factory=dict)
    decisions: dict[str, int] = field(default_factory=dict)
    review_reasons: dict[str, int] = field(default_factory=dict)  # review decisions by reason
    shadow: ShadowCounts | None = None  # the shadow head's counters, when one runs


@dataclass
class PipelineStats:
    frames: int = 0
    frames_with: Counter = field(default_factory=Counter)  # region kind → frames that had one
    crops: int = 0
    rejected: Counter = field(default_factory=Counter)
    stage_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    # the whole process's CPU (every thread: ONNX Runtime's and MediaPipe's pools too) while a stage ran: that
    # stage's CPU cost only where one pipeline runs alone (bench pipeline), not beside other cameras
    stage_cpu_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))  # the latest; bounded
    decisions: Counter = field(default_factory=Counter)
    review_reasons: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)

    def count(self, d: Decision) -> None:
        self.decisions[d.state] += 1
        if d.reason is not None:
            self.review_reasons[d.reason] += 1

    def counts(self, shadow: ShadowCounts | None = None) -> PipelineCounts:
        return PipelineCounts(self.frames, dict(self.frames_with), {s: self.decisions.get(s, 0) for s in STATES},
                              {r: self.review_reasons.get(r, 0) for r in REVIEW_REASONS}, shadow)

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latency_ms) if self.latency_ms else np.zeros(1)
        n = max(1, self.frames)
        return {
            "frames": self.frames,
            "stage_ms": {s: round(1000 * self.stage_seconds[s] / n, 3) for s in STAGES},
            "stage_process_cpu_ms": {s: round(1000 * self.stage_cpu_seconds[s] / n, 3) for s in STAGES},
            "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 2),
                           "p99": round(float(np.percentile(lat, 99)), 2)},
            **{f"frames_with_{kind}": self.frames_with[kind] for kind in REGION_KINDS},
            "crops": self.crops,
            "rejected_crops": dict(self.rejected),
            "decisions": {s: self.decisions.get(s, 0) for s in STATES},
            "review_reasons": {r: self.review_reasons.get(r, 0) for r in REVIEW_REASONS},
            "errors": dict(self.errors),
        }


@dataclass(frozen=True)
class FrameResult:
    """What one frame produced: decisions that are new, and the regions its crops came from."""

    decisions: list[Decision] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)


class Pipeline:
    """``shadow``: a second head that classifies every crop this one classifies and only counts
    (``mpox_aism.pipeline.shadow``); its errors never drop a frame."""

    def __init__(self, classifier: CropClassifier, detector: Any, config: PipelineConfig | None = None,
                 shadow: Shadow | None = None):
        self.config = config or PipelineConfig()
        self.shadow = shadow
        self._state: dict[int, State] = {}  # the deciding head's last state per open track (for the shadow)
        self.classifier = classifier
        self.detector = detector  # anything with detect(frame_rgb) -> list[Region]
        self.extractor = CropExtractor(self.config.crop)
        self.tracker = Tracker(self.config.tracker)
        self.decider = Decider(self.config.decision, classifier.labels)
        self.stats = PipelineStats()
        self._regions: list[Region] = []
        self.stride_scale = 1  # both strides × this: set by the camera when the box cannot keep up (pipeline.load)
        self._last_classified: dict[int, int] = {}

    def _timed(self, stage: str, fn, *args, **kwargs):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            self.stats.stage_seconds[stage] += time.perf_counter() - t0
            self.stats.stage_cpu_seconds[stage] += time.process_time() - c0

    def use_detector(self, detector: Any) -> None:
        """A new camera session brings its own detector; counters, decider and config carry on."""
        self.detector = detector

    def process(self, frame: Any) -> FrameResult:
        """One frame (a ``mpox_aism.pipeline.sources.Frame``) through every stage."""
        s = self.stats
        s.frames += 1
        stage = "detect"
        decisions: list[Decision] = []  # kept if a later stage fails: a track's final decision is real
        try:
            image = frame.image
            still = getattr(frame, "still_id", None)
            detected = (still is not None or frame.index % (self.config.detect_stride * self.stride_scale) == 0
                        or s.frames == 1)
            if detected:
                self._regions = self._timed("detect", self.detector.detect, image)
            stage = "crop"
            crops, rejected = self._timed("crop", self.extractor, image, self._regions)
            s.frames_with.update({r.kind for r in self._regions} | {c.region.kind for c in crops})
            s.crops += len(crops)
            s.rejected.update(reason for _, reason in rejected)
            stage = "track"
            up = self._timed("track", self.tracker.update, image, frame.index, crops,
                             still_id=still, detected=detected)
            stage = "decide"
            for tid in up.ended:
                d = self._timed("decide", self.decider.end, tid)
                decisions += [d] if d else []
                self._ended(tid, d)
                self._last_classified.pop(tid, None)
            every = self.config.classify_stride * self.stride_scale
            due = [(tid, c) for tid, c in up.assigned
                   if frame.index - self._last_classified.get(tid, -10**9) >= every
                   or up.scene_cut or still is not None]
            if due:
                stage = "classify"
                result = self._timed("classify", self.classifier.classify, [c.image for _, c in due])
                # the familiarity verdict per crop; None where the model has no score
                familiar = [None] * len(due) if result.familiar is None else result.familiar.tolist()
                stage = "decide"
                for (tid, c), p, f in zip(due, result.probabilities, familiar, strict=True):
                    self._last_classified[tid] = frame.index
                    d = self._timed("decide", self.decider.add, tid, c, p, frame.timestamp, frame.index, f)
                    if d:
                        decisions.append(d)
                        self._state[tid] = d.state
                if self.shadow is not None:
                    stage = "shadow"
                    self._timed("shadow", self.shadow.add, due, frame.timestamp, frame.index)
        except Exception as e:  # one bad frame must not stop the checkpoint
            s.errors[stage] += 1
            log.warning("frame %s dropped at stage %s: %s", getattr(frame, "index", "?"), stage, e)
            for d in decisions:
                s.count(d)
            return FrameResult(decisions)
        s.latency_ms.append(1000 * (time.time() - frame.timestamp))
        for d in decisions:
            s.count(d)
        return FrameResult(decisions, list(self._regions))

    def _ended(self, track_id: int, final: Decision | None) -> None:
        """A track ended (``final``: its closing decision, if any): the shadow compares its own end."""
        state = final.state if final is not None else self._state.get(track_id)
        self._state.pop(track_id, None)
        if self.shadow is not None:
            self.shadow.end(track_id, state)

    def finish(self) -> Iterator[Decision]:
        """The source ended: close every track and yield their final decisions."""
        ended = []
        for tid in self.tracker.end_all():
            ended.append(d := self.decider.end(tid))
            self._ended(tid, d)
        rest = self.decider.end_all()
        for d in rest:
            self._state[d.track_id] = d.state
        if self.shadow is not None:
            self.shadow.end_all(self._state)
        self._state.clear()
        for d in [*ended, *rest]:
            if d is not None:
                self.stats.count(d)
                yield d

    def run(self, frames: Iterable[Any]) -> Iterator[Decision]:
        for frame in frames:
            yield from self.process(frame).decisions
        yield from self.finish()

    def counts(self) -> PipelineCounts:
        """The counters to hand to another thread, the shadow's included."""
        return self.stats.counts(self.shadow.counts() if self.shadow is not None else None)

    @property
    def tracks(self) -> int:
        return self.tracker.total_tracks
