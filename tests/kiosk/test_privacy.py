"""The face check that runs before any image leaves the box, on real pictures."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mpox_aism.kiosk.config import PrivacyConfig
from mpox_aism.kiosk.privacy import FaceGuard, ImagePolicy
from mpox_aism.pipeline.decider import Decision
from tests.conftest import SKIN8


@pytest.fixture(scope="module")
def guard():
    with FaceGuard() as g:
        yield g


def _portraits() -> list[np.ndarray]:
    from mpox_aism.contracts.sample import _photos

    return [cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) for bgr in _photos().values()]


def test_portraits_and_their_crops_contain_a_face(guard: FaceGuard) -> None:
    for rgb in _portraits():
        assert guard.contains_face(rgb)
        small = cv2.resize(rgb, (256, 256), interpolation=cv2.INTER_AREA)  # what an event would carry
        assert guard.contains_face(small)


def test_lesion_photos_mostly_keep_their_images(guard: FaceGuard) -> None:
    """Withholding is not free (staff lose the picture): nearly all mpox photos must pass."""
    assert not guard.contains_face(np.full((256, 256, 3), 128, np.uint8))
    if not (SKIN8 / "mpox").is_dir():
        pytest.skip(f"real skin photos not found at {SKIN8}")
    photos = sorted((SKIN8 / "mpox").glob("*.jpg"))
    flagged = [p.name for p in photos if guard.contains_face(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB))]
    assert len(flagged) <= len(photos) // 10, flagged


def test_a_check_that_fails_counts_as_a_face(guard: FaceGuard) -> None:
    assert guard.contains_face(np.zeros((0, 0, 3), np.uint8))  # fail closed
    assert guard.contains_face("not an image")  # type: ignore[arg-type]


def _decision(kind: str, crop: np.ndarray) -> Decision:
    return Decision(track_id=1, state="suspected", label="mpox", probability=0.9, probabilities={"mpox": 0.9},
                    n_crops=3, region_kinds=[kind], first_timestamp=0.0, last_timestamp=1.0, best_crop=crop,
                    first_frame=0, last_frame=3, best_kind=kind)


def test_the_image_policy_in_its_order(guard: FaceGuard) -> None:
    """Settings first, then the region kind, then the camera's face check; no guard where one is needed = a face."""
    portrait = _portraits()[0]
    plain = np.full((256, 256, 3), 128, np.uint8)
    default = ImagePolicy(PrivacyConfig())
    assert default.needs_guard
    assert default.verdict(_decision("hand", plain), guard) == "attach"
    assert default.verdict(_decision("hand", portrait), guard) == "face_seen"  # a hand crop holding a face
    assert default.verdict(_decision("face", plain), guard) == "face_region"
    assert default.verdict(_decision("hand", plain), None) == "face_seen"  # cannot tell: fail closed
    off = ImagePolicy(PrivacyConfig(publish_crops=False))
    assert not off.needs_guard and off.guard() is None
    assert off.verdict(_decision("hand", plain), guard) == "off"
    faces = ImagePolicy(PrivacyConfig(allow_full_face=True))
    assert not faces.needs_guard and faces.verdict(_decision("face", portrait), None) == "attach"
