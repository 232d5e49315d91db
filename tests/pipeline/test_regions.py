"""Face and hand regions on real footage (../shared/data, read in place), plus input checks.

Hit rates and per-frame times are printed (run with `-s` to see them), not asserted: they depend
on the CPU and on its load.
"""

from __future__ import annotations

import functools
import hashlib
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from mpox_aism.pipeline.mediapipe_models import HAND_TASK, MODELS, ModelFetchError, _Pinned, ensure_models
from mpox_aism.pipeline.regions import Region, RegionDetector, check_frame
from tests.conftest import SHARED_DATA

CLIP = SHARED_DATA / "video" / "short_hamilton_clip.mp4"
PEOPLE = SHARED_DATA / "people"
FACE_PHOTOS = [
    "alex-lacamoire.png",
    "biden.jpg",
    "kit_with_rose.jpg",
    "lin-manuel-miranda.png",
    "obama.jpg",
    "obama2.jpg",
    "obama_and_biden.jpg",
    "two_people.jpg",
]
EVERY = 10  # sample every 10th frame of the clip


def _report(msg: str) -> None:
    print(f"[regions] {msg}")


@functools.cache
def _fetch_models() -> dict[str, Path] | str:
    """The models, or why they are unavailable; cached so an offline machine tries pip only once."""
    try:
        return ensure_models()
    except ModelFetchError as e:
        return f"MediaPipe models could not be fetched: {e}"


@pytest.fixture(scope="module")
def models() -> dict[str, Path]:
    pytest.importorskip("mediapipe.tasks.python.vision", reason="mediapipe (Tasks API) is not installed")
    got = _fetch_models()
    if isinstance(got, str):
        pytest.skip(got)
    return got


@pytest.fixture(scope="module")
def detector(models: dict[str, Path]) -> Iterator[RegionDetector]:
    with RegionDetector(models=models) as d:
        yield d


@pytest.fixture(scope="module")
def clip_frames() -> list[np.ndarray]:
    if not CLIP.is_file():
        pytest.skip(f"real video not found at {CLIP} (../shared/data is absent on this machine)")
    cap = cv2.VideoCapture(str(CLIP))
    assert cap.isOpened(), f"OpenCV could not open {CLIP}"
    frames, i = [], 0
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if i % EVERY == 0:
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            i += 1
    finally:
        cap.release()
    assert frames, f"no frames decoded from {CLIP}"
    return frames


def _timed(det: RegionDetector, frames: list[np.ndarray]) -> tuple[list[list[Region]], float]:
    """Detections per frame and the median ms per frame (after one warm-up call)."""
    det.detect(frames[0])
    out, times = [], []
    for f in frames:
        t0 = time.perf_counter()
        out.append(det.detect(f))
        times.append(time.perf_counter() - t0)
    return out, 1000 * float(np.median(times))


def _assert_boxes_valid(regions: list[Region], frame: np.ndarray) -> None:
    h, w = frame.shape[:2]
    for r in regions:
        assert r.kind in ("face", "hand")
        assert 0 <= r.x0 < r.x1 <= w and 0 <= r.y0 < r.y1 <= h, r
        assert 0.0 <= r.score <= 1.0, r


def test_clip_faces_in_most_frames_and_some_hands(
    models: dict[str, Path], detector: RegionDetector, clip_frames: list[np.ndarray]
) -> None:
    results, ms_all = _timed(detector, clip_frames)
    with RegionDetector(models=models, max_hands=0) as face_only:
        _, ms_face = _timed(face_only, clip_frames)
    for regions, frame in zip(results, clip_frames, strict=True):
        _assert_boxes_valid(regions, frame)
    n = len(clip_frames)
    face_frames = sum(any(r.kind == "face" for r in rs) for rs in results)
    hand_frames = sum(any(r.kind == "hand" for r in rs) for rs in results)
    hands = sum(r.kind == "hand" for rs in results for r in rs)
    _report(
        f"{CLIP.name}: {n} sampled frames ({clip_frames[0].shape[1]}x{clip_frames[0].shape[0]}), "
        f"faces in {face_frames}/{n} ({face_frames / n:.0%}), hands in {hand_frames}/{n} ({hand_frames / n:.0%}), "
        f"{hands} hand boxes"
    )
    _report(f"median ms/frame: face {ms_face:.1f}, face+hand {ms_all:.1f} (hand ≈ {ms_all - ms_face:.1f})")
    assert face_frames >= 0.8 * n, f"faces in only {face_frames}/{n} sampled frames"
    assert hand_frames >= 1, "no hand found in any sampled frame"


def test_clip_full_range_face_model(models: dict[str, Path], clip_frames: list[np.ndarray]) -> None:
    """The full-range model loads and finds faces; its rate is reported next to the short-range one."""
    with RegionDetector(models=models, max_hands=0, face_model="full_range") as det:
        results, ms = _timed(det, clip_frames)
    n = len(clip_frames)
    hits = sum(bool(rs) for rs in results)
    boxes = sum(len(rs) for rs in results)
    _report(f"full-range face model: faces in {hits}/{n} ({hits / n:.0%}), {boxes} boxes, median {ms:.1f} ms/frame")
    assert hits >= n // 2


