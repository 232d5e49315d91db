"""What the host gives the process: systemd's notify socket, the state directory, thread priorities."""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path

log = logging.getLogger(__name__)


def sd_notify(message: str) -> bool:
    """Tell systemd (Type=notify) about READY/WATCHDOG/STOPPING; a no-op outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode())
        return True
    except OSError as e:
        log.warning("sd_notify(%s) failed: %s", message, e)
        return False


def state_dir() -> Path:
    """``$STATE_DIRECTORY`` (systemd's ``StateDirectory=``), else ``runs/state``; created on first use."""
    d = Path(os.environ.get("STATE_DIRECTORY", "runs/state").split(":")[0])
    d.mkdir(parents=True, exist_ok=True)
    return d


def lower_thread_priority(nice: int, what: str) -> None:
    """Make the calling thread ``nice`` (Linux: niceness is per thread, and threads it starts inherit it).

    Three levels share the box: the inference worker and ONNX Runtime's pool at 0 (every camera waits on
    them, so they must never wait behind a camera), each camera's worker at ``CAMERA_NICE`` (detection,
    crops, tracking; MediaPipe's threads inherit it), the HTTP server at ``http.nice`` (the API takes what
    the cameras leave). Raising one's niceness needs no privilege; elsewhere this logs and does nothing.
    """
    try:
        tid = threading.get_native_id()
        if nice > os.getpriority(os.PRIO_PROCESS, tid):  # absolute: never try to raise a niced daemon's priority
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except (AttributeError, OSError) as e:  # not Linux, or a sandbox that forbids it
        log.warning("could not lower the %s threads' priority to nice %d: %s", what, nice, e)
