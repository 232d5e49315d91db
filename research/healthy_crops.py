"""The camera pipeline's own crops of healthy people, as a labeled folder: every crop is ``normal``.

None of ``../shared/data/video`` and ``../shared/data/people`` shows skin disease, and none of it
trains any model, so the share of these crops called something else — above all mpox — is a false
alert rate measured on what a kiosk actually classifies (faces and hands from a camera, not
dermatology photos). Two labeled folders are written under OUT (git-ignored ``runs/``), each with a
manifest whose group is one person/clip: ``OUT/people`` (the still photos of ~20 people: used as
``cv --negatives``, healthy camera-like skin the dermatology sources lack) and ``OUT/video`` (the
two clips: never trained on, scored with ``mpox-aism evaluate --data OUT/video``).

    python -m research.healthy_crops --out runs/healthy_crops
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import cv2

from mpox_aism.contracts.images import load_rgb
from mpox_aism.pipeline.crops import CropExtractor
from mpox_aism.pipeline.regions import RegionDetector
from mpox_aism.pipeline.sources import open_source

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/healthy_crops")
    p.add_argument("--every", type=int, default=3, help="take every Nth video frame")
    args = p.parse_args()
    out = Path(args.out)
    rows: dict[str, list[dict]] = {"people": [], "video": []}
    extractor = CropExtractor()
    with RegionDetector() as det:
        def take(image, part: str, source: str, group: str, stem: str) -> None:
            crops, _ = extractor(image, det.detect(image))
            (out / part / "normal").mkdir(parents=True, exist_ok=True)
            for i, c in enumerate(crops):
                name = f"normal/{stem}_{c.region.kind}{i}.png"
                cv2.imwrite(str(out / part / name), cv2.cvtColor(c.image, cv2.COLOR_RGB2BGR))
                rows[part].append({"path": name, "label": "normal", "source": source, "group": group,
                                   "kind": c.region.kind})

        for clip in ("short_hamilton_clip.mp4", "openpose_video.avi"):
            with open_source(str(SHARED / "video" / clip)) as src:
                for frame in src:
                    if frame.index % args.every == 0:
                        take(frame.image, "video", clip.split(".")[0], clip,
                             f"{clip.split('.')[0]}_{frame.index:04d}")
        for photo in sorted((SHARED / "people").iterdir()):
            take(load_rgb(photo), "people", "people", photo.name, photo.stem)
    for part, kept in rows.items():
        with (out / part / "manifest.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["path", "label", "source", "group", "kind"])
            w.writeheader()
            w.writerows(kept)
        print(f"{len(kept)} crops → {out / part}/manifest.csv")


if __name__ == "__main__":
    main()
