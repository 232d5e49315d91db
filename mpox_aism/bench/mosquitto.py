"""A real mosquitto broker for benchmarks: a child process on a free port, stopped by its PID, never by name.

The same broker the kiosk tests start (``tests/kiosk/conftest.py``), here for ``bench fleet``, which
must run outside pytest. Persistence is on (its file in the run's folder) so a restart keeps sessions
and queued messages: with SIGTERM mosquitto saves everything before it exits; with SIGKILL it keeps
only what its last autosave (every ``autosave_interval_s``) wrote.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

APT_LINE = "apt-get install -y mosquitto"


def find_mosquitto() -> str | None:
    # Debian installs the broker in /usr/sbin, which is not on a normal user's PATH
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin:/usr/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """One mosquitto on 127.0.0.1; ``restart`` keeps the port, the config and the persistence file.

    The default config is anonymous with persistence on. ``max_queued_messages``: what the broker holds for a
    disconnected persistent session (the console while it restarts); mosquitto's default, 1000, drops the
    rest, so it is raised here and must be in production too. The kiosk tests' ``Broker`` writes its own
    config (accounts, TLS, the shipped site config) and reuses the rest.
    """

    def __init__(self, root: Path, *, port: int | None = None, autosave_interval_s: int = 1,
                 max_queued_messages: int = 0) -> None:
        exe = find_mosquitto()
        if exe is None:
            raise FileNotFoundError(f"mosquitto not found on PATH or in /usr/sbin; install it with: {APT_LINE}")
        self.exe = exe
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf, self.log, self.db = root / "mosquitto.conf", root / "mosquitto.log", root / "mosquitto.db"
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf.write_text("\n".join([
            *self.head_lines(),
            "allow_anonymous true",
            "persistence true", f"persistence_location {root}/", f"persistence_file {self.db.name}",
            f"autosave_interval {autosave_interval_s}",
            f"max_queued_messages {max_queued_messages}",
            "max_inflight_messages 100",
        ]) + "\n")

    def head_lines(self) -> list[str]:
        """The listener, the user and the log: what every config of a test or bench broker starts with."""
        return [f"listener {self.port} 127.0.0.1",
                # as root, mosquitto would drop to "mosquitto", which cannot write the run's folder
                f"user {getpass.getuser()}",
                f"log_dest file {self.log}",
                "log_type error", "log_type warning", "log_type notice", "log_type information",
                "connection_messages true"]

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> Self:
        assert self.proc is None or self.proc.poll() is not None, "mosquitto already running"
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err}\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"mosquitto did not accept connections on {self.port} within {timeout:.0f}s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop by PID: SIGTERM is a clean shutdown (persistence saved), SIGKILL a crash."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(15)
        if self.proc.stderr:
            self.proc.stderr.close()

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()
