"""Pack ../shared/data small (long side 224 px, JPEG q90) into an ignored folder for the GPU machine.

The packed copy never enters the repository (``/.pack/`` is git-ignored); it only travels to the
device machine for one run and is rebuilt from ``../shared/data`` whenever needed.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def shrink(src: Path, dst: Path, size: int) -> None:
    img = cv2.imread(str(src), cv2.IMREAD_COLOR)
    if img is None:
        print(f"skip unreadable {src}")
        return
    h, w = img.shape[:2]
    scale = size / max(h, w)
    if scale < 1:
        img = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    dst.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(dst.with_suffix(".jpg")) if dst.suffix.lower() != ".jpg" else str(dst), img,
                [cv2.IMWRITE_JPEG_QUALITY, 90])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--shared", default="../shared/data")
    p.add_argument("--out", default=".pack")
    p.add_argument("--size", type=int, default=224)
    a = p.parse_args()
    shared, out = Path(a.shared), Path(a.out)
    for part in ("skin8", "unlabeled"):
        for f in sorted((shared / part).rglob("*")):
            if f.is_file() and f.suffix.lower() in SUFFIXES:
                shrink(f, out / part / f.relative_to(shared / part), a.size)
    shutil.copy(shared / "skin8" / "manifest.csv", out / "skin8" / "manifest.csv")


if __name__ == "__main__":
    main()
