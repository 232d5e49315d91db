"""Whether an event may carry images: the one rule, in one place.

An event's lesion crop and its heat map are the only pictures that leave the box. The rule, in order:

1. ``privacy.publish_crops`` off → never.
2. The decision's best crop is of a *face* region → only with ``privacy.allow_full_face``.
3. Any other crop → only if the camera's own face detector (:class:`FaceGuard`) finds no face in it.
   The privacy fault test found hand crops, expanded around a hand raised to the chin, that held a
   whole face, so the region kind alone is not enough. MediaPipe's full-range model at score 0.5: on
   the 8 face photos and 2 built-in portraits shrunk to event size (256 px) it found 10 of 10 faces,
   and it flagged 11 of 240 skin photos (many of which do show a face); the short-range model at 0.5
   flagged 44.

Fail closed: a check that fails counts as a face. A missing picture costs staff a look at the live
view; a leaked face cannot be recalled. The camera worker opens the guard (:meth:`ImagePolicy.guard`,
one per camera: MediaPipe graphs are not thread-safe), the event sink asks :meth:`ImagePolicy.verdict`.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

from mpox_aism.kiosk.config import PrivacyConfig
from mpox_aism.pipeline.decider import Decision

log = logging.getLogger(__name__)

Verdict = Literal["attach", "off", "face_region", "face_seen"]


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


class ImagePolicy:
    """The rule above for one kiosk's ``privacy`` settings."""

    def __init__(self, privacy: PrivacyConfig) -> None:
        self.privacy = privacy

    @property
    def needs_guard(self) -> bool:
        """A face check is needed when crops may leave and full faces may not."""
        return self.privacy.publish_crops and not self.privacy.allow_full_face

    def guard(self) -> FaceGuard | None:
        """A new face guard for one camera worker, or None when the settings need none."""
        return FaceGuard() if self.needs_guard else None

    def verdict(self, decision: Decision, guard: FaceGuard | None) -> Verdict:
        """``attach``, or why not: ``off`` (rule 1), ``face_region`` (rule 2), ``face_seen`` (rule 3)."""
        if not self.privacy.publish_crops:
            return "off"
        if self.privacy.allow_full_face:
            return "attach"
        if decision.best_kind == "face":
            return "face_region"
        if guard is None or guard.contains_face(decision.best_crop):
            return "face_seen"  # no guard where one is needed cannot tell: fail closed
        return "attach"
