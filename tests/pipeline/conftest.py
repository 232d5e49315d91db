"""Pipeline fixtures: a real RTSP server (GStreamer, a separate process) for the live-source tests.

The server is `tests/e2e/rtsp_server.py`, run with Debian's /usr/bin/python3; the tests skip with
the apt-get line to run when its GStreamer bindings are missing.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA
from tests.e2e.rtsp_server import RtspServer, rtsp_unavailable_reason

CLIP = SHARED_DATA / "video" / "short_hamilton_clip.mp4"


@pytest.fixture(scope="session")
def rtsp_available() -> None:
    reason = rtsp_unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def rtsp_server(rtsp_available: None, tmp_path: Path) -> Iterator[RtspServer]:
    """A started RTSP server on a free port, looping the Hamilton clip (a test pattern when the clip
    is absent). Call `kill()` / `start()` on it to take the camera away and bring it back; it is
    stopped by PID at the end. Its log is in the test's tmp_path."""
    server = RtspServer(CLIP if CLIP.is_file() else None, log_path=tmp_path / "rtsp_server.log")
    server.start()
    try:
        yield server
    finally:
        server.kill(signal.SIGTERM)
