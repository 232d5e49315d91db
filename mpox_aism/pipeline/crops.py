"""Regions → skin crops: expand, gate (size, blur, darkness, skin share), close-range fallback.

Skin is measured with the floor's YCrCb rule (``mpox_aism.contracts.skin``). Sharpness is the
variance of the Laplacian of the grey crop (below ~20 a 224 px crop is motion-blurred or out of
focus); darkness is the mean grey level.

Close-range mode: MediaPipe finds a face or hand in only a few real mpox close-ups, so when a
frame has no face/hand region but skin fills its centre (or the camera is configured as
close-range), the central skin area itself becomes a region of kind ``close``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from mpox_aism.contracts.skin import skin_mask
from mpox_aism.pipeline.regions import Region


def sharpness(rgb: np.ndarray) -> float:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


@dataclass(frozen=True)
class ImageMeasures:
    """What the gates look at in one image: skin share, sharpness, mean grey level, mean saturation."""

    skin: float
    sharpness: float
    brightness: float
    saturation: float = 255.0  # mean HSV saturation 0..255; under MONOCHROME the photo has no colour to judge

    MONOCHROME = 5.0  # a greyscale photo (old clinical photos are): skin colour cannot be measured in it

    @classmethod
    def of(cls, rgb: np.ndarray) -> ImageMeasures:
        return cls(float(skin_mask(rgb).mean()), sharpness(rgb), float(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).mean()),
                   float(cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1].mean()))

    @property
    def monochrome(self) -> bool:
        return self.saturation < self.MONOCHROME

    def problem(self, *, min_brightness: float, min_sharpness: float, min_skin: float,
                max_sharpness: float = float("inf")) -> str | None:
        """Why the image cannot be classified, or None. Darkness first: a dark image also has little
        Laplacian variance, but "too dark" is the cause. Above ``max_sharpness`` the "detail" is noise or a
        pattern (no photo of skin has that much: the dev photos' largest, at 224 px, is about 3,400)."""
        if self.brightness < min_brightness:
            return "too dark"
        if self.sharpness < min_sharpness:
            return "too blurred"
        if self.sharpness > max_sharpness:
            return "noise, not a photo of skin"
        if self.skin < min_skin:
            return "too little skin"
        return None


@dataclass(frozen=True)
class CropConfig:
    """Crop-stage settings (the kiosk config mirrors these fields)."""

    expand: float = 0.25  # fraction of the box width/height added on each side, to include surrounding skin
    min_size: int = 40  # px, shorter side of the expanded crop
    min_sharpness: float = 15.0  # variance of the Laplacian
    min_brightness: float = 35.0  # mean grey level 0..255
    min_skin: float = 0.20  # share of skin pixels in the crop
    close_range: bool = False  # camera always shows skin near the lens: always use the centre region
    close_min_skin: float = 0.35  # share of skin in the frame centre that triggers close-range mode
    close_fraction: float = 0.8  # side of the central box, as a share of the frame


@dataclass(frozen=True)
class Crop:
    """A skin crop ready for the classifier, with where it came from and why it passed."""

    image: np.ndarray  # RGB uint8
    region: Region
    skin: float
    sharpness: float
    brightness: float
    quality: float = field(default=0.0)  # higher = better; picks the event's best crop


def expand_box(r: Region, frac: float, w: int, h: int) -> tuple[int, int, int, int]:
    dx, dy = frac * (r.x1 - r.x0), frac * (r.y1 - r.y0)
    return (max(0, int(r.x0 - dx)), max(0, int(r.y0 - dy)), min(w, int(np.ceil(r.x1 + dx))),
            min(h, int(np.ceil(r.y1 + dy))))


def centre_region(frame: np.ndarray, fraction: float) -> Region:
    h, w = frame.shape[:2]
    bw, bh = int(w * fraction), int(h * fraction)
    x0, y0 = (w - bw) // 2, (h - bh) // 2
    return Region("close", x0, y0, x0 + bw, y0 + bh, score=1.0)


class CropExtractor:
    """``(frame, regions) → (crops, rejected)``; ``rejected`` holds (region, reason) for the metrics."""

    def __init__(self, config: CropConfig | None = None):
        self.config = config or CropConfig()

    def close_range_region(self, frame: np.ndarray, regions: list[Region]) -> Region | None:
        c = self.config
        if regions and not c.close_range:
            return None
        centre = centre_region(frame, c.close_fraction)
        if c.close_range:
            return centre
        share = float(skin_mask(frame[centre.y0:centre.y1, centre.x0:centre.x1]).mean())
        return Region("close", centre.x0, centre.y0, centre.x1, centre.y1, score=share) \
            if share >= c.close_min_skin else None

    def __call__(self, frame: np.ndarray, regions: list[Region]) -> tuple[list[Crop], list[tuple[Region, str]]]:
        c = self.config
        h, w = frame.shape[:2]
        close = self.close_range_region(frame, regions)
        candidates = [close] if close is not None and c.close_range else [*regions, *([close] if close else [])]
        crops, rejected = [], []
        for r in candidates:
            x0, y0, x1, y1 = (r.x0, r.y0, r.x1, r.y1) if r.kind == "close" else expand_box(r, c.expand, w, h)
            img = frame[y0:y1, x0:x1]
            if min(img.shape[:2]) < c.min_size:
                rejected.append((r, "too small"))
                continue
            m = ImageMeasures.of(img)
            reason = m.problem(min_brightness=c.min_brightness, min_sharpness=c.min_sharpness, min_skin=c.min_skin)
            if reason:
                rejected.append((r, reason))
                continue
            quality = m.skin * min(1.0, m.sharpness / 200.0) * min(img.shape[:2])
            crops.append(Crop(np.ascontiguousarray(img), Region(r.kind, x0, y0, x1, y1, r.score), m.skin,
                              m.sharpness, m.brightness, quality))
        return crops, rejected
