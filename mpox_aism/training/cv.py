"""``mpox-aism cv``: out-of-fold figures for a recipe, and the model trained on every dev photo.

Recipe choices are made on these figures, never on one split: a stratified group k-fold tests every
dev photo exactly once (groups never straddle a fold), and leave-one-source-out folds (``--loso``)
test on a whole source the model never saw — the project's proxy for a new site. The recipe here
is the linear probe of ``mpox_aism.training.probe`` (frozen ImageNet backbone, see there for why).

Writes ``OUT/cv.json`` (recipe, per-fold figures, the k-fold and each LOSO report's headline),
``OUT/kfold/`` and ``OUT/without_<source>/`` (``metrics.json``, ``predictions.csv``, figures — the
``evaluate`` report on out-of-fold predictions) and ``OUT/cv.md``. The temperature is fitted on the
k-fold out-of-fold logits. ``--ship DIR`` then fits the head on all photos and saves a model
directory (``model.pt`` … model card) whose card carries these out-of-fold figures; the shipped
head's own temperature comes from fold heads refitted at its L2 penalty (:func:`shipped_temperature`).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shlex
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from mpox_aism.contracts.decision import softmax
from mpox_aism.contracts.labels import LABELS
from mpox_aism.model.fused import FusedBackbones, fused_parts
from mpox_aism.model.modeldir import ModelInfo, load_init_checkpoint, load_model, save_model
from mpox_aism.model.zoo import (
    IMAGENET_ARCHS,
    build_model,
    classifier_head,
    load_imagenet_weights,
)
from mpox_aism.training.calibration import fit_temperature
from mpox_aism.training.data import Sample, class_counts, scan_dataset
from mpox_aism.training.engine import seed_everything
from mpox_aism.training.evaluate import write_report
from mpox_aism.training.folds import Fold, group_kfold, leave_source_out
from mpox_aism.training.metrics import Headline, HealthyCheck, compute_metrics, expected_calibration_error
from mpox_aism.training.modelcard import write_model_card
from mpox_aism.training.probe import (
    BALANCES,
    DEFAULT_L2_GRID,
    LinearHead,
    cached_features,
    fit_head,
    sample_weights,
)
from mpox_aism.training.split import check_disjoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeRecipe:
    """Everything that decides the out-of-fold figures; recorded in cv.json and the model."""

    arch: str
    image_size: int
    balance: str = "class"
    train_flips: bool = True
    l2_grid: tuple[float, ...] = DEFAULT_L2_GRID
    backbone_init: str | None = None  # an encoder.pt (e.g. domain-adaptive SimCLR) over the ImageNet weights
    folds: int = 5
    seed: int = 0


@dataclass
class Inputs:
    """What every fold fits on: the frozen backbone and its pooled features (N × views × D)."""

    model: torch.nn.Module
    feats: np.ndarray


@dataclass(frozen=True)
class FoldResult:
    name: str
    n_train: int
    n_test: int
    l2: float
    macro_f1: float
    accuracy: float
    mpox_recall: float


def _with_negatives(fold: Fold, extra: np.ndarray) -> Fold:
    return Fold(name=fold.name, train=np.concatenate([fold.train, extra]).astype(int), test=fold.test)


def derived_parents(derived: list[Sample], samples: list[Sample], data_root: str | Path) -> np.ndarray:
    """For each derived view (``--derived``), the index of the dev photo it was cut from (its ``parent``).

    Why by photo, not group: a view must train exactly when its photo does, and a fold's training
    side is not always "every group it does not test" (``--holdout-exclude`` drops whole sources).
    """
    index = {s.path.resolve(): i for i, s in enumerate(samples)}
    parents = []
    for d in derived:
        parent = (Path(data_root) / d.parent).resolve()
        if not d.parent or parent not in index:
            raise SystemExit(f"cv --derived: {d.path} names no dev photo as its parent "
                             f"({d.parent!r} is not under {data_root}); a view of a photo "
                             "outside the dev set belongs in --negatives")
        photo = samples[index[parent]]
        if photo.label != d.label:
            raise SystemExit(f"cv --derived: {d.path} is labeled {d.label_name}, its parent photo "
                             f"{photo.label_name}: a view of a photo shows what it shows")
        if photo.group != d.group:
            raise SystemExit(f"cv --derived: {d.path} has group {d.group!r}, its parent photo "
                             f"{photo.group!r}: folds split by group")
        parents.append(index[parent])
    return np.array(parents, dtype=int)


def with_extras(fold: Fold, negatives: np.ndarray, derived: np.ndarray, parents: np.ndarray) -> Fold:
    """The fold's training side plus every negative, and each derived view whose parent it trains on.

    Why beside its parent: a view is a near-copy of its photo, so it must never train while that
    photo (or its group) is tested — a leak that would inflate every figure.
    """
    own = derived[np.isin(parents, fold.train)]
    return _with_negatives(fold, np.concatenate([negatives, own]))


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Cross-validate a linear-probe recipe (and ship it).",
                                add_help=add_help)
    p.add_argument("--data", required=True, help="image folder <root>/<class>/*.jpg + manifest.csv")
    p.add_argument("--arch", default="efficientnet_lite2", choices=sorted(IMAGENET_ARCHS))
    p.add_argument("--image-size", type=int, default=260)
    p.add_argument("--folds", type=int, default=5, help="stratified group k-fold (every photo tested once)")
    p.add_argument("--loso", nargs="*", default=[], metavar="SOURCE",
                   help="leave-one-source-out folds: train without SOURCE, test on it")
    p.add_argument("--holdout-of", default=None, metavar="MODEL",
                   help="one more fold: test on MODEL's stored validation groups, train on the rest "
                        "minus --holdout-exclude sources (a paired comparison with that model)")
    p.add_argument("--holdout-exclude", nargs="*", default=[], metavar="SOURCE",
                   help="sources the --holdout-of model never trained on, kept out of that fold's training")
    p.add_argument("--negatives", nargs="+", default=None, metavar="DIR",
                   help="labeled folders added to every training side and never tested, e.g. the "
                        "pipeline's crops of healthy people (research/healthy_crops.py → DIR/people)")
    p.add_argument("--derived", default=None, metavar="DIR",
                   help="labeled folder of training-only views cut from dev photos (manifest column "
                        "`parent`: the photo's path under --data), e.g. close-up patches of healthy skin "
                        "(research/closeup_skin.py → DIR/dev); a view trains exactly when its photo does, "
                        "and is never tested")
    p.add_argument("--healthy-test", default=None, metavar="DIR",
                   help="crops of healthy people never trained on (research/healthy_crops.py → DIR/video): "
                        "the shipped model's false mpox calls there go into cv.json and the model card")
    p.add_argument("--balance", choices=BALANCES, default="class",
                   help="loss weights: equal per class, or per source within each class")
    p.add_argument("--train-flips", action=argparse.BooleanOptionalAction, default=True,
                   help="mirror images as extra training views")
    p.add_argument("--l2", type=float, nargs="+", default=list(DEFAULT_L2_GRID),
                   help="L2 penalties tried by the inner group k-fold on each training side")
    p.add_argument("--backbone-init", default=None, metavar="ENCODER",
                   help="frozen backbone from this encoder.pt (`mpox-aism pretrain --init imagenet`) instead of "
                        "ImageNet's; a fold is fair only if the encoder never saw its test photos")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cache", default=None, help="feature cache folder (default OUT/../cache)")
    p.add_argument("--out", required=True)
    p.add_argument("--ship", default=None, metavar="DIR", help="fit on all photos, save a model directory")
    return p


def _views(feats: np.ndarray, recipe: ProbeRecipe, *, train: bool) -> np.ndarray:
    """View 0 is the photo, view 1 its mirror: a training view when ``train_flips``, never a test view."""
    if train:
        return feats if recipe.train_flips else feats[:, :1]
    return feats[:, :1]


def _weights(samples: list[Sample], idx: np.ndarray, recipe: ProbeRecipe) -> tuple[np.ndarray, np.ndarray]:
    y = np.array([samples[i].label for i in idx])
    return y, sample_weights(y, [samples[i].source for i in idx], recipe.balance)


def fit_network(inputs: Inputs, samples: list[Sample], idx: np.ndarray, recipe: ProbeRecipe) -> LinearHead:
    """The recipe's probe head on the photos ``idx`` (its L2 penalty chosen by an inner group k-fold)."""
    y, w = _weights(samples, idx, recipe)
    views, groups = _views(inputs.feats[idx], recipe, train=True), [samples[i].group for i in idx]
    return fit_head(views, y, weights=w, groups=groups, l2_grid=recipe.l2_grid, seed=recipe.seed)


