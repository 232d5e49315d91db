"""Find face and hand regions in a camera frame, the skin areas the classifier is shown.

Both detectors are MediaPipe Tasks (mediapipe 1.2.3, installed without its opencv-contrib
dependency; see `mpox_aism.pipeline.mediapipe_models` for the pinned models):

- faces: `FaceDetector` with BlazeFace short-range (made for faces within about 2 m of the
  camera, as at a kiosk); `face_model="full_range"` selects the full-range model for people
  further away, which finds small faces but also gives more false boxes.
- hands: `HandLandmarker` with a bundle built from palm_detection_full + hand_landmark_full. Its
  box is the extent of the 21 landmarks plus a margin, because landmarks sit on the joints and the
  fingertip centres while the skin to crop reaches past them.

Both run in IMAGE mode: each frame stands alone, so frames may be skipped, reordered or come from
several cameras. VIDEO mode (hand tracking between frames) was measured on the Hamilton clip: not
faster on this CPU (mean 24 ms against 21 ms per frame) and only slightly more hands found.
Tracking over time belongs to the pipeline's track stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import numpy as np

from mpox_aism.contracts.preprocess import check_image
from mpox_aism.pipeline.mediapipe_models import HAND_TASK, ensure_models

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["HAND_BOX_MARGIN", "Region", "RegionDetector", "check_frame"]

# "close": no face or hand found but the frame is dominated by skin held near the lens (the
# paper's Grade "Others"); made by the crop stage, never by the detector.
RegionKind = Literal["face", "hand", "close"]
REGION_KINDS: tuple[RegionKind, ...] = ("face", "hand", "close")

# Fraction of the landmark box's width/height added on each side of a hand box.
HAND_BOX_MARGIN = 0.15


@dataclass(frozen=True, slots=True)
class Region:
    """A detected face or hand: box in frame pixels, `frame[y0:y1, x0:x1]` is the crop.

    `score` is the detector's confidence. For faces it is BlazeFace's detection score. For hands
    it is the handedness classifier's top score, the only per-hand confidence the Tasks API
    returns; detection and presence thresholds were already applied inside the task.
    """

    kind: RegionKind
    x0: int
    y0: int
    x1: int
    y1: int
    score: float

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return self.width * self.height


def check_frame(frame_rgb: object) -> np.ndarray:
    """Return the frame as a C-contiguous HxWx3 uint8 array, or raise ValueError saying what is wrong.

    Checked here because MediaPipe reads the raw buffer: a wrong dtype or a strided view would be
    misread rather than rejected.
    """
    check_image(frame_rgb)
    return np.ascontiguousarray(frame_rgb)


def _clip_box(x0: float, y0: float, x1: float, y1: float, w: int, h: int) -> tuple[int, int, int, int] | None:
    bx0, by0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    bx1, by1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
    if bx1 <= bx0 or by1 <= by0:
        return None
    return bx0, by0, bx1, by1


class RegionDetector:
    """Faces and hands in RGB frames, as `Region`s. Not thread-safe: use one per thread.

    Call `close()` (or use it as a context manager): the MediaPipe tasks hold native resources, and
    leaving them to garbage collection at interpreter exit prints errors. `max_hands=0` skips the
    hand model (faces only, about 20x faster). `models` defaults to `ensure_models()`.
    """

    def __init__(
        self,
        *,
        min_face_score: float = 0.5,
        min_hand_score: float = 0.5,
        max_hands: int = 4,
        models: Mapping[str, Path] | None = None,
        face_model: Literal["short_range", "full_range"] = "short_range",
    ) -> None:
        for name, v in (("min_face_score", min_face_score), ("min_hand_score", min_hand_score)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if max_hands < 0:
            raise ValueError(f"max_hands must be >= 0, got {max_hands}")
        if face_model not in ("short_range", "full_range"):
            raise ValueError(f"face_model must be 'short_range' or 'full_range', got {face_model!r}")

        # Imported here so that `Region` and `check_frame` work without mediapipe installed.
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        paths = dict(models) if models is not None else ensure_models()
        face_path = paths[f"face_{face_model}"]
        self._face: Any = vision.FaceDetector.create_from_options(
            vision.FaceDetectorOptions(
                base_options=BaseOptions(model_asset_path=str(face_path)),
                running_mode=vision.RunningMode.IMAGE,
                min_detection_confidence=min_face_score,
            )
        )
        self._hand: Any = None
        if max_hands > 0:
            try:
                self._hand = vision.HandLandmarker.create_from_options(
                    vision.HandLandmarkerOptions(
                        base_options=BaseOptions(model_asset_path=str(paths[HAND_TASK])),
                        running_mode=vision.RunningMode.IMAGE,
                        num_hands=max_hands,
                        min_hand_detection_confidence=min_hand_score,
                        min_hand_presence_confidence=min_hand_score,
                    )
                )
            except BaseException:
                self._face.close()
                raise
        self._to_mp_image = lambda frame: mp.Image(image_format=mp.ImageFormat.SRGB, data=frame)

    def detect(self, frame_rgb: np.ndarray) -> list[Region]:
        """Faces then hands, each in the detector's order; raises ValueError for a bad frame."""
        if self._face is None:
            raise RuntimeError("RegionDetector is closed")
        frame = check_frame(frame_rgb)
        h, w = frame.shape[:2]
        image = self._to_mp_image(frame)
        regions: list[Region] = []
        for d in self._face.detect(image).detections:
            b = d.bounding_box
            box = _clip_box(b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height, w, h)
            if box is not None:
                regions.append(Region("face", *box, score=float(d.categories[0].score)))
        if self._hand is not None:
            result = self._hand.detect(image)
            for landmarks, handedness in zip(result.hand_landmarks, result.handedness, strict=True):
                xs = np.array([p.x for p in landmarks]) * w
                ys = np.array([p.y for p in landmarks]) * h
                mx = HAND_BOX_MARGIN * (xs.max() - xs.min())
                my = HAND_BOX_MARGIN * (ys.max() - ys.min())
                box = _clip_box(xs.min() - mx, ys.min() - my, xs.max() + mx, ys.max() + my, w, h)
                if box is not None:
                    score = float(handedness[0].score) if handedness else 0.0
                    regions.append(Region("hand", *box, score=score))
        return regions

    def close(self) -> None:
        """Release the native tasks; safe to call twice."""
        for task in (self._hand, self._face):
            if task is not None:
                task.close()
        self._face = self._hand = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
