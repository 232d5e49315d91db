"""A camera's strides stretch when the box cannot keep up, and come back when it can.

Why: on a CPU box most of a frame's cost is detection (every ``detect_stride``-th frame) and classification
(each track every ``classify_stride``-th frame). With more cameras than the box can serve at the configured
strides, every camera slows down together (issue 28: eight cameras at ~6 frames/s each). Detecting and
classifying on fewer frames keeps each camera near its frame rate: the tracks carry the regions in between,
and a track still reaches its ``min_crops`` crops within a couple of seconds at ``min_fps``.

The rule, checked once per ``WINDOW_S``: a camera processed at under ``min_fps`` over the last window — and,
for a live source, one that also dropped frames in it (a camera that is simply slower than ``min_fps``
loses nothing) — stretches both strides by one more step, up to ``max_scale`` × the configured ones; a
camera processed at ``RELAX`` × ``min_fps`` or more steps back by one. One step per window, so the rate
the last step gave is seen before the next. The scale is shown per camera in ``/metrics``
(``mpox_aism_stride_scale``) and the status.
"""

from __future__ import annotations

from dataclasses import dataclass

WINDOW_S = 3.0  # long enough for a step's effect on the rate to show
RELAX = 1.5  # back one step only well above the floor, so the scale does not flap around it


@dataclass
class StrideScale:
    """``update`` per processed frame; ``scale`` multiplies the pipeline's strides."""

    min_fps: float
    max_scale: int = 2
    scale: int = 1
    _t0: float | None = None
    _frames: int = 0
    _dropped: int = 0

    def update(self, now: float, dropped_frames: int = 0, *, live: bool = False) -> int:
        """One frame processed at ``now`` (monotonic s); ``dropped_frames``: the source's total so far."""
        if self.min_fps <= 0 or self.max_scale <= 1:
            return self.scale
        if self._t0 is None:
            self._t0, self._dropped = now, dropped_frames
            return self.scale
        self._frames += 1
        elapsed = now - self._t0
        if elapsed < WINDOW_S:
            return self.scale
        fps = self._frames / elapsed
        behind = fps < self.min_fps and (not live or dropped_frames > self._dropped)
        if behind and self.scale < self.max_scale:
            self.scale += 1
        elif fps >= RELAX * self.min_fps and self.scale > 1:
            self.scale -= 1
        self._t0, self._frames, self._dropped = now, 0, dropped_frames
        return self.scale