def run_fold(inputs: Inputs, samples: list[Sample], fold: Fold, recipe: ProbeRecipe, *,
             heads: list[LinearHead] | None = None) -> tuple[np.ndarray, FoldResult]:
    """Fit on the fold's training side; logits for its test side. ``heads``: the fitted head is appended."""
    head = fit_network(inputs, samples, fold.train, recipe)
    if heads is not None:
        heads.append(head)
    logits = head.logits(_views(inputs.feats[fold.test], recipe, train=False))
    y = np.array([samples[i].label for i in fold.test])
    m = compute_metrics(softmax(logits), y)
    return logits, FoldResult(name=fold.name, n_train=len(fold.train), n_test=len(fold.test), l2=head.l2,
                              macro_f1=m.macro_f1, accuracy=m.accuracy, mpox_recall=m.per_class["mpox"].recall)


def out_of_fold(inputs: Inputs, samples: list[Sample], folds: list[Fold], recipe: ProbeRecipe, *,
                n: int, quiet: bool = False, heads: list[LinearHead] | None = None
                ) -> tuple[np.ndarray, list[FoldResult]]:
    """Logits for the first ``n`` samples, each from the one fold that tested it (``heads``: see run_fold)."""
    oof = np.zeros((n, len(LABELS)))
    results = []
    for fold in folds:
        logits, res = run_fold(inputs, samples, fold, recipe, heads=heads)
        oof[fold.test] = logits
        results.append(res)
        if not quiet:
            print(f"{res.name}: train {res.n_train} test {res.n_test} l2={res.l2:g} "
                  f"macro_f1={res.macro_f1:.3f} mpox_recall={res.mpox_recall:.3f}", flush=True)
    return oof, results


