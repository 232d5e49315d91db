"""Cameras that freeze, and several cameras lost at once.

- Stall: the RTSP camera process is SIGSTOPped (frozen, its TCP connection left open: what a hung camera
  or a dead switch port looks like) for 12 s, then SIGCONTed. The source must notice the stall (no frame
  for ``stall_timeout``), say so in ``last_error``, and reconnect by itself once the camera is back.
- Two RTSP cameras are SIGKILLed at the same moment and restarted, three times: both come back each time.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from mpox_aism.pipeline.sources import LiveSource
from tests.e2e.rtsp_server import RtspServer
from tests.kiosk.conftest import wait_until
from tests.pipeline.conftest import CLIP

pytestmark = pytest.mark.faults
STALL_S = 12


def _source(url: str) -> LiveSource:
    return LiveSource(url, reconnect_initial=0.25, reconnect_max=2.0, stall_timeout=3.0, open_timeout=10.0)



def test_frozen_camera_is_noticed_and_reconnected(rtsp_server: RtspServer) -> None:
    src = _source(rtsp_server.url)
    try:
        wait_until(lambda: src.stats().frames > 10, 120, what="first frames")
        assert rtsp_server.proc is not None
        rtsp_server.proc.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        wait_until(lambda: not src.connected, 60, what="the source noticing the frozen camera")
        noticed = time.monotonic() - frozen_at
        error = src.stats().last_error
        time.sleep(max(0.0, STALL_S - (time.monotonic() - frozen_at)))
        rtsp_server.proc.send_signal(signal.SIGCONT)
        thawed = time.monotonic()
        wait_until(lambda: src.connected and src.reconnects >= 1, 120, what="reconnect after the thaw")
        back = time.monotonic() - thawed
        frames = src.stats().frames
        wait_until(lambda: src.stats().frames > frames + 10, 60, what="frames after the thaw")
        stats = src.stats()
    finally:
        src.close()
    print(f"\nFAULT frozen RTSP camera ({STALL_S} s SIGSTOP, stall_timeout 3 s): noticed after {noticed:.1f} s "
          f"({error!r}), reconnected {back:.1f} s after SIGCONT, reconnects {stats.reconnects}, exceptions 0")
    assert "stall" in (error or "") or "read failed" in (error or ""), error
    assert stats.connected and stats.last_error is None


def test_two_cameras_lost_at_once_both_come_back(rtsp_available: None, tmp_path: Path) -> None:
    servers = [RtspServer(CLIP if CLIP.is_file() else None, log_path=tmp_path / f"rtsp{i}.log") for i in range(2)]
    sources: list[LiveSource] = []
    try:
        for s in servers:
            s.start()
        sources = [_source(s.url) for s in servers]
        for cycle in range(3):
            for src in sources:
                f = src.stats().frames
                wait_until(lambda src=src, f=f: src.stats().frames > f + 5, 120, what=f"frames (cycle {cycle})")
            for s in servers:
                s.kill()
            wait_until(lambda: not any(src.connected for src in sources), 60, what="both losses noticed")
            for s in servers:
                s.start(timeout=60)
            wait_until(lambda c=cycle: all(src.reconnects >= c + 1 for src in sources), 120,
                       what=f"both reconnected (cycle {cycle})")
        stats = [src.stats() for src in sources]
    finally:
        for src in sources:
            src.close()
        for s in servers:
            s.kill(signal.SIGTERM)
    print(f"\nFAULT two RTSP cameras lost at once ×3: reconnects {[st.reconnects for st in stats]}, "
          f"reopen→first frame {[round(max(src.reconnect_seconds), 2) for src in sources]} s (max), exceptions 0")
    assert all(st.reconnects == 3 for st in stats)
