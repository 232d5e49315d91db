"""A site head: the reviewers' labels from one site, fitted beside the dev photos (``mpox-aism adapt``).

Why beside, not instead: a head refitted on a site's reviews alone forgets every class the site never
showed (measured in issue 26: the dev sources' accuracy fell from 0.83 to 0.1–0.3), so the site's
labelled crops join the dev photos as one more source of their classes under the base recipe's class ×
source balance. Weighting the site more and anchoring the refit to the base head were measured and
not shipped (no better within noise: docs/RESULTS.md, ``research/site_adapt.py``).

The backbone stays frozen (the features are the base model's), so a refit is seconds on a CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mpox_aism.contracts.decision import softmax
from mpox_aism.contracts.images import load_rgb
from mpox_aism.contracts.labels import LABELS
from mpox_aism.training.data import Sample
from mpox_aism.training.folds import group_kfold
from mpox_aism.training.metrics import compute_metrics, confusion_matrix, macro_f1, per_class
from mpox_aism.training.probe import LinearHead, fit_head, sample_weights


def fit_site_head(feats: np.ndarray, labels: np.ndarray, sources: Sequence[str], groups: Sequence[str], *,
                  l2: float) -> LinearHead:
    """The head on dev + site features (N × views × D): class × source balance, the base head's penalty ``l2``.

    Why the base penalty and no inner search: with tens of site labels an inner CV would choose the
    penalty on the dev photos anyway, and the base was chosen on them.
    """
    w = sample_weights(np.asarray(labels), list(sources), "class_source")
    return fit_head(feats, labels, weights=w, groups=groups, l2_grid=(l2,))


# ------------------------------------------------------------------------------------------ the command
@dataclass(frozen=True)
class ClassFall:
    """One dev class: its F1 out of fold under the base recipe (with the 95 % interval) and the site recipe."""

    label: str
    base_f1: float
    base_low: float
    site_f1: float

    @property
    def fell_too_far(self) -> bool:
        """Fell below the base's own 95 % interval: more than the base's figure can vary by chance."""
        return self.site_f1 < self.base_low


@dataclass(frozen=True)
class SiteFigures:
    """Out-of-fold figures on a set of photos, with 95 % bootstrap intervals (by group) where asked."""

    n: int
    macro_f1: float
    macro_f1_ci: tuple[float, float]
    mpox_recall: float | None
    normal_recall: float | None
    ece: float


@dataclass(frozen=True)
class AdaptReport:
    """What ``adapt`` measured and decided; ``metrics.json['site']`` of the site model."""

    base_model_version: str
    model_version: str
    site_sources: list[str]
    n_site_labels: int
    site_counts: dict[str, int]
    l2: float
    temperature: float
    site_base: SiteFigures  # the base recipe (no site labels), out of fold on the site's photos
    site_adapted: SiteFigures  # the site recipe, out of fold on the site's photos
    dev_base: SiteFigures
    dev_adapted: SiteFigures
    dev_classes: list[ClassFall]
    refused: list[str]  # why the head must not be installed; empty: it passed its own checks

    @property
    def passed(self) -> bool:
        return not self.refused


def _group_draws(groups: Sequence[str], draws: int, seed: int) -> Iterator[np.ndarray]:
    """Bootstrap index sets that resample whole groups: one person's crops are not independent evidence."""
    uniq = sorted(set(groups))
    members = {g: np.array([i for i, x in enumerate(groups) if x == g]) for g in uniq}
    rng = np.random.default_rng(seed)
    for _ in range(draws):
        yield np.concatenate([members[uniq[j]] for j in rng.integers(0, len(uniq), len(uniq))])


def _figures(probs: np.ndarray, y: np.ndarray, groups: Sequence[str], *, draws: int = 200,
             seed: int = 0) -> SiteFigures:
    m = compute_metrics(probs, y)
    pred = probs.argmax(axis=1)
    values = [macro_f1(confusion_matrix(y[idx], pred[idx])) for idx in _group_draws(groups, draws, seed)]
    lo, hi = np.quantile(values, [0.025, 0.975])
    recall = {k: (v.recall if v.support else None) for k, v in m.per_class.items()}
    return SiteFigures(len(y), m.macro_f1, (float(lo), float(hi)), recall["mpox"], recall["normal"], m.ece)