def healthy_by_fold(heads: list[LinearHead], healthy_feats: np.ndarray, recipe: ProbeRecipe, *,
                    temperature: float) -> list[HealthyCheck]:
    """Each k-fold head's calls on the healthy crops: the spread the shipped head's one count hides.

    Why: the count from one whole-data head moved 4 → 6 between two heads that differ only in the
    penalty the inner CV chose, as large as most differences between recipes; the k fold heads give
    k counts of the same recipe.
    """
    return [HealthyCheck.from_probs(softmax(head.logits(_views(healthy_feats, recipe, train=False)), temperature))
            for head in heads]


def _holdout_fold(samples: list[Sample], model_path: str, exclude: set[str]) -> Fold:
    """Test on a stored model's validation groups; train on the rest minus the sources it never saw."""
    _, info = load_model(model_path)
    held = set(info.val_groups)
    test = np.array([i for i, s in enumerate(samples) if s.group in held], dtype=int)
    if not len(test):
        raise SystemExit(f"cv --holdout-of: none of {model_path}'s validation groups is in the data")
    train = np.array([i for i, s in enumerate(samples)
                      if s.group not in held and s.source not in exclude], dtype=int)
    check_disjoint([samples[i] for i in train], [samples[i] for i in test])
    return Fold(name=f"holdout_of_{info.model_version}", train=train, test=test)


def _markdown(doc: dict, reports: dict[str, Headline]) -> str:
    lines = [f"# Cross-validation: {doc['recipe']['arch']} @ {doc['recipe']['image_size']} px (linear probe)",
             "", f"`{doc['command']}`", "",
             "| evaluation | n | macro-F1 (95 % CI) | accuracy | mpox recall | mpox precision | ECE |",
             "|---|---|---|---|---|---|---|"]
    for name, h in reports.items():
        ci = h.ci95["macro_f1"]
        lines.append(f"| {name} | {h.n} | {h.macro_f1:.3f} ({ci['low']:.3f}–{ci['high']:.3f}) | "
                     f"{h.accuracy:.3f} | {h.mpox_recall:.3f} | {h.mpox_precision:.3f} | {h.ece:.3f} |")
    return "\n".join(lines) + "\n"


