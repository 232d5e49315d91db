"""Fetch and pin the MediaPipe detector models used by `mpox_aism.pipeline.regions`.

mediapipe 1.2.3 (the Tasks API we run) ships no model files, and the kiosk must not depend on a
model URL that can change under us. mediapipe 0.10.21's wheel on PyPI still ships the Apache-2.0
.tflite models, so we download that wheel with pip (nothing installed: it is only a zip), take the
few models we need, and check each against a sha256 pinned here. The hand model for the Tasks
`HandLandmarker` is a `.task` bundle, which we build from the two hand .tflite files.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "HAND_TASK",
    "MEDIAPIPE_WHEEL",
    "MODELS",
    "ModelFetchError",
    "default_cache_dir",
    "ensure_models",
]

MEDIAPIPE_WHEEL = "mediapipe==0.10.21"
# Always the same wheel whatever the host (the .tflite files inside are platform independent), so
# the pins below hold on an aarch64 kiosk as well as on an x86 workstation.
_PIP_WHEEL_SELECT = (
    "--only-binary=:all:",
    "--platform",
    "manylinux_2_28_x86_64",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
)


@dataclass(frozen=True)
class _Pinned:
    member: str  # path inside the wheel
    sha256: str


# sha256 of the files inside mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl
# (the wheel itself: 05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3).
MODELS: dict[str, _Pinned] = {
    "face_short_range": _Pinned(
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    ),
    "face_full_range": _Pinned(
        "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    ),
    "palm_detection": _Pinned(
        "mediapipe/modules/palm_detection/palm_detection_full.tflite",
        "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54",
    ),
    "hand_landmark": _Pinned(
        "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
        "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3",
    ),
}

# Key of the built HandLandmarker bundle in the dict `ensure_models` returns, and the member names
# the Tasks HandLandmarker looks for inside a .task zip.
HAND_TASK = "hand_landmarker_task"
_HAND_TASK_MEMBERS = {"hand_detector.tflite": "palm_detection", "hand_landmarks_detector.tflite": "hand_landmark"}
_ZIP_DATE = (2025, 1, 31, 0, 0, 0)  # fixed, so the bundle is byte-identical on every machine


class ModelFetchError(RuntimeError):
    """The models could not be downloaded, or a file does not match its pinned sha256."""


def default_cache_dir() -> Path:
    """`$MPOX_AISM_CACHE/mediapipe`, else `~/.cache/mpox-aism/mediapipe`."""
    root = os.environ.get("MPOX_AISM_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "mpox-aism") / "mediapipe"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_ok(path: Path, sha256: str) -> bool:
    return path.is_file() and _sha256(path.read_bytes()) == sha256


def _bundle_ok(path: Path) -> bool:
    """A bundle is good when both members match their pins (its own bytes depend on zip details)."""
    try:
        with zipfile.ZipFile(path) as z:
            return sorted(z.namelist()) == sorted(_HAND_TASK_MEMBERS) and all(
                _sha256(z.read(name)) == MODELS[key].sha256 for name, key in _HAND_TASK_MEMBERS.items()
            )
    except (OSError, zipfile.BadZipFile):
        return False


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a concurrent reader never sees half a model."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a kiosk service user may read a cache filled by another
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *_PIP_WHEEL_SELECT, MEDIAPIPE_WHEEL, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ModelFetchError(f"could not run {' '.join(cmd)}: {e}") from e
    wheels = sorted(dest.glob("mediapipe-*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise ModelFetchError(
            f"pip could not download {MEDIAPIPE_WHEEL} (exit {proc.returncode}); no network or no PyPI access?\n"
            + "\n".join(tail)
        )
    return wheels[0]


def _extract(wheel: Path, wanted: dict[str, _Pinned], cache: Path) -> None:
    try:
        with zipfile.ZipFile(wheel) as z:
            for key, pin in wanted.items():
                try:
                    data = z.read(pin.member)
                except KeyError as e:
                    raise ModelFetchError(f"{wheel.name} has no {pin.member}") from e
                got = _sha256(data)
                if got != pin.sha256:
                    raise ModelFetchError(
                        f"sha256 mismatch for {key} ({pin.member} in {wheel.name}): expected {pin.sha256}, got {got}. "
                        "The downloaded wheel is not the one the pins were taken from; refusing to use it."
                    )
                _write_atomic(cache / Path(pin.member).name, data)
    except zipfile.BadZipFile as e:
        raise ModelFetchError(f"{wheel} is not a valid wheel: {e}") from e


def _build_hand_task(cache: Path, path: Path) -> None:
    """Zip the palm detector and hand landmark model under the names HandLandmarker expects."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
            for name, key in sorted(_HAND_TASK_MEMBERS.items()):
                info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
                z.writestr(info, (cache / Path(MODELS[key].member).name).read_bytes())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def ensure_models(cache_dir: Path | str | None = None, *, wheel: Path | str | None = None) -> dict[str, Path]:
    """Return paths of the pinned models, fetching them once into the cache.

    Keys: those of `MODELS` (the .tflite files) plus `HAND_TASK` (the HandLandmarker bundle).
    `wheel` is an already downloaded mediapipe 0.10.21 wheel, for machines without PyPI access.
    Cached files are re-checked on every call; a bad one is fetched again, and a fresh file that
    does not match its pin raises `ModelFetchError`.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    paths = {key: cache / Path(pin.member).name for key, pin in MODELS.items()}
    missing = {key: pin for key, pin in MODELS.items() if not _file_ok(paths[key], pin.sha256)}
    if missing:
        if wheel is not None:
            _extract(Path(wheel), missing, cache)
        else:
            with tempfile.TemporaryDirectory(prefix="mpox-aism-mediapipe-") as tmp:
                _extract(_download_wheel(Path(tmp)), missing, cache)
    task = cache / "hand_landmarker.task"
    if not _bundle_ok(task):
        _build_hand_task(cache, task)
        if not _bundle_ok(task):
            raise ModelFetchError(f"could not build a valid {task}")
    return {**paths, HAND_TASK: task}
