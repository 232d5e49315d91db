"""The strides stretch under load and come back (``mpox_aism.pipeline.load``), and the pipeline obeys the scale;
cameras take turns.

The clock is passed in: these are the rule's cases, not timings.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from mpox_aism.inference.classifier import Classification
from mpox_aism.pipeline.load import WINDOW_S, StrideScale, Turns
from mpox_aism.pipeline.pipeline import Pipeline, PipelineConfig
from mpox_aism.pipeline.sources import Frame


def run(scale: StrideScale, fps: float, seconds: float, *, start: float = 0.0, live: bool = False,
        drops_per_frame: int = 0, dropped: int = 0) -> tuple[int, float, int]:
    """Frames at ``fps`` for ``seconds``; (the scale at the end, the time, the source's drops)."""
    t = start
    for _ in range(int(fps * seconds)):
        t += 1 / fps
        dropped += drops_per_frame
        scale.update(t, dropped, live=live)
    return scale.scale, t, dropped


def test_a_camera_under_min_fps_stretches_one_step_per_window_up_to_the_limit():
    s = StrideScale(min_fps=10, max_scale=3)
    assert run(s, 6, WINDOW_S + 0.5)[0] == 2
    assert run(s, 6, 5 * WINDOW_S, start=WINDOW_S + 0.5)[0] == 3  # never past max_scale


def test_it_steps_back_only_well_above_min_fps():
    s = StrideScale(min_fps=10, max_scale=2)
    _, t, _ = run(s, 6, WINDOW_S + 0.5)
    assert s.scale == 2
    _, t, _ = run(s, 12, 3 * WINDOW_S, start=t)  # above the floor, under 1.5×: stays, no flapping
    assert s.scale == 2
    assert run(s, 20, 2 * WINDOW_S, start=t)[0] == 1


def test_a_live_camera_that_is_slow_but_drops_nothing_keeps_its_strides():
    s = StrideScale(min_fps=10, max_scale=2)
    assert run(s, 8, 3 * WINDOW_S, live=True)[0] == 1
    assert run(s, 8, 2 * WINDOW_S, start=3 * WINDOW_S + 1, live=True, drops_per_frame=1)[0] == 2


def test_off_when_min_fps_is_zero_or_max_scale_one():
    for s in (StrideScale(min_fps=0, max_scale=3), StrideScale(min_fps=10, max_scale=1)):
        assert run(s, 2, 4 * WINDOW_S)[0] == 1


class _CountingDetector:
    def __init__(self) -> None:
        self.calls = 0

    def detect(self, image: np.ndarray) -> list:
        self.calls += 1
        return []


class _NoCrops:
    labels = ("mpox", "normal")

    def classify(self, crops: list) -> Classification:
        raise AssertionError("no regions, so nothing to classify")


def test_the_pipeline_detects_on_fewer_frames_when_stretched():
    image = np.zeros((32, 32, 3), np.uint8)
    counts = []
    for scale in (1, 2):
        det = _CountingDetector()
        pipe = Pipeline(_NoCrops(), det, PipelineConfig(detect_stride=2))  # type: ignore[arg-type]
        pipe.stride_scale = scale
        for i in range(40):
            pipe.process(Frame(image=image, index=i, timestamp=time.time(), source="test"))
        counts.append(det.calls)
    assert counts == [20, 10]


def test_turns_let_at_most_n_work_at_once_in_arrival_order():
    turns = Turns(2)
    started: list[int] = []
    most = [0]
    lock = threading.Lock()
    first = turns.turn()
    first.__enter__()  # one slot taken by the test: the others queue behind the remaining one
    release = threading.Event()

    def camera(i: int) -> None:
        with turns.turn():
            with lock:
                started.append(i)
                most[0] = max(most[0], turns.busy)
            release.wait(10)

    threads = []
    for i in range(4):  # each queues before the next starts, so arrival order is 0, 1, 2, 3
        threads.append(threading.Thread(target=camera, args=(i,)))
        threads[-1].start()
        deadline = time.monotonic() + 5
        while turns._issued < i + 2 and time.monotonic() < deadline:
            time.sleep(0.001)
    deadline = time.monotonic() + 5
    while len(started) < 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert started == [0]  # the second slot went to the first in line; the rest wait
    first.__exit__(None, None, None)
    release.set()
    for t in threads:
        t.join(10)
    assert started == [0, 1, 2, 3]
    assert most[0] <= 2 and turns.busy == 0


def test_a_turn_is_given_back_when_its_work_fails():
    waits: list[float] = []
    turns = Turns(1, on_wait=waits.append)
    with pytest.raises(RuntimeError), turns.turn():
        raise RuntimeError("a frame that fails")
    with turns.turn():  # would block forever if the failed turn had kept its slot
        assert turns.busy == 1
    assert len(waits) == 2 and all(w >= 0 for w in waits)  # each turn's wait is told (metrics)
    with pytest.raises(ValueError):
        Turns(0)


def test_a_failing_wait_callback_does_not_keep_the_slot():
    def broken(seconds: float) -> None:
        raise RuntimeError("a metrics bug")

    turns = Turns(1, on_wait=broken)
    for _ in range(2):  # the second would block forever if the first had kept the slot
        with turns.turn():
            pass
    assert turns.busy == 0


def test_two_live_cameras_taking_one_turn_both_work_and_stop(rtsp_server):
    """The daemon's own workers on two RTSP cameras that share one turn (``load.frames_at_once: 1``): each takes
    the newest frame once its turn comes (the ones it skipped count as dropped), and both stop when asked."""
    from mpox_aism.bench.streams import run_streams

    r = run_streams(rtsp_server.url, 2, 4.0, frames_at_once=1)
    assert r["frames_at_once"] == 1 and len(r["fps"]) == 2
    assert all(f > 0 for f in r["fps"]) and all(n > 0 for n in r["frames"]), r
    assert r["errors"] == [0, 0] and r["inference"]["failed"] == 0
