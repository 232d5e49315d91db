"""How many real photos the diagnosis API's photo checks send to a person, and what they catch.

The checks (``kiosk.config.PhotoChecks``: brightness, sharpness at 224 px, noise, skin share) run on
each dev photo as the network sees it; every photo failing one is a cost (a real photo answered
``review`` / ``unfamiliar``). The synthetic images are what they must catch. Prints one JSON object.

    python -m research.photo_checks [--data ../shared/data/skin8]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from mpox_aism.contracts.images import load_rgb
from mpox_aism.contracts.labels import LABELS
from mpox_aism.contracts.preprocess import resize_square
from mpox_aism.kiosk.config import PhotoChecks
from mpox_aism.pipeline.crops import ImageMeasures
from mpox_aism.training.data import scan_dataset

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def synthetic() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    checker = (np.indices((300, 300)).sum(0) // 30 % 2).astype(bool)
    tiles = np.zeros((300, 300, 3), np.uint8)
    tiles[checker], tiles[~checker] = (220, 180, 150), (150, 100, 70)
    return {"grey": np.full((300, 300, 3), 128, np.uint8), "black": np.zeros((300, 300, 3), np.uint8),
            "white": np.full((300, 300, 3), 255, np.uint8),
            "noise": rng.integers(0, 256, (300, 300, 3), dtype=np.uint8),
            "skin-coloured flat": np.full((300, 300, 3), (210, 160, 130), np.uint8),
            "skin-coloured tiles": tiles}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(SHARED / "skin8"))
    args = p.parse_args()
    c = PhotoChecks()
    samples = scan_dataset(Path(args.data))
    failed: Counter[str] = Counter()
    by_class: Counter[str] = Counter()
    n_class: Counter[str] = Counter()
    sharp = []
    for s in samples:
        m = ImageMeasures.of(resize_square(load_rgb(s.path), 224))
        sharp.append(m.sharpness)
        why = c.problem(m)  # as DiagnosisService.check
        n_class[LABELS[s.label]] += 1
        if why:
            failed[why] += 1
            by_class[LABELS[s.label]] += 1
    print(json.dumps({
        "checks": c.model_dump(), "n_dev": len(samples), "dev_failed": sum(failed.values()) / len(samples),
        "dev_failed_by_check": dict(failed),
        "dev_failed_by_class": {k: round(by_class[k] / n_class[k], 4) for k in LABELS if n_class[k]},
        "dev_sharpness_max": round(max(sharp), 1),
        "synthetic": {k: c.problem(ImageMeasures.of(resize_square(v, 224))) for k, v in synthetic().items()},
    }, indent=2))


if __name__ == "__main__":
    main()
