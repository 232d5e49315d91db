"""Temperature and out-of-fold ECE of the k-fold probe heads refitted at each fixed L2 penalty.

Shows why ``cv --ship`` calibrates the shipped head at its own penalty: the recipe's temperature
comes from fold heads that each chose theirs. Reads the feature cache of an earlier ``mpox-aism cv``.

    python -m research.calibration_by_l2 --data ../shared/data/skin8 --arch mobilenet_v2+efficientnet_lite2 \\
        --image-size 224 --balance class_source --negatives runs/healthy_crops/people \\
        --cache runs/cv/cache --recipe-temperature 1.375
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from mpox_aism.contracts.decision import softmax
from mpox_aism.training import cv
from mpox_aism.training.calibration import fit_temperature
from mpox_aism.training.data import scan_dataset
from mpox_aism.training.folds import group_kfold
from mpox_aism.training.metrics import expected_calibration_error
from mpox_aism.training.probe import BALANCES, DEFAULT_L2_GRID, cached_features


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--arch", required=True)
    p.add_argument("--image-size", type=int, required=True)
    p.add_argument("--balance", choices=BALANCES, default="class")
    p.add_argument("--negatives", default=None)
    p.add_argument("--cache", required=True)
    p.add_argument("--recipe-temperature", type=float, default=None, help="also the ECE at this T")
    p.add_argument("--l2", type=float, nargs="+", default=list(DEFAULT_L2_GRID))
    args = p.parse_args()

    recipe = cv.ProbeRecipe(arch=args.arch, image_size=args.image_size, balance=args.balance)
    samples = scan_dataset(args.data)
    negatives = scan_dataset(args.negatives) if args.negatives else []
    model = cv.build_probe_model(recipe)
    parts = [samples, negatives] if negatives else [samples]
    feats = np.concatenate([cached_features(Path(args.cache), model, part, image_size=args.image_size, flip=True,
                                            workers=1, desc=args.arch) for part in parts])
    pool, dev = samples + negatives, len(samples)
    y = np.array([s.label for s in samples])
    folds = [cv._with_negatives(f, np.arange(dev, len(pool))) for f in group_kfold(samples, recipe.folds, seed=0)]
    extra = " at the recipe's T |" if args.recipe_temperature else ""
    print("| fixed L2 | its T | out-of-fold ECE at its T |" + extra)
    for l2 in args.l2:
        fixed = dataclasses.replace(recipe, l2_grid=(l2,))
        oof, _ = cv.out_of_fold(cv.Inputs(model=model, feats=feats), pool, folds, fixed, n=dev, quiet=True)
        t = fit_temperature(oof, y)
        row = f"| {l2:g} | {t:.3f} | {expected_calibration_error(softmax(oof, t), y):.3f} |"
        if args.recipe_temperature:
            row += f" {expected_calibration_error(softmax(oof, args.recipe_temperature), y):.3f} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
