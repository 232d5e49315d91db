"""Linear-probe variants on cached features, k-fold out-of-fold + leave-msid-out, one JSON line each.

The quick screen behind the recipe table in docs/RESULTS.md: it reuses the feature cache that
``mpox-aism cv`` writes (``runs/cv/cache``; run cv for each backbone first) and the same folds,
weights and head, so one variant costs minutes. A spec is ``BACKBONES[,key=value…]``: backbones
``mnv2``, ``lite0``, ``lite2`` joined by ``+`` (features concatenated), keys ``balance``
(class|class_source), ``tta`` (0|1), ``l2`` (colon-separated grid).

    python scripts/probe_variants.py mnv2 "mnv2,balance=class_source" "mnv2+lite2"
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from training.calibration import fit_temperature, softmax
from training.cv import Inputs, ProbeRecipe, run_fold
from training.data import scan_dataset
from training.folds import group_kfold, leave_source_out
from training.metrics import compute_metrics
from training.models import build_model, load_imagenet_weights
from training.probe import feature_cache_key

BACKBONES = {"mnv2": ("mobilenet_v2", 224), "lite0": ("efficientnet_lite0", 224),
             "lite2": ("efficientnet_lite2", 260)}


def main(specs: list[str], data: str = "../shared/data/skin8", cache: str = "runs/cv/cache") -> None:
    torch.set_num_threads(1)
    samples = scan_dataset(data, require_all_classes=True, verify=False)
    y = np.array([s.label for s in samples])

    def features(name: str) -> np.ndarray:
        arch, size = BACKBONES[name]
        model = build_model(arch, image_size=size)
        load_imagenet_weights(model, arch)
        return np.load(f"{cache}/features-{feature_cache_key(model, samples, image_size=size, flip=True)}.npy")

    kfold = group_kfold(samples, 5, seed=0)
    msid = leave_source_out(samples, "msid")
    for spec in specs:
        name, *opts = spec.split(",")
        kw = dict(o.split("=") for o in opts)
        feats = np.concatenate([features(n) for n in name.split("+")], axis=-1)
        recipe = ProbeRecipe(arch=name, image_size=0, balance=kw.get("balance", "class"),
                             tta=kw.get("tta", "0") == "1",
                             l2_grid=tuple(float(v) for v in kw.get("l2", "0.01:0.03:0.1:0.3:1").split(":")))
        inputs = Inputs(model=torch.nn.Identity(), feats=feats)
        oof = np.zeros((len(samples), 8))
        for fold in kfold:
            oof[fold.test] = run_fold(inputs, samples, fold, recipe)[0]
        temperature = fit_temperature(oof, y)
        m = compute_metrics(softmax(oof, temperature), y)
        logits = run_fold(inputs, samples, msid, recipe)[0]
        mm = compute_metrics(softmax(logits, temperature), y[msid.test])
        print(json.dumps({
            "spec": spec, "kfold_macro_f1": round(m["macro_f1"], 3), "kfold_accuracy": round(m["accuracy"], 3),
            "kfold_ece": round(m["ece"], 3), "mpox_recall": round(m["per_class"]["mpox"]["recall"], 3),
            "mpox_precision": round(m["per_class"]["mpox"]["precision"], 3),
            "msid_macro_f1": round(mm["macro_f1"], 3), "msid_mpox_recall": round(mm["per_class"]["mpox"]["recall"], 3),
            "msid_normal_recall": round(mm["per_class"]["normal"]["recall"], 3),
            "per_class_f1": {k: round(v["f1"], 3) for k, v in m["per_class"].items()}}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