def _class_f1_low(probs: np.ndarray, y: np.ndarray, groups: Sequence[str], *, draws: int = 200,
                  seed: int = 0) -> dict[str, float]:
    """Each class's 2.5 % F1 quantile over group bootstrap draws."""
    pred = probs.argmax(axis=1)
    f1s: dict[str, list[float]] = {k: [] for k in LABELS}
    for idx in _group_draws(groups, draws, seed):
        for k, v in per_class(confusion_matrix(y[idx], pred[idx])).items():
            if v.support:
                f1s[k].append(v.f1)
    return {k: float(np.quantile(v, 0.025)) for k, v in f1s.items() if v}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Fit a site head from reviewed labels beside the dev photos, check it, "
                                "and write a model directory.", add_help=add_help)
    p.add_argument("--reviews", required=True, help="the site's labelled crops (`mpox-aism reviews export`: "
                   "<class>/<file>.jpg + manifest.csv with path,label,source,group)")
    p.add_argument("--data", required=True, help="the dev photos the base head was fitted on")
    p.add_argument("--model", default=None, help="base model directory (default: models/default)")
    p.add_argument("--negatives", nargs="*", default=[], metavar="DIR",
                   help="labelled folders the base head also trained on (e.g. runs/healthy_crops/people)")
    p.add_argument("--out", required=True, help="the site model directory to write")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--familiarity", action=argparse.BooleanOptionalAction, default=True,
                   help="refit the familiarity score for the site head (the site's crops join its bank)")
    p.add_argument("--parity-images", type=int, default=32, help="photos for the ONNX parity check")
    p.add_argument("--cache", default="runs/cv/cache", help="feature cache folder")
    p.add_argument("--workers", type=int, default=1)
    return p


class AdaptError(ValueError):
    """Bad input to ``adapt``, said plainly; nothing is written."""


def check_reviews(reviews: Sequence[Sample], dev: Sequence[Sample]) -> None:
    """Reviews that could not make an honest site head: none, or a person on both sides of the split."""
    if not reviews:
        raise AdaptError("--reviews holds no labelled crops")
    shared = {s.group for s in reviews} & {s.group for s in dev}
    if shared:
        raise AdaptError(f"{len(shared)} group(s) are in both --reviews and --data (e.g. {sorted(shared)[0]!r}): "
                         "one person's crops must stay on one side of every split")
    clash = {s.source for s in reviews} & {s.source for s in dev}
    if clash:
        raise AdaptError(f"--reviews' source {sorted(clash)[0]!r} is also a dev source: a site's labels "
                         "need a source (station id) of their own")


