"""How many reviewed labels a site needs: leave one source out as the new site, the site head's curve.

For each site source (default ``msid`` and ``monkeypox2022``): the base head is fitted without it (the
shipped recipe: class × source balance, the healthy-people crops as extra ``normal``, the shipped L2
penalty), then ``n`` of the site's photos — whole groups, drawn at random, as a reviewer would label
a site's travellers — join the dev photos by each site recipe (``mpox_aism.training.adapt``), and the
rest of the site is the test. Each cell: mean over ``--draws`` draws of macro-F1, mpox recall and
precision, normal recall and ECE on the rest of the site. The temperature: the base head's (fitted
out of fold on its own training side) for every head — the exploratory pass; the product's ``adapt``
refits it by cross-validation (``--refit-temperature`` measures that too, 5 extra fits per cell).

    python -m research.site_adapt --out runs/site_adapt
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mpox_aism.contracts.decision import softmax
from mpox_aism.contracts.labels import LABELS
from mpox_aism.model.modeldir import load_model
from mpox_aism.training.calibration import fit_temperature
from mpox_aism.training.data import scan_dataset
from mpox_aism.training.folds import group_kfold, leave_source_out
from mpox_aism.training.metrics import compute_metrics
from mpox_aism.training.probe import LinearHead, cached_features, fit_head


@dataclass(frozen=True)
class SiteRecipe:
    """How a site's labels join the dev photos: the variants measured against the product's (``w1``)."""

    site_weight: float = 1.0  # the site's share of a class, in dev sources (1: one more source)
    anchor: bool = False  # penalty centred on the base head (True) or on zero (False)


def site_weights(labels: np.ndarray, sources: Sequence[str], *, site: str, site_weight: float) -> np.ndarray:
    """Class × source balance with the ``site`` source counting ``site_weight`` dev sources in each class.

    Every class still carries equal total weight; within a class the site's photos share
    ``site_weight / (n_dev_sources + site_weight)`` of it. Mean 1, like :func:`sample_weights`.
    """
    labels = np.asarray(labels)
    src = np.asarray(list(sources))
    w = np.zeros(len(labels))
    for c in np.unique(labels):
        in_c = labels == c
        names = sorted(set(src[in_c].tolist()))
        share = {s: (site_weight if s == site else 1.0) for s in names}
        total = sum(share.values())
        for s in names:
            m = in_c & (src == s)
            w[m] = share[s] / total / m.sum()
    return w * len(w) / w.sum()


def fit_site_head(feats: np.ndarray, labels: np.ndarray, sources: Sequence[str], groups: Sequence[str], *,
                  site: str, recipe: SiteRecipe, l2: float, base: LinearHead | None = None,
                  base_raw: np.ndarray | None = None) -> LinearHead:
    """The head on dev + site features (N × views × D) at the base head's penalty ``l2``.

    ``base_raw``: the base head's K×D weights on raw features (needed when ``recipe.anchor``).
    Why the base penalty and no inner search: with tens of site labels an inner CV would choose the
    penalty on the dev photos anyway, and the base was chosen on them.
    """
    if recipe.anchor and base_raw is None and base is None:
        raise ValueError("an anchored site head needs the base head's weights")
    prior = (base.raw()[0] if base is not None else base_raw) if recipe.anchor else None
    w = site_weights(labels, sources, site=site, site_weight=recipe.site_weight)
    return fit_head(feats, labels, weights=w, groups=groups, l2_grid=(l2,), prior_raw=prior)


SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RECIPES = {"w1": SiteRecipe(1.0, False), "w3": SiteRecipe(3.0, False), "w10": SiteRecipe(10.0, False),
           "anchored_w1": SiteRecipe(1.0, True), "anchored_w3": SiteRecipe(3.0, True)}


@dataclass(frozen=True)
class Cell:
    site: str
    n_labels: int
    recipe: str
    draws: int
    macro_f1: float
    mpox_recall: float
    mpox_precision: float
    normal_recall: float
    ece: float
    temperature: float


def _labelled(site_idx: np.ndarray, grp: list[str], groups: list[str], n: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(labelled, rest): whole groups in random order until at least ``n`` photos, as a reviewer labels travellers."""
    labelled, count = set(), 0
    for g in rng.permutation(groups):
        if count >= n:
            break
        labelled.add(g)
        count += sum(1 for i in site_idx if grp[i] == g)
    return (np.array([i for i in site_idx if grp[i] in labelled]),
            np.array([i for i in site_idx if grp[i] not in labelled]))


