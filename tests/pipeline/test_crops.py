import cv2
import numpy as np
import pytest

from mpox_aism.contracts.skin import skin_mask
from mpox_aism.pipeline.crops import CropConfig, CropExtractor, expand_box
from mpox_aism.pipeline.regions import Region

SKIN_RGB = (224, 172, 150)  # a typical light skin tone: Cr≈151, Cb≈110


def _skin_frame(h=240, w=320, texture=True):
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = SKIN_RGB
    if texture:  # lesion-like spots so the crop is not "blurred"
        rng = np.random.default_rng(0)
        for _ in range(60):
            x, y = rng.integers(0, w), rng.integers(0, h)
            cv2.circle(img, (int(x), int(y)), int(rng.integers(2, 6)), (180, 60, 60), -1)
    return img


def test_skin_mask_separates_skin_from_background():
    img = np.zeros((10, 20, 3), np.uint8)
    img[:, :10] = SKIN_RGB
    img[:, 10:] = (40, 90, 200)  # blue background
    m = skin_mask(img)
    assert m[:, :10].all() and not m[:, 10:].any()


def test_expand_box_is_clipped():
    assert expand_box(Region("face", 0, 0, 100, 100, 1.0), 0.25, 110, 300) == (0, 0, 110, 125)


def test_gates_reject_with_reasons():
    frame = _skin_frame()
    ex = CropExtractor(CropConfig(min_size=40))
    crops, rejected = ex(frame, [Region("face", 100, 80, 200, 180, 0.9), Region("hand", 5, 5, 20, 20, 0.9)])
    assert len(crops) == 1 and crops[0].region.kind == "face"
    assert rejected == [(Region("hand", 5, 5, 20, 20, 0.9), "too small")]
    dark = (frame * 0.05).astype(np.uint8)
    assert ex(dark, [Region("face", 100, 80, 200, 180, 0.9)])[1][0][1] == "too dark"
    flat = _skin_frame(texture=False)
    assert ex(flat, [Region("face", 100, 80, 200, 180, 0.9)])[1][0][1] == "too blurred"
    blue = np.zeros_like(frame)
    blue[:] = (40, 90, 200)
    cv2.randn(blue, (40, 90, 200), (30, 30, 30))
    assert ex(blue, [Region("face", 100, 80, 200, 180, 0.9)])[1][0][1] == "too little skin"


def test_close_range_fallback_only_when_skin_fills_the_centre():
    ex = CropExtractor()
    crops, _ = ex(_skin_frame(), [])
    assert len(crops) == 1 and crops[0].region.kind == "close"
    wall = np.zeros((240, 320, 3), np.uint8)
    cv2.randn(wall, (40, 90, 200), (30, 30, 30))
    assert ex(wall, []) == ([], [])
    # with a face present, no close region unless the camera is configured close-range
    face = [Region("face", 100, 80, 200, 180, 0.9)]
    assert [c.region.kind for c in ex(_skin_frame(), face)[0]] == ["face"]
    forced = CropExtractor(CropConfig(close_range=True))
    assert [c.region.kind for c in forced(_skin_frame(), face)[0]] == ["close"]


@pytest.mark.parametrize("kind", ["face", "hand"])
def test_crop_is_a_copy_of_the_expanded_box(kind):
    frame = _skin_frame()
    crops, _ = CropExtractor(CropConfig(expand=0.1))(frame, [Region(kind, 100, 100, 200, 200, 1.0)])
    r = crops[0].region
    assert (r.x0, r.y0, r.x1, r.y1) == (90, 90, 210, 210)
    np.testing.assert_array_equal(crops[0].image, frame[90:210, 90:210])
