"""Under load: a camera's strides stretch when the box cannot keep up, and cameras take turns at the CPU.

``StrideScale``: the strides stretch when the box cannot keep up, and come back when it can.

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

``Turns``: at most N cameras work on a frame at once, in arrival order (``load.frames_at_once``, off by
default: it trades frames for fresher decisions); see its docstring.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
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


class Turns:
    """At most ``slots`` cameras work on a frame at once; the others wait their turn, first come first served.

    Why: with eight camera threads on two cores, every frame's detection and classification ran at a quarter
    of a core, so the frames that do both took 0.6–0.7 s from reading to decision (issue 28). A camera that
    waits for its turn *before* it reads its next frame (a file) or before it starts on the frame it has (a
    live camera) works at full speed once it has the turn, so each decision is about a fresher frame.

    The price (docs/RESULTS.md, session 13): fewer frames in all, because fewer cameras' crops meet in one
    batch of the inference worker; so turns are the operator's choice (``load.frames_at_once``), off by
    default. Ending a camera's turn when its crops go to the worker brought the batches back, and the
    latency with them: not kept. Turns are handed out in arrival order, so no camera waits behind another
    twice (fairness).
    """

    def __init__(self, slots: int, on_wait: Callable[[float], None] | None = None) -> None:
        """``on_wait``: told how long each turn was waited for, in seconds (metrics); must be quick."""
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.slots, self.on_wait = slots, on_wait
        self._cond = threading.Condition()
        self._issued = 0  # tickets handed out
        self._admitted = 0  # tickets that have had their turn (in ticket order)
        self._busy = 0

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """Hold one slot for the block; blocks until it is this caller's turn."""
        t0 = time.perf_counter()
        with self._cond:
            ticket = self._issued
            self._issued += 1
            self._cond.wait_for(lambda: ticket == self._admitted and self._busy < self.slots)
            self._admitted += 1
            self._busy += 1
            self._cond.notify_all()  # the next ticket may go too, if a slot is free
        try:
            if self.on_wait is not None:
                with contextlib.suppress(Exception):  # metrics must never keep a slot
                    self.on_wait(time.perf_counter() - t0)
            yield
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()

    @property
    def busy(self) -> int:
        with self._cond:
            return self._busy