def _figures(logits: np.ndarray, y: np.ndarray, t: float) -> dict[str, float]:
    m = compute_metrics(softmax(logits, t), y)
    return {"macro_f1": m.macro_f1, "mpox_recall": m.per_class["mpox"].recall,
            "mpox_precision": m.per_class["mpox"].precision, "normal_recall": m.per_class["normal"].recall,
            "ece": m.ece}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(SHARED / "skin8"))
    p.add_argument("--negatives", default="runs/healthy_crops/people")
    p.add_argument("--model", default="models/default")
    p.add_argument("--sites", nargs="+", default=["msid", "monkeypox2022"])
    p.add_argument("--sizes", nargs="+", type=float, default=[10, 25, 50, 100, 0.25],
                   help="labels per site; a value < 1 is a share of the site's photos")
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--recipes", nargs="+", default=list(RECIPES))
    p.add_argument("--refit-temperature", action="store_true")
    p.add_argument("--dev-cost", type=float, default=0.0, metavar="SHARE",
                   help="also measure what the dev sources lose: out of fold (5-fold by group) on the dev photos "
                        "the base trained on, base vs each recipe with SHARE of the site labelled (draw 0)")
    p.add_argument("--cache", default="runs/cv/cache")
    p.add_argument("--out", default="runs/site_adapt")
    args = p.parse_args()
    model, info = load_model(args.model)
    l2 = float(info.recipe["l2"])
    samples = scan_dataset(args.data)
    negatives = scan_dataset(args.negatives, verify=False) if args.negatives else []
    pool = samples + negatives
    feats = np.concatenate([cached_features(Path(args.cache), model, part, image_size=info.image_size, flip=True)
                            for part in (samples, negatives) if part])
    y = np.array([s.label for s in pool])
    src = [s.source for s in pool]
    grp = [s.group for s in pool]
    neg = np.arange(len(samples), len(pool))
    cells: list[Cell] = []
    costs: list[dict] = []
    t0 = time.time()
    for site in args.sites:
        fold = leave_source_out(samples, site)
        train = np.concatenate([fold.train, neg])
        base_recipe = SiteRecipe()

        def fit(idx: np.ndarray, recipe: SiteRecipe, base=None, site_name: str = site):
            return fit_site_head(feats[idx], y[idx], [src[i] for i in idx], [grp[i] for i in idx], site=site_name,
                                 recipe=recipe, l2=l2, base=base)

        base = fit(train, base_recipe)
        # the base head's temperature, out of fold on its own training side (as the shipped head's)
        oof = np.zeros((len(fold.train), len(LABELS)))
        sub = [samples[i] for i in fold.train]
        for f in group_kfold(sub, 5, seed=0):
            h = fit(np.concatenate([fold.train[f.train], neg]), base_recipe)
            oof[f.test] = h.logits(feats[fold.train[f.test]][:, :1])
        t_base = fit_temperature(oof, y[fold.train])
        site_idx = fold.test
        groups = sorted({grp[i] for i in site_idx})
        print(f"{site}: {len(site_idx)} photos, {len(groups)} groups; base T={t_base:.3f} "
              f"({time.time() - t0:.0f} s)", flush=True)
        for size in args.sizes:
            n = round(size * len(site_idx)) if size < 1 else int(size)
            if n >= len(site_idx) - 10:
                continue
            got: dict[str, list[dict[str, float]]] = {"base": []}
            temps: dict[str, list[float]] = {"base": []}
            for d in range(args.draws):
                lab, rest = _labelled(site_idx, grp, groups, n, np.random.default_rng(1000 * d + n))
                test_x, test_y = feats[rest][:, :1], y[rest]
                got["base"].append(_figures(base.logits(test_x), test_y, t_base))
                temps["base"].append(t_base)
                for name in args.recipes:
                    recipe = RECIPES[name]
                    head = fit(np.concatenate([train, lab]), recipe, base=base if recipe.anchor else None)
                    t = t_base
                    if args.refit_temperature:  # the product's way: out of fold over dev + site labels
                        whole = np.concatenate([train, lab])
                        wsub = [pool[i] for i in whole]
                        oof = np.zeros((len(whole), len(LABELS)))
                        for f in group_kfold(wsub, 5, seed=0):
                            h = fit(whole[f.train], recipe, base=base if recipe.anchor else None)
                            oof[f.test] = h.logits(feats[whole[f.test]][:, :1])
                        t = fit_temperature(oof, y[whole])
                    got.setdefault(name, []).append(_figures(head.logits(test_x), test_y, t))
                    temps.setdefault(name, []).append(t)
            for name, rows in got.items():
                mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
                cells.append(Cell(site, n, name, len(rows), temperature=float(np.mean(temps[name])), **mean))
                c = cells[-1]
                print(f"{site} n={n:4d} {name:12s} macroF1 {c.macro_f1:.3f} mpoxR {c.mpox_recall:.3f} "
                      f"mpoxP {c.mpox_precision:.3f} normalR {c.normal_recall:.3f} ECE {c.ece:.3f} "
                      f"T {c.temperature:.2f} ({time.time() - t0:.0f} s)", flush=True)
        if args.dev_cost:
            n = round(args.dev_cost * len(site_idx))
            lab, _ = _labelled(site_idx, grp, groups, n, np.random.default_rng(n))
            sub = [samples[i] for i in fold.train]
            folds = group_kfold(sub, 5, seed=0)
            for name in ["base", *args.recipes]:
                recipe = RECIPES.get(name, base_recipe)
                oof = np.zeros((len(fold.train), len(LABELS)))
                for f in folds:
                    extra = lab if name != "base" else np.zeros(0, int)
                    h = fit(np.concatenate([fold.train[f.train], neg, extra]).astype(int), recipe,
                            base=base if recipe.anchor else None)
                    oof[f.test] = h.logits(feats[fold.train[f.test]][:, :1])
                m = compute_metrics(softmax(oof, t_base), y[fold.train])
                costs.append({"site": site, "n_labels": len(lab), "recipe": name, "dev_macro_f1": m.macro_f1,
                              "dev_per_class_f1": {k: v.f1 for k, v in m.per_class.items() if v.support}})
                print(f"{site} dev cost n={len(lab)} {name:12s} dev macroF1 {m.macro_f1:.3f} "
                      f"({time.time() - t0:.0f} s)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"args": vars(args), "l2": l2, "base_model": info.model_version, "cells": [asdict(c) for c in cells],
           "dev_cost": costs}
    (out / "site_adapt.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
