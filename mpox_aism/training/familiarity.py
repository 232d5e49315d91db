"""``mpox-aism familiarity``: fit a model's familiarity score and its threshold, out of fold.

The score (``mpox_aism.contracts.familiarity``) is fitted on the pooled features of the photos the
head was fitted on — the dev photos and any ``--negatives`` (the shipped recipe's healthy-people
crops) — and written beside the model (``familiarity.npz``), where every backend's
``load_classifier`` finds it. Its threshold is set so that ``--pass`` of the dev photos pass *out of
fold* (each photo scored by a score fitted without its group: a new patient of a known class, not a
memorised one) and, with ``--healthy-test``, so that the same share of healthy camera crops pass
too (the larger of the two thresholds). A figure of each goes into the model's ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from mpox_aism.contracts.familiarity import energy, fit_bank
from mpox_aism.contracts.labels import LABELS
from mpox_aism.model.modeldir import load_model, resolve_model_path
from mpox_aism.model.zoo import classifier_head
from mpox_aism.training.data import Sample, scan_dataset
from mpox_aism.training.folds import group_kfold
from mpox_aism.training.probe import cached_features, fit_head, sample_weights

COMPONENTS, K = 256, 10  # chosen in research/familiarity.py (docs/RESULTS.md, session 10)


@dataclass(frozen=True)
class FamiliarityFit:
    """What ``familiarity`` measured while fitting; goes into ``metrics.json`` as ``familiarity``."""

    threshold: float
    pass_share: float
    folds: int
    n_dev: int
    n_negatives: int
    dev_unfamiliar_out_of_fold: float  # share of dev photos above the threshold, out of fold
    healthy_n: int
    healthy_unfamiliar: float | None  # share of the healthy camera crops above it (the shipped score)
    components: int
    k: int


def out_of_fold(x: np.ndarray, y: np.ndarray, samples: list[Sample], folds: list, *, extra: np.ndarray,
                extra_y: np.ndarray, extra_sources: list[str], balance: str) -> tuple[np.ndarray, np.ndarray]:
    """Each dev photo's kNN distance and logits from a bank and a head fitted without its fold (the recipe's
    probe head: same balance, same negatives on every training side)."""
    knn, logits = np.zeros(len(x)), np.zeros((len(x), len(LABELS)))
    for f in folds:
        tx, ty = np.concatenate([x[f.train], extra]), np.concatenate([y[f.train], extra_y])
        sources = [samples[i].source for i in f.train] + extra_sources
        groups = [samples[i].group for i in f.train] + [f"extra{i}" for i in range(len(extra))]
        head = fit_head(tx[:, None, :], ty, weights=sample_weights(ty, sources, balance), groups=groups)
        logits[f.test] = head.logits(x[f.test])
        knn[f.test] = fit_bank(tx, components=COMPONENTS, k=K).knn_distance(x[f.test])
    return knn, logits


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Fit a model's familiarity score (out-of-fold threshold).",
                                add_help=add_help)
    p.add_argument("--model", default=None, help="model directory (default: models/default)")
    p.add_argument("--data", required=True, help="the dev photos the head was fitted on (<root>/<class>/ + manifest)")
    p.add_argument("--negatives", nargs="*", default=[], metavar="DIR",
                   help="labeled folders the head also trained on (e.g. runs/healthy_crops/people)")
    p.add_argument("--healthy-test", default=None, metavar="DIR",
                   help="healthy camera crops never trained on: the threshold lets --pass of them through too")
    p.add_argument("--pass", dest="pass_share", type=float, default=0.95,
                   help="share of dev photos (out of fold) and healthy crops that must be familiar")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--cache", default="runs/cv/cache", help="feature cache folder")
    p.add_argument("--workers", type=int, default=1)
    return p


def main(args: argparse.Namespace) -> FamiliarityFit:
    if not 0.5 <= args.pass_share < 1:
        raise ValueError(f"--pass {args.pass_share}: a share between 0.5 and 1")
    model, info = load_model(args.model)
    model_dir = resolve_model_path(args.model).parent
    cache = Path(args.cache)

    def feats(samples: list[Sample], desc: str) -> np.ndarray:
        return cached_features(cache, model, samples, image_size=info.image_size, flip=False,
                               workers=args.workers, desc=desc)[:, 0]

    dev = scan_dataset(args.data, require_all_classes=True, verify=False)
    negatives = [s for d in args.negatives for s in scan_dataset(d, verify=False)]
    x, y = feats(dev, "dev"), np.array([s.label for s in dev])
    nx = feats(negatives, "negatives") if negatives else np.zeros((0, x.shape[1]), np.float32)
    ny = np.array([s.label for s in negatives], dtype=int)
    folds = group_kfold(dev, args.folds, seed=0)
    balance = info.recipe.get("args", {}).get("balance", "class")
    knn, logits = out_of_fold(x, y, dev, folds, extra=nx, extra_y=ny, extra_sources=[s.source for s in negatives],
                              balance=balance)
    e = energy(logits)
    score = replace(fit_bank(np.concatenate([x, nx]), components=COMPONENTS, k=K),
                    knn_ref=(float(knn.mean()), float(knn.std())), energy_ref=(float(e.mean()), float(e.std())),
                    pass_share=args.pass_share, model_version=info.model_version)
    oof = np.maximum((knn - score.knn_ref[0]) / score.knn_ref[1], (e - score.energy_ref[0]) / score.energy_ref[1])
    threshold = float(np.quantile(oof, args.pass_share))
    head = classifier_head(model)
    w, b = head.weight.detach().numpy(), head.bias.detach().numpy()
    healthy = scan_dataset(args.healthy_test, verify=False) if args.healthy_test else []
    hf = feats(healthy, "healthy") if healthy else np.zeros((0, x.shape[1]), np.float32)
    hs = score.unfamiliarity(hf, hf @ w.T + b) if healthy else np.zeros(0)  # the shipped head's own logits
    if len(hs):
        threshold = max(threshold, float(np.quantile(hs, args.pass_share)))
    score = replace(score, threshold=threshold)
    path = score.save(model_dir)
    fit = FamiliarityFit(threshold=threshold, pass_share=args.pass_share, folds=args.folds, n_dev=len(dev),
                         n_negatives=len(negatives), dev_unfamiliar_out_of_fold=float((oof > threshold).mean()),
                         healthy_n=len(hs), healthy_unfamiliar=float((hs > threshold).mean()) if len(hs) else None,
                         components=COMPONENTS, k=K)
    metrics_path = model_dir / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        metrics["familiarity"] = asdict(fit)
        metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"familiarity → {path}: threshold {threshold:.2f}; out of fold {fit.dev_unfamiliar_out_of_fold:.3f} of "
          f"{len(dev)} dev photos unfamiliar" + (f", {fit.healthy_unfamiliar:.3f} of {len(hs)} healthy crops"
                                                 if len(hs) else ""))
    return fit
