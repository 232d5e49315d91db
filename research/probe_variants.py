"""Linear-probe variants on cached features, k-fold out-of-fold + leave-msid-out, one JSON line each.

The quick screen behind the recipe table in docs/RESULTS.md: it reuses the feature cache that
``mpox-aism cv`` writes (``runs/cv/cache``; run cv for each backbone first) and the same folds,
weights and head, so one variant costs minutes. A spec is ``BACKBONES[,key=value…]``: backbones
``mnv2``, ``lite0``, ``lite2`` joined by ``+`` (features concatenated), keys ``balance``
(class|class_source), ``l2`` (colon-separated grid), ``drop`` (a source left out of
every training side; its photos are still tested in the k-fold), ``neg`` (a source of the healthy
crops, e.g. ``people``, added as ``normal`` to every training side — those crops are then not
scored; the others are).

Where ``runs/healthy_crops/{people,video}`` exist (``research/healthy_crops.py``: the pipeline's crops
of healthy people), the variant is also fitted on every photo and scored there: the share of healthy crops
called mpox, and called mpox with p ≥ 0.6 (what becomes an alert).

    python -m research.probe_variants mnv2 "mnv2,balance=class_source" "mnv2+lite2"
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from mpox_aism.contracts.decision import softmax
from mpox_aism.model.zoo import build_model, load_imagenet_weights
from mpox_aism.training.calibration import fit_temperature
from mpox_aism.training.cv import Inputs, ProbeRecipe, out_of_fold, run_fold
from mpox_aism.training.data import scan_dataset
from mpox_aism.training.folds import Fold, group_kfold, leave_source_out
from mpox_aism.training.metrics import HealthyCheck, compute_metrics
from mpox_aism.training.probe import cached_features, feature_cache_key, fit_head, sample_weights

BACKBONES = {"mnv2": ("mobilenet_v2", 224), "lite0": ("efficientnet_lite0", 224),
             "lite2": ("efficientnet_lite2", 260)}


def main(specs: list[str], data: str = "../shared/data/skin8", cache: str = "runs/cv/cache",
         healthy_dir: str = "runs/healthy_crops") -> None:
    torch.set_num_threads(1)
    samples = scan_dataset(data, require_all_classes=True, verify=False)
    healthy = [s for part in ("people", "video") if Path(healthy_dir, part, "manifest.csv").is_file()
               for s in scan_dataset(Path(healthy_dir, part), verify=False)]
    y = np.array([s.label for s in samples])
    sources = [s.source for s in samples]

    def features(name: str, which: list) -> np.ndarray:
        arch, size = BACKBONES[name]
        model = build_model(arch, image_size=size)
        load_imagenet_weights(model, arch)
        if which is samples:  # written by `mpox-aism cv`
            return np.load(f"{cache}/features-{feature_cache_key(model, samples, image_size=size, flip=True)}.npy")
        return cached_features(Path(cache), model, which, image_size=size, flip=True, workers=0)

    kfold = group_kfold(samples, 5, seed=0)
    msid = leave_source_out(samples, "msid")
    for spec in specs:
        name, *opts = spec.split(",")
        kw = dict(o.split("=") for o in opts)
        feats = np.concatenate([features(n, samples) for n in name.split("+")], axis=-1)
        recipe = ProbeRecipe(arch=name, image_size=0, balance=kw.get("balance", "class"),
                             l2_grid=tuple(float(v) for v in kw.get("l2", "0.01:0.03:0.1:0.3:1").split(":")))
        inputs = Inputs(model=torch.nn.Identity(), feats=feats)
        drop = kw.get("drop")
        keep = np.array([src != drop for src in sources])
        kept = [Fold(name=f.name, train=f.train[keep[f.train]], test=f.test) for f in kfold]
        oof = out_of_fold(inputs, samples, kept, recipe, n=len(samples))[0]
        temperature = fit_temperature(oof, y)
        m = compute_metrics(softmax(oof, temperature), y)
        logits = run_fold(inputs, samples, msid, recipe)[0]
        mm = compute_metrics(softmax(logits, temperature), y[msid.test])
        alarm = {}
        if healthy:
            idx = np.flatnonzero(keep)
            hf = np.concatenate([features(n, healthy) for n in name.split("+")], axis=-1)
            neg = np.array([h.source == kw.get("neg") for h in healthy])
            x_all = np.concatenate([feats[idx], hf[neg]])
            y_all = np.concatenate([y[idx], np.full(neg.sum(), 7)])
            src_all = [sources[i] for i in idx] + [healthy[i].source for i in np.flatnonzero(neg)]
            grp_all = [samples[i].group for i in idx] + [healthy[i].group for i in np.flatnonzero(neg)]
            head = fit_head(x_all if recipe.train_flips else x_all[:, :1], y_all,
                            weights=sample_weights(y_all, src_all, recipe.balance),
                            groups=grp_all, l2_grid=recipe.l2_grid)
            hf = hf[~neg]
            check = HealthyCheck.from_probs(softmax(head.logits(hf[:, :1]), temperature))
            alarm = {"healthy_n": check.n, "healthy_called_mpox": round(check.called_mpox / check.n, 3),
                     "healthy_mpox_p06": round(check.mpox_alerts / check.n, 3),
                     "healthy_called_normal": round(check.called_normal / check.n, 3)}
        print(json.dumps({**alarm,
            "spec": spec, "kfold_macro_f1": round(m.macro_f1, 3), "kfold_accuracy": round(m.accuracy, 3),
            "kfold_ece": round(m.ece, 3), "mpox_recall": round(m.per_class["mpox"].recall, 3),
            "mpox_precision": round(m.per_class["mpox"].precision, 3),
            "msid_macro_f1": round(mm.macro_f1, 3), "msid_mpox_recall": round(mm.per_class["mpox"].recall, 3),
            "msid_normal_recall": round(mm.per_class["normal"].recall, 3),
            "per_class_f1": {k: round(v.f1, 3) for k, v in m.per_class.items()}}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
