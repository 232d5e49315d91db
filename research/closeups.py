"""Close-up patches of healthy skin: what a kiosk camera held near a face or hand shows.

Why: the ``normal`` photos here are whole hands, feet, bodies and stock-photo faces on clean
backgrounds; no photo of any class shows healthy skin filling the frame, while every disease photo
is a close-up, so a classifier may learn "skin fills the frame → a disease" (docs/RESULTS.md,
session 8: the default called 47 % of such patches of the healthy clips mpox).

A patch is the square of side ``frac`` × the shorter side, on a 5×5 grid of positions, with the
largest share of skin by the crop stage's own rule (``mpox_aism.contracts.skin.skin_mask``); it is kept if
that share is ≥ ``min_skin`` and its side ≥ ``min_side`` px. Only ``normal`` images are cut: a
patch of a disease photo may hold no lesion and would carry a wrong label. A patch gets the source
``closeup`` (one weight share of ``normal`` under ``--balance class_source``) or its image's, and
its image's group, and names that image in the manifest column ``parent`` (``cv --derived``).
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mpox_aism.contracts.images import load_rgb
from mpox_aism.contracts.skin import skin_mask
from mpox_aism.training.modelcard import CLOSEUP

FIELDS = ["path", "label", "source", "group", "parent"]


@dataclass(frozen=True)
class PatchRule:
    """Where a close-up patch is cut and when it is kept."""

    frac: float = 0.4  # side of the square, as a share of the image's shorter side
    min_skin: float = 0.9  # share of skin pixels the patch must reach
    min_side: int = 32  # px; smaller patches are not cut
    most: int = 1  # patches per image, non-overlapping, the most skin-filled first

    def __post_init__(self) -> None:
        if not (0 < self.frac <= 1 and 0 <= self.min_skin <= 1 and self.min_side >= 1 and self.most >= 0):
            raise ValueError(f"patch rule out of range: {self}; need 0 < frac ≤ 1, 0 ≤ min_skin ≤ 1, "
                             "min_side ≥ 1, most ≥ 0")


@dataclass(frozen=True)
class Patch:
    """One square cut of an image, with its share of skin pixels and where it was cut."""

    image: np.ndarray  # RGB uint8
    skin: float
    box: tuple[int, int, int, int]  # x0, y0, x1, y1


def skin_patches(rgb: np.ndarray, rule: PatchRule = PatchRule()) -> list[Patch]:
    """Up to ``rule.most`` non-overlapping square patches of ``rgb``, the most skin-filled first.

    A 5×5 grid of positions (corners and edges included) is enough: the patch is 0.4 of the shorter
    side, so neighbouring positions overlap and every skin area of that size is nearly covered.
    """
    h, w = rgb.shape[:2]
    s = int(min(h, w) * rule.frac)
    if s < rule.min_side:
        return []
    skin = skin_mask(rgb)
    found = [(float(skin[y:y + s, x:x + s].mean()), (int(x), int(y), int(x) + s, int(y) + s))
             for y in np.linspace(0, h - s, 5).astype(int) for x in np.linspace(0, w - s, 5).astype(int)]
    kept: list[Patch] = []
    for share, (x0, y0, x1, y1) in sorted(found, key=lambda f: -f[0]):
        if share < rule.min_skin or len(kept) == rule.most:
            break
        if any(x0 < k.box[2] and k.box[0] < x1 and y0 < k.box[3] and k.box[1] < y1 for k in kept):
            continue
        kept.append(Patch(rgb[y0:y1, x0:x1].copy(), share, (x0, y0, x1, y1)))
    return kept


def cut_folder(src: Path, out: Path, rule: PatchRule = PatchRule(), *, source: str | None = CLOSEUP) -> int:
    """Patches of every ``normal`` image in ``src/manifest.csv`` → the labeled folder ``out``; how many.

    ``source``: every patch's source (its own weight share under ``class_source``), or ``None`` for
    its image's (the patch shares its photo's share, as a view of that photo).
    """
    with (src / "manifest.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["label"] == "normal"]
    (out / "normal").mkdir(parents=True, exist_ok=True)
    for stale in (out / "normal").glob("*_close*.png"):  # an earlier cut's patches are not this one's
        stale.unlink()
    twice = sorted(s for s, n in Counter(Path(r["path"]).stem for r in rows).items() if n > 1)
    if twice:  # one patch file would stand for two photos (and two groups)
        raise ValueError(f"{src}: normal images share a file stem ({', '.join(twice[:3])}); patches are named by it")
    written = []
    for r in rows:
        for i, p in enumerate(skin_patches(load_rgb(src / r["path"]), rule)):
            name = f"normal/{Path(r['path']).stem}_close{i}.png"
            cv2.imwrite(str(out / name), cv2.cvtColor(p.image, cv2.COLOR_RGB2BGR))
            written.append({"path": name, "label": "normal", "source": source or r.get("source", ""),
                            "group": r.get("group") or r["path"], "parent": r["path"]})
    with (out / "manifest.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(written)
    return len(written)
