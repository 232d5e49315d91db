"""The daemon's log: one line per event and state change, native library noise kept out of it.

MediaPipe / LiteRT / TFLite write straight to file descriptor 2 from C++ ("Sparsity tensors may not
yet be fully supported" ×46, "DestroyAccelerator" …): under systemd that is what journald keeps. So
``quiet_native_stderr`` moves Python's own ``sys.stderr`` (and the logging handlers on it) to a copy of
the real descriptor 2, then points descriptor 2 at a pipe whose lines are logged at DEBUG under the
``native`` logger: the noise is one ``--log-level debug`` away, never lost, never in the way.
``--log-format json`` writes one JSON object per line (journald / Loki).
"""

from __future__ import annotations

import datetime as dt
import faulthandler
import fcntl
import json
import logging
import os
import re
import sys
import threading

NATIVE = logging.getLogger("native")
# glog's E… / F… lines (an error, a failed CHECK before abort) stay visible; the rest is DEBUG
SEVERE = re.compile(r"^(?:[EF]\d{4} |ERROR|FATAL|F\[|E\[)")
_installed = False


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def configure(level: str = "info", fmt: str = "text") -> None:
    """The root logger for ``mpox-aism run``: one handler on stderr, the chosen level and format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())


def _pump(fd: int) -> None:
    with os.fdopen(fd, "r", errors="replace") as pipe:
        for line in pipe:
            if line.strip():
                NATIVE.log(logging.ERROR if SEVERE.match(line) else logging.DEBUG, line.rstrip())


def quiet_native_stderr() -> bool:
    """Route descriptor 2 into the ``native`` logger at DEBUG; Python keeps writing to the real stderr.

    Returns False (and changes nothing) where descriptor 2 cannot be duplicated, or when already done
    (a second call would take the pipe for the real stderr). The pipe's write end is non-blocking: a
    native library that floods it while the reader waits for the GIL loses lines, it does not hang.
    Python's faulthandler (``PYTHONFAULTHANDLER=1`` in the unit) is moved to the real stderr, so a
    watchdog's stack dump still reaches the journal.
    """
    global _installed
    if _installed:
        return False
    try:
        real = os.dup(2)
        read, write = os.pipe()
    except OSError:
        return False
    stream = os.fdopen(real, "w", buffering=1, errors="backslashreplace")
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stderr, sys.__stderr__):
            h.setStream(stream)
    sys.stderr = stream
    if faulthandler.is_enabled():
        faulthandler.enable(file=stream, all_threads=True)
    fcntl.fcntl(write, fcntl.F_SETFL, fcntl.fcntl(write, fcntl.F_GETFL) | os.O_NONBLOCK)
    os.dup2(write, 2)
    os.close(write)
    threading.Thread(target=_pump, args=(read,), name="native-stderr", daemon=True).start()
    _installed = True
    return True