def main(args: argparse.Namespace) -> AdaptReport:
    import copy

    import torch

    from mpox_aism.model.modeldir import ModelInfo, load_model, save_model
    from mpox_aism.model.zoo import classifier_head
    from mpox_aism.training.calibration import fit_temperature
    from mpox_aism.training.data import DatasetError, class_counts, scan_dataset
    from mpox_aism.training.probe import cached_features

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise AdaptError(f"--out {out} is not empty: a site model is written into a new folder")
    try:
        model, info = load_model(args.model)
        reviews = scan_dataset(args.reviews)
        dev = scan_dataset(args.data, require_all_classes=True)
        negatives = [s for d in args.negatives for s in scan_dataset(d, verify=False)]
    except (DatasetError, FileNotFoundError) as e:
        raise AdaptError(str(e)) from None
    check_reviews(reviews, dev)
    head_layer = classifier_head(model)
    if not isinstance(head_layer, torch.nn.Linear) or head_layer.out_features != len(LABELS):
        raise AdaptError(f"{args.model}: its head is not one linear layer over {len(LABELS)} classes "
                         "(a site head refits that layer on the frozen backbone)")
    l2 = float(info.recipe.get("l2", 0.0))
    if l2 <= 0:
        raise AdaptError(f"{args.model}: its recipe records no L2 penalty (not a linear-probe model?); "
                         "a site head is fitted at the base head's penalty")
    cache = Path(args.cache)

    def feats(part: list[Sample], desc: str) -> np.ndarray:
        return cached_features(cache, model, part, image_size=info.image_size, flip=True, workers=args.workers,
                               desc=desc)

    pool = dev + negatives + reviews
    x = np.concatenate([feats(p, d) for p, d in ((dev, "dev"), (negatives, "negatives"), (reviews, "site"))
                        if p])
    y = np.array([s.label for s in pool])
    src, grp = [s.source for s in pool], [s.group for s in pool]
    n_dev, n_neg = len(dev), len(negatives)
    neg = np.arange(n_dev, n_dev + n_neg)
    site_idx = np.arange(n_dev + n_neg, len(pool))
    sites = sorted({s.source for s in reviews})

    def fit(idx: np.ndarray) -> LinearHead:
        # every site source counts as the site (one station, or several of one site)
        names = ["site" if src[i] in sites else src[i] for i in idx]
        return fit_site_head(x[idx], y[idx], names, [grp[i] for i in idx], l2=l2)

    # one split for both recipes: dev folds by group, the site's groups dealt into the same number of folds
    dev_folds = group_kfold(dev, args.folds, seed=0)
    site_groups = sorted({s.group for s in reviews})
    rng = np.random.default_rng(0)
    fold_of = dict(zip(site_groups, rng.permutation(len(site_groups)) % args.folds, strict=True))
    site_fold = np.array([fold_of[s.group] for s in reviews])
    oof = {"base": np.zeros((len(pool), len(LABELS))), "site": np.zeros((len(pool), len(LABELS)))}
    for k, f in enumerate(dev_folds):
        test = np.concatenate([f.test, site_idx[site_fold == k]])
        site_train = site_idx[site_fold != k]
        for name, extra in (("base", np.zeros(0, int)), ("site", site_train)):
            head = fit(np.concatenate([f.train, neg, extra]).astype(int))
            oof[name][test] = head.logits(x[test][:, :1])
        print(f"fold {k + 1}/{len(dev_folds)} done", flush=True)
    scored = np.concatenate([np.arange(n_dev), site_idx])
    temperature = fit_temperature(oof["site"][scored], y[scored])
    t_base = float(info.temperature)
    dev_y, site_y = y[:n_dev], y[site_idx]
    dev_g, site_g = grp[:n_dev], [grp[i] for i in site_idx]
    probs = {name: softmax(v, temperature if name == "site" else t_base) for name, v in oof.items()}
    lows = _class_f1_low(probs["base"][:n_dev], dev_y, dev_g)
    base_pc = compute_metrics(probs["base"][:n_dev], dev_y).per_class
    site_pc = compute_metrics(probs["site"][:n_dev], dev_y).per_class
    falls = [ClassFall(k, base_pc[k].f1, lows[k], site_pc[k].f1) for k in LABELS if base_pc[k].support]
    report_site_base = _figures(probs["base"][site_idx], site_y, site_g)
    report_site = _figures(probs["site"][site_idx], site_y, site_g)
    refused = [f"dev class {c.label}: F1 {c.site_f1:.3f} out of fold, under the base's 95 % interval "
               f"(≥ {c.base_low:.3f}; base {c.base_f1:.3f})" for c in falls if c.fell_too_far]
    if report_site.macro_f1 < report_site_base.macro_f1:
        refused.append(f"on the site's own photos the site head is worse than the base (macro-F1 out of fold "
                       f"{report_site.macro_f1:.3f} < {report_site_base.macro_f1:.3f})")

    # the head itself: every photo, the site's included
    head = fit(np.arange(len(pool)))
    site_model = copy.deepcopy(model)
    head.fold_into(classifier_head(site_model))
    counts = class_counts(reviews)
    site_info = ModelInfo(
        arch=info.arch, image_size=info.image_size, temperature=temperature, val_groups=[],
        split={"n_train": len(pool), "n_negatives": n_neg, "n_site": len(reviews), "n_val": 0,
               "train_counts": class_counts(pool), "val_counts": [],
               "validation": f"none held out: figures are out-of-fold ({args.folds}-fold by group)"},
        recipe={**info.recipe, "kind": "site head: " + str(info.recipe.get("kind", "linear probe")),
                "base_model_version": info.model_version, "site": {"sources": sites, "n_labels": len(reviews)},
                "command": "mpox-aism adapt " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["adapt"] else sys.argv[1:])})
    out.mkdir(parents=True, exist_ok=True)
    save_model(out, site_model, site_info, omit_imagenet=True)
    report = AdaptReport(info.model_version, site_info.model_version, sites, len(reviews),
                         {k: c for k, c in zip(LABELS, counts, strict=True) if c}, l2, temperature,
                         report_site_base, report_site, _figures(probs["base"][:n_dev], dev_y, dev_g),
                         _figures(probs["site"][:n_dev], dev_y, dev_g), falls, refused)
    metrics = compute_metrics(probs["site"][scored], y[scored]).to_json()
    metrics.update(model_version=site_info.model_version, site=_jsonable(report))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    _write_card(out, report)
    _export_onnx(out, [load_rgb(s.path) for s in reviews[: args.parity_images]])
    if args.familiarity:
        from mpox_aism.training import familiarity

        familiarity.main(argparse.Namespace(model=str(out), data=args.data,
                                            negatives=[*args.negatives, args.reviews], healthy_test=None,
                                            pass_share=0.95, folds=args.folds, cache=str(cache),
                                            workers=args.workers))
    verdict = "passed its checks" if report.passed else "REFUSED: " + "; ".join(refused)
    print(f"site head {site_info.model_version} (base {info.model_version}, {len(reviews)} site labels) → {out}: "
          f"site macro-F1 out of fold {report_site.macro_f1:.3f} (base {report_site_base.macro_f1:.3f}); {verdict}")
    return report


