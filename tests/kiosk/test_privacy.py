"""The face check that runs before any image leaves the box, on real pictures."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mpox_aism.kiosk.privacy import FaceGuard
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
