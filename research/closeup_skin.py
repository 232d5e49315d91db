"""Close-up patches of healthy skin (mpox_aism/training/closeups.py): the test, and the change, of session 8.

``OUT/video``: patches of the pipeline's own healthy clip crops, never trained on: the test of
"healthy skin filling the frame is called a disease". ``OUT/dev``: up to ``--per-photo`` patches of
every dev ``normal`` photo, each in its photo's group, for ``cv --derived`` (a patch trains exactly
when its photo does). ``OUT/people``: one patch per people negative, for a second ``cv --negatives``.

    python -m research.healthy_crops --out runs/healthy_crops
    python -m research.closeup_skin --dev ../shared/data/skin8 --healthy runs/healthy_crops --out runs/closeups
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from research.closeups import CLOSEUP, PatchRule, cut_folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dev", required=True, help="the dev set (skin8): its normal photos → OUT/dev")
    p.add_argument("--healthy", required=True,
                   help="research/healthy_crops.py's OUT: its people → OUT/people, its video → OUT/video")
    p.add_argument("--out", default="runs/closeups")
    p.add_argument("--frac", type=float, default=PatchRule.frac, help="patch side as a share of the shorter side")
    p.add_argument("--min-skin", type=float, default=PatchRule.min_skin)
    p.add_argument("--min-side", type=int, default=PatchRule.min_side)
    p.add_argument("--per-photo", type=int, default=2, help="patches per dev photo (one per crop otherwise)")
    p.add_argument("--source", choices=("closeup", "parent"), default="closeup",
                   help="patches' source: their own (one weight share of normal) or their image's")
    args = p.parse_args()
    rule = PatchRule(frac=args.frac, min_skin=args.min_skin, min_side=args.min_side)
    out, healthy = Path(args.out), Path(args.healthy)
    for src, dst, most in ((Path(args.dev), out / "dev", args.per_photo),
                           (healthy / "people", out / "people", 1), (healthy / "video", out / "video", 1)):
        n = cut_folder(src, dst, replace(rule, most=most), source=None if args.source == "parent" else CLOSEUP)
        print(f"{n} patches of {src}'s normal images → {dst}/manifest.csv")


if __name__ == "__main__":
    main()
