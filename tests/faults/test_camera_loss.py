"""Camera loss: the RTSP camera is SIGKILLed and restarted 20 times; a missing V4L2 camera is retried.

A kiosk camera must come back by itself: `LiveSource` never raises to its consumer, counts every
reconnect, and says why it is down in `last_error`.
"""

from __future__ import annotations

import statistics
import threading
import time

import pytest

from mpox_aism.pipeline.sources import LiveSource
from tests.kiosk.conftest import wait_until

pytestmark = pytest.mark.faults

RESTARTS = 20


def _figures(xs: list[float]) -> str:
    return f"min {min(xs):.2f} / median {statistics.median(xs):.2f} / max {max(xs):.2f} s"


def test_rtsp_camera_killed_and_restarted_20_times(rtsp_server):
    src = LiveSource(rtsp_server.url, reconnect_initial=0.25, reconnect_max=2.0, stall_timeout=3.0,
                     open_timeout=10.0)
    consumed = [0]
    raised: list[BaseException] = []

    def consume() -> None:
        try:
            for _ in src:
                consumed[0] += 1
        except BaseException as e:  # the point of the test: this must never happen
            raised.append(e)

    consumer = threading.Thread(target=consume, name="consumer", daemon=True)
    consumer.start()
    back_to_frame: list[float] = []  # server accepting connections -> reconnect with a frame (backoff included)
    try:
        wait_until(lambda: src.stats().frames > 5, 120, what="first frames from the RTSP server")
        for i in range(RESTARTS):
            frames = src.stats().frames
            wait_until(lambda f=frames: src.stats().frames > f + 5, 60, what=f"frames flowing (cycle {i})")
            rtsp_server.kill()  # SIGKILL: the camera (or its network) is gone at once
            wait_until(lambda: not src.connected, 60, what=f"the source noticing the loss (cycle {i})")
            rtsp_server.start(timeout=60)
            t_up = time.monotonic()
            wait_until(lambda n=i + 1: src.reconnects >= n, 120, interval=0.02, what=f"reconnect #{i + 1}")
            back_to_frame.append(time.monotonic() - t_up)
        frames = src.stats().frames
        wait_until(lambda: src.stats().frames > frames + 5, 60, what="frames after the last restart")
        stats = src.stats()
    finally:
        src.close()
        consumer.join(30)
    assert not raised, f"LiveSource raised to its consumer: {raised[0]!r}"
    assert stats.reconnects == RESTARTS and len(src.reconnect_seconds) == RESTARTS, stats
    assert stats.connected and stats.last_error is None, stats
    assert consumed[0] > 0
    print(f"\nFAULT camera-loss (RTSP, {RESTARTS} SIGKILL+restart cycles): reconnects {stats.reconnects}, "
          f"reopen attempts {stats.reconnect_attempts}, exceptions 0, frames {stats.frames} "
          f"(consumed {consumed[0]}, dropped {stats.dropped_frames}); "
          f"reopen->first frame {_figures(src.reconnect_seconds)}; "
          f"server up->first frame {_figures(back_to_frame)}; "
          f"last frame->first frame (outage seen by the pipeline) {_figures(src.outage_seconds)}")


def test_missing_v4l2_camera_is_retried_with_a_clear_error():
    index = 63  # /dev/video63: absent on a test machine
    src = LiveSource(index, reconnect_initial=0.1, reconnect_max=0.2, stall_timeout=1.0, open_timeout=1.0)
    try:
        wait_until(lambda: src.reconnect_attempts >= 3, 60, what="retries of the missing camera")
        assert src.get(timeout=0.5) is None
        stats = src.stats()
    finally:
        src.close()
    assert stats.connected is False and stats.frames == 0 and stats.reconnects == 0
    assert f"/dev/video{index} does not exist" in (stats.last_error or ""), stats
    print(f"\nFAULT camera-loss (V4L2 index {index} absent): no exception, reopen attempts "
          f"{stats.reconnect_attempts}, last_error {stats.last_error!r}")
