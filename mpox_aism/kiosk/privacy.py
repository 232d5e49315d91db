"""The last check before an image leaves the box: is there a face in it?

The decision rule (``events.images_allowed``) already withholds crops of *face* regions. That is not
enough: the privacy fault test found hand crops, expanded around a hand raised to the chin, that held a
whole face. So every crop is shown to a face detector of its own before it is attached; when it finds a
face, or fails, the event goes out without images. MediaPipe's full-range model at score 0.5: on the
8 face photos and 2 built-in portraits shrunk to event size (256 px) it found 10 of 10 faces, and it
flagged 11 of 240 skin photos (many of which do show a face); the short-range model at 0.5 flagged 44.
Fail closed: a missing picture costs staff a look at the live view, a leaked face cannot be recalled.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


class FaceGuard:
    """``contains_face(rgb)``; not thread-safe (MediaPipe graphs): one per camera worker. Close it."""

    def __init__(self, *, min_score: float = 0.5) -> None:
        from mpox_aism.pipeline.regions import RegionDetector

        self._detector = RegionDetector(min_face_score=min_score, max_hands=0, face_model="full_range")

    def contains_face(self, rgb: np.ndarray) -> bool:
        try:
            return any(r.kind == "face" for r in self._detector.detect(rgb))
        except Exception as e:  # cannot tell → treat it as a face
            log.warning("face check failed, withholding the images: %s", e)
            return True

    def close(self) -> None:
        self._detector.close()

    def __enter__(self) -> FaceGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