def build_probe_model(recipe: ProbeRecipe) -> torch.nn.Module:
    model = build_model(recipe.arch, image_size=recipe.image_size)
    load_imagenet_weights(model, recipe.arch)
    if recipe.backbone_init:
        _load_backbone(model, recipe.backbone_init, recipe.arch)
    return model.eval()


def _load_backbone(model: torch.nn.Module, path: str, arch: str) -> None:
    """Every backbone tensor from an ``encoder.pt``; of a fused network, the branch of the encoder's arch.

    Partial matches are refused: a probe on half-adapted features would be neither recipe.
    """
    try:
        if isinstance(model, FusedBackbones):
            blob = torch.load(path, map_location="cpu", weights_only=False)
            names = fused_parts(arch)
            if not isinstance(blob, dict) or blob.get("arch") not in names:
                raise ValueError(f"not an encoder of one of {', '.join(names)}")
            # the branch's head is stripped: its state is exactly the encoder's backbone
            model.branches[names.index(blob["arch"])].load_state_dict(blob["state_dict"])
            return
        copied, _ = load_init_checkpoint(model, path)
    except (ValueError, RuntimeError) as e:
        raise SystemExit(f"cv --backbone-init {path}: {e}") from e
    expected = len(model.state_dict()) - 2  # all but the head's weight and bias
    if copied != expected:
        raise SystemExit(f"cv --backbone-init {path}: {copied} of the backbone's {expected} tensors match "
                         f"{arch}; is it an encoder of that arch?")


