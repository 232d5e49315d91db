"""Bad input that reaches the kiosk from its cameras and its users, against the real daemon process.

- Frames of zero size, the wrong shape, dtype or layout go through the real pipeline (MediaPipe + the shipped
  model): each is dropped and counted, the next good frame is processed.
- The daemon runs with three cameras: a looping image folder holding corrupt files among a real photo, a video
  cut in half, and a video file that is not a video. Meanwhile bad uploads hit its HTTP API. The daemon must
  keep serving (``/healthz`` 200, a good photo still diagnosed), report the broken camera in ``down``, and
  exit 0 on SIGTERM with the readable frames counted.

Inputs are made from the built-in sample photos (scikit-image / matplotlib), so no ``../shared`` is needed.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from mpox_aism.bench.soak import staff_url
from mpox_aism.pipeline.sources import Frame
from tests.conftest import default_model_or_skip
from tests.faults.conftest import start_daemon, tail, wait_daemon

httpx = pytest.importorskip("httpx", reason="httpx not installed: pip install -e .[dev]")

pytestmark = pytest.mark.faults
TOKEN = "bad-input-token"


def sample_bgr(size: int = 320) -> np.ndarray:
    from mpox_aism.contracts.sample import _photos

    return cv2.resize(next(iter(_photos().values())), (size, size), interpolation=cv2.INTER_AREA)


def write_video(path: Path, frames: int = 40) -> Path:
    """A real MJPG AVI of a moving sample photo (AVI can still be read when cut short; MP4 cannot)."""
    bgr = sample_bgr()
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (bgr.shape[1], bgr.shape[0]))
    for i in range(frames):
        w.write(np.roll(bgr, 3 * i, axis=1))
    w.release()
    return path


def test_pipeline_drops_and_counts_bad_frames() -> None:
    from mpox_aism.inference.backends import load_classifier
    from mpox_aism.pipeline.pipeline import Pipeline, PipelineConfig
    from mpox_aism.pipeline.regions import RegionDetector

    model_dir = default_model_or_skip()
    good = cv2.cvtColor(sample_bgr(), cv2.COLOR_BGR2RGB)
    bad: dict[str, Any] = {
        "zero size": np.zeros((0, 0, 3), np.uint8),
        "zero width": np.zeros((240, 0, 3), np.uint8),
        "zero height": np.zeros((0, 320, 3), np.uint8),
        "grey 2-D": np.zeros((240, 320), np.uint8),
        "four channels": np.zeros((240, 320, 4), np.uint8),
        "float32": good.astype(np.float32),
        "uint16": good.astype(np.uint16),
        "strided view": good[:, ::2],
        "1x1": np.zeros((1, 1, 3), np.uint8),
        "None": None,
        "not an array": "frame",
    }
    with load_classifier("onnxruntime", model_dir) as classifier, RegionDetector() as det:
        pipe = Pipeline(classifier, det, PipelineConfig(detect_stride=1, classify_stride=1))
        index = 0
        for what, image in bad.items():
            pipe.process(Frame(good, index, time.time(), "cam"))  # a good frame between each bad one
            index += 1
            decisions = pipe.process(Frame(image, index, time.time(), "cam")).decisions  # type: ignore[arg-type]
            index += 1
            assert decisions == [] or all(d.state in ("clear", "review", "suspected") for d in decisions), what
        pipe.process(Frame(good, index, time.time(), "cam"))
        list(pipe.finish())
        summary = pipe.stats.summary()
    errors = sum(summary["errors"].values())
    print(f"\nFAULT bad frames: {len(bad)} kinds through the pipeline, {errors} dropped and counted "
          f"{dict(summary['errors'])}, exceptions 0, good frames after each: processed")
    # "1x1" and "strided view" are legal frames (too small for a face / copied to contiguous): not errors
    assert errors >= len(bad) - 2, summary
    assert summary["frames"] == 2 * len(bad) + 1


@pytest.fixture
def broken_inputs(tmp_path: Path) -> dict[str, Path]:
    photos = tmp_path / "photos"
    photos.mkdir()
    ok, jpeg = cv2.imencode(".jpg", sample_bgr())
    assert ok
    data = jpeg.tobytes()
    (photos / "a_real.jpg").write_bytes(data)
    (photos / "b_truncated.jpg").write_bytes(data[: len(data) // 3])
    (photos / "c_empty.jpg").write_bytes(b"")
    (photos / "d_text.png").write_text("this is not an image\n")
    (photos / "e_garbage.jpg").write_bytes(os.urandom(5000))
    clip = write_video(tmp_path / "full.avi")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    return {"photos": photos, "cut": cut, "fake": fake}


def test_daemon_keeps_serving_through_bad_cameras_and_uploads(tmp_path: Path, broken_inputs: dict[str, Path],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    default_model_or_skip()
    from tests.kiosk.web.test_api import png_header_bomb

    cfg = {"station_id": "gate-bad",
           "cameras": [{"name": "photos", "source": str(broken_inputs["photos"]), "hold_frames": 3, "loop": True},
                       {"name": "cut", "source": str(broken_inputs["cut"]), "detect_stride": 1,
                        "classify_stride": 1},
                       {"name": "fake", "source": str(broken_inputs["fake"])}],
           "outbox": {"path": str(tmp_path / "outbox.sqlite3"), "flush_timeout_s": 0},
           # limits out of the way: this test is about what each bad upload is told (limits: tests/kiosk/web)
           "http": {"enabled": True, "port": 0, "max_upload_mb": 0.5,
                    "limits": {"max_rps": 1000, "max_rps_per_client": 1000, "burst": 1000}},
           "exit_when_done": False}
    config = tmp_path / "kiosk.yaml"
    config.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("MPOX_AISM_API_TOKEN", TOKEN)
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    log, summary = tmp_path / "daemon.log", tmp_path / "summary.json"
    proc = start_daemon(config, summary, log)
    try:
        url = None
        deadline = time.monotonic() + 180
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            url = staff_url(log.read_text(errors="replace") if log.exists() else "")
            time.sleep(0.5)
        assert url, f"daemon did not start its HTTP server:\n{tail(log)}"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        _, jpeg = cv2.imencode(".jpg", sample_bgr())
        good = jpeg.tobytes()
        uploads: list[tuple[str, dict[str, Any], int]] = [
            ("no token", {"files": {"image": ("a.jpg", good, "image/jpeg")}, "headers": {}}, 401),
            ("wrong token", {"files": {"image": ("a.jpg", good, "image/jpeg")},
                             "headers": {"Authorization": "Bearer nope"}}, 401),
            ("truncated", {"files": {"image": ("t.jpg", good[: len(good) // 2], "image/jpeg")}}, 400),
            ("not an image", {"files": {"image": ("x.txt", b"hello" * 100, "text/plain")}}, 415),
            ("empty", {"files": {"image": ("e.jpg", b"", "image/jpeg")}}, 400),
            ("bomb", {"files": {"image": ("b.png", png_header_bomb(20_000, 20_000), "image/png")}}, 413),
            ("oversized", {"files": {"image": ("big.jpg", good + bytes(600_000), "image/jpeg")}}, 413),
            ("not multipart", {"content": good, "headers": {**auth, "Content-Type": "image/jpeg"}}, 415),
        ]
        with httpx.Client(base_url=url, timeout=120) as client:
            for what, kwargs, status in uploads:
                headers = kwargs.pop("headers", auth)
                r = client.post("/v1/diagnose", headers=headers, **kwargs)
                assert r.status_code == status, (what, r.status_code, r.text[:300])
                assert isinstance(r.json()["detail"], str), what
            r = client.post("/v1/diagnose", headers=auth, files={"image": ("a.jpg", good, "image/jpeg")})
            assert r.status_code == 200, r.text
            # wait until the cut video has been read to its end and the photo camera has looped
            health: dict[str, Any] = {}
            while time.monotonic() < deadline:
                health = client.get("/healthz").json()
                cams = health.get("cameras", {})
                if cams.get("cut", {}).get("done") and cams.get("photos", {}).get("frames", 0) > 30:
                    break
                time.sleep(1)
        assert proc.poll() is None, f"daemon exited:\n{tail(log)}"
        assert health["status"] == "degraded" and "camera:fake" in health["down"], health
        cams = health["cameras"]
        assert cams["fake"]["done"] and "fake.mp4" in (cams["fake"]["last_error"] or ""), cams["fake"]
        assert cams["cut"]["done"] and cams["cut"]["errors"] == 0 and 10 < cams["cut"]["frames"] < 40, cams["cut"]
        assert not cams["photos"]["done"] and cams["photos"]["errors"] == 0, cams["photos"]
        proc.send_signal(signal.SIGTERM)
        assert wait_daemon(proc, 120) == 0, tail(log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, tail(log)
    for name in ("b_truncated.jpg", "c_empty.jpg", "d_text.png", "e_garbage.jpg"):
        assert name in text, f"no log line names the unreadable {name}:\n{tail(log)}"
    assert "truncated or corrupt" in text
    print(f"\nFAULT bad cameras + uploads: {len(uploads)} bad uploads answered "
          f"{sorted({s for _, _, s in uploads})}, camera 'fake' reported down ({cams['fake']['last_error']}), "
          f"'cut' read {cams['cut']['frames']} of 40 frames, 'photos' {cams['photos']['frames']} frames; "
          f"daemon exit 0 on SIGTERM, tracebacks 0")