def test_face_photos(detector: RegionDetector) -> None:
    if not PEOPLE.is_dir():
        pytest.skip(f"real photos not found at {PEOPLE} (../shared/data is absent on this machine)")
    found = {}
    for name in FACE_PHOTOS:
        bgr = cv2.imread(str(PEOPLE / name), cv2.IMREAD_COLOR)
        assert bgr is not None, f"could not read {name}"
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        regions = detector.detect(rgb)
        _assert_boxes_valid(regions, rgb)
        found[name] = sum(r.kind == "face" for r in regions)
    hits = sum(v > 0 for v in found.values())
    _report(f"face photos: a face in {hits}/{len(found)}; faces per photo {found}")
    assert hits >= 0.75 * len(found), found


def test_coco_people_photos_report(detector: RegionDetector) -> None:
    """COCO photos often show people small, turned away or far off: reported, not asserted."""
    photos = sorted(PEOPLE.glob("COCO_*.jpg")) if PEOPLE.is_dir() else []
    if not photos:
        pytest.skip(f"COCO people photos not found in {PEOPLE} (../shared/data is absent on this machine)")
    faces = hands = 0
    for p in photos:
        rgb = cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        regions = detector.detect(rgb)
        _assert_boxes_valid(regions, rgb)
        faces += any(r.kind == "face" for r in regions)
        hands += any(r.kind == "hand" for r in regions)
    _report(f"COCO people photos: face in {faces}/{len(photos)}, hand in {hands}/{len(photos)}")


BAD_FRAMES = {
    "empty": np.zeros((0, 0, 3), np.uint8),
    "zero width": np.zeros((10, 0, 3), np.uint8),
    "float": np.zeros((32, 32, 3), np.float32),
    "gray": np.zeros((32, 32), np.uint8),
    "rgba": np.zeros((32, 32, 4), np.uint8),
    "list": [[[0, 0, 0]]],
    "none": None,
}


@pytest.mark.parametrize("bad", list(BAD_FRAMES), ids=list(BAD_FRAMES))
def test_check_frame_rejects_bad_input(bad: str) -> None:
    with pytest.raises(ValueError, match=r"image|array"):
        check_frame(BAD_FRAMES[bad])


def test_detect_rejects_bad_input_and_accepts_views(detector: RegionDetector) -> None:
    for bad in BAD_FRAMES.values():
        with pytest.raises(ValueError):
            detector.detect(bad)  # type: ignore[arg-type]
    # a strided view (e.g. BGR->RGB by slicing) is fine: it is made contiguous before MediaPipe reads it
    frame = np.zeros((64, 96, 3), np.uint8)
    assert detector.detect(frame[:, :, ::-1]) == []


def test_closed_detector(models: dict[str, Path]) -> None:
    det = RegionDetector(models=models, max_hands=0)
    det.close()
    det.close()
    with pytest.raises(RuntimeError, match="closed"):
        det.detect(np.zeros((8, 8, 3), np.uint8))


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="min_face_score"):
        RegionDetector(min_face_score=1.5)
    with pytest.raises(ValueError, match="max_hands"):
        RegionDetector(max_hands=-1)


def test_region_box_properties() -> None:
    r = Region("face", 10, 20, 50, 80, 0.9)
    assert (r.width, r.height, r.area) == (40, 60, 2400)


def test_models_are_pinned_and_bundle_holds_both_hand_models(models: dict[str, Path]) -> None:

    for key, pin in MODELS.items():
        assert hashlib.sha256(models[key].read_bytes()).hexdigest() == pin.sha256
    with zipfile.ZipFile(models[HAND_TASK]) as z:
        assert sorted(z.namelist()) == ["hand_detector.tflite", "hand_landmarks_detector.tflite"]


def test_sha_mismatch_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wheel whose model bytes differ from the pins is refused (no network needed)."""
    wheel = tmp_path / "mediapipe-0.10.21-fake.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for pin in MODELS.values():
            z.writestr(pin.member, b"not the pinned model")
    cache = tmp_path / "cache"
    with pytest.raises(ModelFetchError, match="sha256 mismatch"):
        ensure_models(cache, wheel=wheel)
    assert not list(cache.glob("*.tflite")), "a mismatching file must not land in the cache"

    # a corrupted cached file is noticed and replaced from the (here: pinned-to-fake) wheel
    fake = {"x": _Pinned("m/x.tflite", hashlib.sha256(b"x").hexdigest())}
    monkeypatch.setattr("mpox_aism.pipeline.mediapipe_models.MODELS", fake)
    monkeypatch.setattr("mpox_aism.pipeline.mediapipe_models._HAND_TASK_MEMBERS", {"hand_detector.tflite": "x"})
    with zipfile.ZipFile(wheel, "a") as z:
        z.writestr("m/x.tflite", b"x")
    (cache / "x.tflite").write_bytes(b"corrupted")
    paths = ensure_models(cache, wheel=wheel)
    assert paths["x"].read_bytes() == b"x"