def main(args: argparse.Namespace) -> dict:
    seed_everything(args.seed)
    recipe = ProbeRecipe(arch=args.arch, image_size=args.image_size, balance=args.balance,
                         train_flips=args.train_flips, l2_grid=tuple(args.l2), backbone_init=args.backbone_init,
                         folds=args.folds, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "mpox-aism cv " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["cv"] else sys.argv[1:])
    samples = scan_dataset(args.data, require_all_classes=True)
    model = build_probe_model(recipe)
    cache = Path(args.cache) if args.cache else out.parent / "cache"
    negatives = [s for d in args.negatives or [] for s in scan_dataset(d)]
    derived = scan_dataset(args.derived) if args.derived else []
    parents = derived_parents(derived, samples, args.data)
    dev = len(samples)

    def features(which: list[Sample]) -> np.ndarray:
        """N × 2 × D: the photo and its mirror."""
        return cached_features(cache, model, which, image_size=recipe.image_size, flip=True,
                               workers=args.workers, desc=f"{recipe.arch}@{recipe.image_size}")

    parts = [p for p in (samples, negatives, derived) if p]
    inputs = Inputs(model=model, feats=np.concatenate([features(p) for p in parts]))
    y = np.array([s.label for s in samples])
    # pool: [dev photos | negatives: on every training side | derived views: beside their photo], only
    # the dev photos are ever tested
    pool = samples + negatives + derived
    neg_idx = np.arange(dev, dev + len(negatives))
    derived_idx = np.arange(dev + len(negatives), len(pool))

    def extras(fold: Fold) -> Fold:
        return with_extras(fold, neg_idx, derived_idx, parents)

    folds = [extras(f) for f in group_kfold(samples, recipe.folds, seed=recipe.seed)]
    fold_heads: list[LinearHead] = []
    oof, results = out_of_fold(inputs, pool, folds, recipe, n=dev, heads=fold_heads)
    temperature = fit_temperature(oof, y)
    reports = {"kfold": Headline.of(write_report(
        out / "kfold", samples, oof, temperature=temperature, threshold=0.6,
        title=f"{recipe.arch} out-of-fold ({recipe.folds}-fold by group)",
        extra={"split": f"out-of-fold, {recipe.folds}-fold by group", "recipe": asdict(recipe)}))}

    extra_folds = [leave_source_out(samples, src) for src in args.loso]
    if args.holdout_of:
        extra_folds.append(_holdout_fold(samples, args.holdout_of, set(args.holdout_exclude)))
    for fold in [extras(f) for f in extra_folds]:
        logits, res = run_fold(inputs, pool, fold, recipe)
        results.append(res)
        sub = [samples[i] for i in fold.test]
        reports[fold.name] = Headline.of(write_report(
            out / fold.name, sub, logits, temperature=temperature, threshold=0.6,
            title=f"{recipe.arch} {fold.name}", extra={"split": fold.name, "recipe": asdict(recipe)}))
        print(f"{fold.name}: train {res.n_train} test {res.n_test} macro_f1={res.macro_f1:.3f} "
              f"mpox_recall={res.mpox_recall:.3f}", flush=True)

    healthy = scan_dataset(args.healthy_test, verify=False) if args.healthy_test else []
    healthy_feats = features(healthy) if healthy else None
    by_fold = []
    if healthy_feats is not None:
        by_fold = healthy_by_fold(fold_heads, healthy_feats, recipe, temperature=temperature)
        print("healthy crops called mpox by each fold head: "
              + ", ".join(f"{c.called_mpox} ({c.mpox_alerts} with p ≥ {c.threshold:g})" for c in by_fold), flush=True)

    doc = {"command": command, "recipe": asdict(recipe), "temperature": temperature,
           "n": len(samples), "negatives": {"data": args.negatives, "n": len(negatives)},
           "derived": {"data": args.derived, "n": len(derived)},
           "class_counts": dict(zip(LABELS, class_counts(samples), strict=True)),
           "folds": [asdict(r) for r in results], "reports": {k: asdict(h) for k, h in reports.items()},
           **({"healthy_by_fold": {"data": args.healthy_test, "folds": [asdict(c) for c in by_fold]}}
              if by_fold else {})}
    (out / "cv.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "cv.md").write_text(_markdown(doc, reports))
    k = reports["kfold"]
    print(f"out-of-fold: macro_f1={k.macro_f1:.3f} ({k.ci95['macro_f1']['low']:.3f}–"
          f"{k.ci95['macro_f1']['high']:.3f}) mpox recall={k.mpox_recall:.3f} "
          f"precision={k.mpox_precision:.3f} ece={k.ece:.3f} T={temperature:.3f} → {out / 'cv.json'}")
    if args.ship:
        shipped = ship(args.ship, inputs, pool, recipe, temperature=temperature, command=command,
                     kfold_dir=out / "kfold", data_root=str(args.data),
                     loso={k: v for k, v in reports.items() if k.startswith("without_")}, n_dev=dev,
                     n_derived=len(derived),
                     healthy_feats=healthy_feats, folds=folds, fold_checks=by_fold)
        doc["shipped"] = asdict(shipped)
        if shipped.healthy:
            doc["healthy_test"] = {"data": args.healthy_test, **asdict(shipped.healthy)}
        (out / "cv.json").write_text(json.dumps(doc, indent=2) + "\n")
    return doc


@dataclass(frozen=True)
class ShippedCalibration:
    """The shipped head's temperature and where it came from."""

    temperature: float
    l2: float
    ece_out_of_fold: float | None  # of the refitted fold heads at that temperature; None: recipe's T kept
    recipe_temperature: float


@dataclass(frozen=True)
class Shipped:
    """What ``--ship`` wrote, recorded in ``cv.json``."""

    path: str
    model_version: str
    calibration: ShippedCalibration
    healthy: HealthyCheck | None = None


def shipped_temperature(inputs: Inputs, samples: list[Sample], folds: list[Fold], recipe: ProbeRecipe,
                        l2: float, *, n: int) -> tuple[float, float]:
    """(T, its out-of-fold ECE) for a head fitted at penalty ``l2``: fold heads refitted at that ``l2``.

    The recipe's T is fitted on fold heads that each chose their own penalty, and a stronger penalty
    gives smaller logits: on the fused features T is 0.98 at L2 0.1 and 1.72 at 0.003, so the
    recipe's 1.375 left a head shipped at 0.1 under-confident (out-of-fold ECE 0.107 instead of 0.018).
    """
    fixed = replace(recipe, l2_grid=(l2,))
    oof, _ = out_of_fold(inputs, samples, folds, fixed, n=n, quiet=True)
    y = np.array([s.label for s in samples[:n]])
    t = fit_temperature(oof, y)
    return t, expected_calibration_error(softmax(oof, t), y)


def _recipe_kind(recipe: ProbeRecipe) -> str:
    """One line for the card: what was fitted, on what."""
    return f"linear probe on frozen {'adapted' if recipe.backbone_init else 'ImageNet'} backbone"


def ship(out_dir: str | Path, inputs: Inputs, samples: list[Sample], recipe: ProbeRecipe, *,
         temperature: float, command: str, kfold_dir: Path, data_root: str,
         loso: dict[str, Headline] | None = None, n_dev: int | None = None, n_derived: int = 0,
         healthy_feats: np.ndarray | None = None,
         folds: list[Fold] | None = None, fold_checks: list[HealthyCheck] | None = None) -> Shipped:
    """Fit the recipe on every photo, save the resulting network as a model directory + card.

    ``healthy_feats``: features of healthy people's crops that no fold trained on; the shipped
    network's calls on them (:class:`HealthyCheck`) go into ``metrics.json`` and the card. ``folds``: the k-fold
    (with the recipe's negatives) on which the head's own temperature is fitted. ``samples`` is
    [dev photos (``n_dev``) | negatives | the last ``n_derived``: views cut from dev photos]. ``fold_checks``: the
    k-fold heads' calls on the same healthy crops (:func:`healthy_by_fold`), for the card.
    """
    n_dev = len(samples) - n_derived if n_dev is None else n_dev
    head = fit_network(inputs, samples, np.arange(len(samples)), recipe)
    check = None
    calibration = ShippedCalibration(temperature, head.l2, None, temperature)
    if folds and len(recipe.l2_grid) > 1:
        t, ece = shipped_temperature(inputs, samples, folds, recipe, head.l2, n=n_dev)
        calibration = ShippedCalibration(t, head.l2, ece, temperature)
        temperature = t
    if healthy_feats is not None:
        check = HealthyCheck.from_probs(softmax(head.logits(_views(healthy_feats, recipe, train=False)), temperature))
    model = copy.deepcopy(inputs.model)  # the cached backbone stays untouched
    head.fold_into(classifier_head(model))
    info = ModelInfo(
        arch=recipe.arch, image_size=recipe.image_size, temperature=temperature, val_groups=[],
        split={"n_train": len(samples), "n_negatives": len(samples) - n_dev - n_derived,
               "n_derived": n_derived,
               "n_val": 0, "train_counts": class_counts(samples), "val_counts": [],
               "validation": f"none held out: figures are out-of-fold ({recipe.folds}-fold by group)"},
        recipe={"command": command, "l2": head.l2, "kind": _recipe_kind(recipe),
                "args": asdict(recipe),
                "pretrained": f"imagenet, then {recipe.backbone_init}" if recipe.backbone_init else "imagenet"})
    out = Path(out_dir)
    path = save_model(out, model, info, omit_imagenet=True)  # the frozen backbone is the packages'
    metrics = json.loads((kfold_dir / "metrics.json").read_text())
    metrics["model_version"] = info.model_version
    metrics["shipped_calibration"] = asdict(calibration)
    if check:
        metrics["healthy_test"] = asdict(check)
        if fold_checks:
            metrics["healthy_by_fold"] = [asdict(c) for c in fold_checks]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    for name in ("metrics.md", "confusion_matrix.png", "reliability.png", "threshold_sweep.png"):
        (out / name).write_bytes((kfold_dir / name).read_bytes())
    write_model_card(out, info, metrics, samples[:n_dev], data_root=data_root, loso=loso,
                     negatives=samples[n_dev:len(samples) - n_derived],
                     derived=samples[len(samples) - n_derived:] if n_derived else [], healthy=check,
                     healthy_by_fold=fold_checks or ())
    print(f"shipped {recipe.arch} (l2={head.l2:g}, T={temperature:.3f}; recipe's T "
          f"{calibration.recipe_temperature:.3f}) → {path}" + (f"; healthy crops: {check.summary()}" if check else ""))
    return Shipped(str(path), info.model_version, calibration, check)