def _jsonable(report: AdaptReport) -> dict:
    d = asdict(report)
    d["passed"] = report.passed
    d["dev_classes"] = [{**asdict(c), "fell_too_far": c.fell_too_far} for c in report.dev_classes]
    return d


def _fmt(f: SiteFigures) -> str:
    r = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    return (f"{f.macro_f1:.3f} ({f.macro_f1_ci[0]:.3f}–{f.macro_f1_ci[1]:.3f}) | {r(f.mpox_recall)} | "
            f"{r(f.normal_recall)} | {f.ece:.3f} | {f.n}")


def _write_card(out: Path, r: AdaptReport) -> None:
    lines = [f"# Site model card — {r.model_version}", "",
             "**Research use only, not a diagnostic device.**", "",
             f"A site head: the base model `{r.base_model_version}`'s frozen backbone with its linear head refitted on "
             f"the base's dev photos plus **{r.n_site_labels} reviewed labels** from {', '.join(r.site_sources)} "
             f"({', '.join(f'{k} {v}' for k, v in r.site_counts.items())}) as one more source; L2 {r.l2:g}, "
             f"temperature {r.temperature:.3f} (refitted out of fold).", "",
             f"Its own checks: **{'passed' if r.passed else 'REFUSED — must not be installed'}**."
             + ("".join(f"\n- {why}" for why in r.refused)), "",
             "| out of fold | macro-F1 (95 % CI) | mpox recall | normal recall | ECE | n |",
             "|---|---|---|---|---|---|",
             f"| site photos, base recipe | {_fmt(r.site_base)} |",
             f"| site photos, site head | {_fmt(r.site_adapted)} |",
             f"| dev photos, base recipe | {_fmt(r.dev_base)} |",
             f"| dev photos, site head | {_fmt(r.dev_adapted)} |",
             "", "Dev classes (F1 out of fold; refused when the site head falls under the base's 95 % interval):", "",
             "| class | base | base 2.5 % | site head |", "|---|---|---|---|"]
    lines += [f"| {c.label} | {c.base_f1:.3f} | {c.base_low:.3f} | {c.site_f1:.3f}{' ✗' if c.fell_too_far else ''} |"
              for c in r.dev_classes]
    (out / "model_card.md").write_text("\n".join(lines) + "\n")


def _export_onnx(out: Path, images: list[np.ndarray]) -> None:
    from mpox_aism.export.onnx import check_parity, export_onnx

    onnx = export_onnx(out, out / "model.onnx")
    report = check_parity(out, onnx, images)
    (out / "model.onnx.parity.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":  # pragma: no cover
    main(get_args_parser().parse_args())
