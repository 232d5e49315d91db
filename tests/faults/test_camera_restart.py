"""A camera whose session dies of an unexpected error is restarted by the daemon's watchdog; the other
camera never stops, and decisions keep coming from both. In-process daemon (the fault is injected by
making the first session's source raise mid-stream, as a driver error would), the built-in portraits,
no broker: events land in the outbox."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from mpox_aism.kiosk.config import parse_config
from mpox_aism.kiosk.daemon import Daemon
from mpox_aism.pipeline.sources import ImageFolderSource
from tests.conftest import default_model_or_skip

pytestmark = pytest.mark.faults


def test_crashed_camera_is_restarted_and_the_other_keeps_running(tmp_path: Path, monkeypatch) -> None:
    default_model_or_skip()
    from mpox_aism.contracts.sample import builtin_sample_dir

    folders = {cam: builtin_sample_dir(tmp_path / cam) / "normal" for cam in ("flaky", "steady")}
    real_next = ImageFolderSource.__next__
    crashes = {"n": 0}

    def flaky_next(self):  # the first session of camera "flaky" dies at its 7th frame
        frame = real_next(self)
        if self.name == "flaky" and frame.index == 6 and crashes["n"] == 0:
            crashes["n"] += 1
            raise OSError("simulated driver failure: device or resource busy")
        return frame

    monkeypatch.setattr(ImageFolderSource, "__next__", flaky_next)
    monkeypatch.setattr("mpox_aism.kiosk.camera.RESTART_MIN_S", 0.2)
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    cfg = parse_config({
        "station_id": "gate-wd",
        "cameras": [{"name": n, "source": str(d), "hold_frames": 4, "loop": True} for n, d in folders.items()],
        "decision": {"notifiable": ["mpox", "chickenpox", "measles", "bullous", "eczema", "urticaria",
                                    "vasculitis", "normal"]},
        "outbox": {"path": str(tmp_path / "outbox.sqlite3"), "flush_timeout_s": 0},
        "http": {"enabled": False}, "exit_when_done": False})
    daemon = Daemon(cfg, summary_path=tmp_path / "summary.json")
    seen: dict[str, int] = {}

    def watch() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            flaky, steady = daemon.cameras["flaky"], daemon.cameras["steady"]
            if flaky.restarts and flaky.frames > 30 and flaky.last_error is None and steady.frames > 30:
                seen.update(flaky_frames=flaky.frames, steady_frames=steady.frames)
                break
            time.sleep(0.2)
        daemon.request_stop()

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert daemon.run() == 0
    watcher.join()
    flaky, steady = daemon.cameras["flaky"], daemon.cameras["steady"]
    print(f"\nFAULT camera session crash: restarts {flaky.restarts}, errors {flaky.errors}; frames after it "
          f"{flaky.frames}; other camera frames {steady.frames}, errors {steady.errors}; events "
          f"{flaky.events}+{steady.events}")
    assert seen, "the crashed camera was not back within 300 s"
    assert crashes["n"] == 1 and flaky.restarts == 1 and flaky.errors == 1
    assert steady.restarts == 0 and steady.errors == 0
    assert flaky.events > 0 and steady.events > 0
