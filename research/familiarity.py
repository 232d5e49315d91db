"""Familiarity scores on the shipped network's pooled features: which one tells the dev photos from
what the model has never seen (issue: an honest "unfamiliar" answer).

Every score is fitted on a training side and read on photos that side never held: the dev photos
are scored out of fold (5-fold by group), so the in-distribution figures are a new patient's, not a
memorised one's. Out-of-distribution sets, all real:

- ``class_out:<c>`` — a whole class left out of fitting (its photos are a rash the score never saw:
  the closest proxy here for an out-of-class rash); in-distribution = the other classes, out of fold;
- ``isic`` — dermoscopy images (``unlabeled/isic``: skin, but not a camera's view);
- ``nonskin`` — squares cut from the people photos and clip frames where the skin rule finds < 5 %;
- ``blur`` / ``dark`` / ``bright`` — dev photos (every 3rd, each scored by the fold that did not
  fit on it) blurred (Gaussian σ = 6 px at 224 px), darkened (×0.12), over-exposed (×3, clipped).

Costs: the share of the healthy camera crops (``research.healthy_crops`` → OUT/video and /people)
and of the in-class-but-uncertain photos flagged at the threshold that passes 95 % of the dev photos.

    python -m research.healthy_crops --out runs/healthy_crops
    python -m research.familiarity --data ../shared/data/skin8 --healthy runs/healthy_crops --out runs/familiarity
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score

from mpox_aism.contracts.decision import softmax
from mpox_aism.contracts.familiarity import energy
from mpox_aism.contracts.images import list_images, load_rgb
from mpox_aism.contracts.labels import LABELS
from mpox_aism.contracts.skin import skin_mask
from mpox_aism.training.cv import ProbeRecipe, build_probe_model
from mpox_aism.training.data import Sample, scan_dataset
from mpox_aism.training.folds import group_kfold
from mpox_aism.training.probe import cached_features, fit_head, sample_weights

ARCH, SIZE = "mobilenet_v2+efficientnet_lite2", 224
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PASS = 0.95  # share of dev photos the threshold lets through


# ------------------------------------------------------------------------------------------ scores
class Scorer:
    """``fit(x, y)`` on a training side's features, ``score(x)``: higher = less familiar."""

    name = "?"

    def fit(self, x: np.ndarray, y: np.ndarray, sources: list[str], groups: list[str]) -> Scorer:
        raise NotImplementedError

    def score(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


_HEADS: dict[tuple, object] = {}  # one fit per training side, shared by MSP and energy


class _Head(Scorer):
    """The probe head of the shipped recipe (class × source balance); MSP and energy read its logits."""

    def fit(self, x, y, sources, groups):
        key = (len(y), hash(x[:, :8].tobytes()), hash(y.tobytes()))
        if key not in _HEADS:
            w = sample_weights(y, sources, "class_source")
            _HEADS[key] = fit_head(x[:, None, :], y, weights=w, groups=groups, l2_grid=(1e-2, 3e-2, 1e-1))
        self.head = _HEADS[key]
        return self


class MaxSoftmax(_Head):
    name = "msp"

    def score(self, x):
        return 1.0 - softmax(self.head.logits(x)).max(axis=1)


class Energy(_Head):
    name = "energy"

    def score(self, x):
        return energy(self.head.logits(x))


class Mahalanobis(Scorer):
    """Distance to the nearest class mean under one shared covariance, in the top-``k`` principal
    components of the standardised features, the covariance shrunk towards its diagonal."""

    def __init__(self, k: int = 128, shrink: float = 0.1):
        self.k, self.shrink = k, shrink
        self.name = f"mahalanobis_k{k}"

    def _z(self, x):
        return ((x - self.mu) / self.sd) @ self.v

    def fit(self, x, y, sources, groups):
        self.mu, self.sd = x.mean(axis=0), x.std(axis=0) + 1e-6
        _, _, vt = np.linalg.svd((x - self.mu) / self.sd, full_matrices=False)
        self.v = vt[: self.k].T
        z = self._z(x)
        self.classes = np.unique(y)
        self.means = np.stack([z[y == c].mean(axis=0) for c in self.classes])
        r = z - self.means[np.searchsorted(self.classes, y)]
        cov = np.cov(r, rowvar=False)
        cov = (1 - self.shrink) * cov + self.shrink * np.diag(np.diag(cov))
        self.prec = np.linalg.inv(cov)
        return self

    def score(self, x):
        z = self._z(x)
        d = z[:, None, :] - self.means[None]
        return np.einsum("ncd,de,nce->nc", d, self.prec, d).min(axis=1)


class KNN(Scorer):
    """Cosine distance to the ``k``-th nearest training photo (standardised features; with ``pca``, in
    their top principal components, which makes the bank ``pca``/D the size)."""

    def __init__(self, k: int = 10, pca: int = 0):
        self.k, self.pca = k, pca
        self.name = f"knn_k{k}" + (f"_pca{pca}" if pca else "")

    def _n(self, x):
        z = (x - self.mu) / self.sd
        if self.pca:
            z = z @ self.v
        return z / np.linalg.norm(z, axis=1, keepdims=True)

    def fit(self, x, y, sources, groups):
        self.mu, self.sd = x.mean(axis=0), x.std(axis=0) + 1e-6
        if self.pca:
            self.v = np.linalg.svd((x - self.mu) / self.sd, full_matrices=False)[2][: self.pca].T
        self.bank = self._n(x)
        return self

    def score(self, x):
        sim = self._n(x) @ self.bank.T
        return 1.0 - np.sort(sim, axis=1)[:, -self.k]


SCORERS: list[Callable[[], Scorer]] = [MaxSoftmax, Energy, lambda: Mahalanobis(64), lambda: Mahalanobis(128),
                                       lambda: Mahalanobis(256), lambda: KNN(1), lambda: KNN(10),
                                       lambda: KNN(10, 256)]
COMBOS = [("knn_k10", "energy"), ("knn_k10", "msp"), ("knn_k10_pca256", "energy"), ("mahalanobis_k128", "energy")]
CLASS_OUT = ("bullous", "urticaria", "vasculitis", "chickenpox", "measles")


# ------------------------------------------------------------------------------------------ data
def _unlabeled(folder: Path) -> list[Sample]:
    return [Sample(path=p, label=LABELS.index("normal"), group=p.name) for p in list_images(folder)]


def _write(out: Path, name: str, rgb: np.ndarray) -> Sample:
    out.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return Sample(path=out / name, label=LABELS.index("normal"), group=name)


def nonskin_squares(out: Path, *, per_image: int = 6, seed: int = 0) -> list[Sample]:
    """Squares of people photos and clip frames (every 30th) with under 5 % skin: not skin at all."""
    rng = np.random.default_rng(seed)
    images = [(p.stem, load_rgb(p)) for p in sorted((SHARED / "people").iterdir())]
    for clip in sorted((SHARED / "video").iterdir()):
        cap = cv2.VideoCapture(str(clip))
        i = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if i % 30 == 0:
                images.append((f"{clip.stem}_{i:04d}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
            i += 1
        cap.release()
    samples = []
    for stem, rgb in images:
        h, w = rgb.shape[:2]
        kept = tries = 0
        while kept < per_image and tries < 60:
            tries += 1
            side = int(min(h, w) * rng.uniform(0.2, 0.5))
            y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            sq = rgb[y0:y0 + side, x0:x0 + side]
            if side >= 48 and skin_mask(sq).mean() < 0.05:
                samples.append(_write(out, f"{stem}_{kept}.png", sq))
                kept += 1
    return samples


DEGRADE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "blur": lambda im: cv2.GaussianBlur(cv2.resize(im, (SIZE, SIZE)), (0, 0), 6),
    "dark": lambda im: (im.astype(np.float32) * 0.12).astype(np.uint8),
    "bright": lambda im: np.clip(im.astype(np.float32) * 3.0, 0, 255).astype(np.uint8),
}


@dataclass
class Row:
    scorer: str
    set: str
    n: int
    auroc: float
    flagged: float  # share above the threshold that passes PASS of the in-distribution photos


def _auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    y = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    return float(roc_auc_score(y, np.r_[inside, outside]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(SHARED / "skin8"))
    p.add_argument("--healthy", default="runs/healthy_crops")
    p.add_argument("--out", default="runs/familiarity")
    p.add_argument("--cache", default="runs/cv/cache")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--negatives", nargs="*", default=[], metavar="DIR",
                   help="labeled folders on every training side, as in the shipped recipe (healthy people crops)")
    args = p.parse_args()
    out, cache = Path(args.out), Path(args.cache)
    model = build_probe_model(ProbeRecipe(arch=ARCH, image_size=SIZE))

    def feats(samples: list[Sample], desc: str) -> np.ndarray:
        return cached_features(cache, model, samples, image_size=SIZE, flip=False, workers=args.workers,
                               desc=desc)[:, 0]

    dev = scan_dataset(args.data, verify=False)
    x, y = feats(dev, "dev"), np.array([s.label for s in dev])
    src, grp = [s.source for s in dev], [s.group for s in dev]
    folds = group_kfold(dev, 5, seed=0)
    sets: dict[str, np.ndarray] = {"isic": feats(_unlabeled(SHARED / "unlabeled" / "isic"), "isic"),
                                   "nonskin": feats(nonskin_squares(out / "nonskin"), "nonskin")}
    costs: dict[str, np.ndarray] = {}
    for part in ("video", "people"):
        d = Path(args.healthy) / part
        if (d / "manifest.csv").is_file():
            costs[f"healthy_{part}"] = feats(scan_dataset(d, verify=False), f"healthy {part}")
    costs["msld_uncertain"] = feats(_unlabeled(SHARED / "unlabeled" / "msld_v1_others_uncertain"), "uncertain")
    costs["monkeypox2022_removed"] = feats(_unlabeled(SHARED / "unlabeled" / "monkeypox2022_removed"), "removed")
    degraded_idx = {i: np.array([j for j in f.test if j % 3 == 0]) for i, f in enumerate(folds)}
    degraded = {kind: {i: feats([_write(out / kind, f"{j:05d}.png", fn(load_rgb(dev[j].path))) for j in idx],
                                kind + f" fold {i}") for i, idx in degraded_idx.items()}
                for kind, fn in DEGRADE.items()}

    # the shipped recipe's healthy-people crops train on every side (label normal), as the head does
    if args.negatives:
        costs.pop("healthy_people", None)
    neg = [s for d in args.negatives for s in scan_dataset(d, verify=False)]
    nx = feats(neg, "negatives") if neg else np.zeros((0, x.shape[1]))
    ny, nsrc, ngrp = np.array([s.label for s in neg], dtype=int), [s.source for s in neg], [s.group for s in neg]

    def fit(make: Callable[[], Scorer], idx: np.ndarray) -> Scorer:
        return make().fit(np.concatenate([x[idx], nx]), np.concatenate([y[idx], ny]),
                          [src[j] for j in idx] + nsrc, [grp[j] for j in idx] + ngrp)

    # raw scores: for every evaluation, (in-distribution reference, out-of-distribution set, extra)
    raw: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    predicted_normal: dict[str, np.ndarray] = {}  # class_out photos the head calls normal (would be `clear`)
    timing: dict[str, float] = {}
    everything = np.arange(len(dev))
    for make in SCORERS:
        name = make().name
        got: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        oof = np.zeros(len(dev))
        deg = {kind: [] for kind in DEGRADE}
        for i, f in enumerate(folds):
            sc = fit(make, f.train)
            oof[f.test] = sc.score(x[f.test])
            for kind in DEGRADE:
                deg[kind].append(sc.score(degraded[kind][i]))
        whole = fit(make, everything)
        t0 = time.perf_counter()
        for _ in range(3):
            whole.score(x[:256])
        timing[name] = (time.perf_counter() - t0) / (3 * 256) * 1000
        for kind in DEGRADE:
            got[kind] = (oof, np.concatenate(deg[kind]))
        for set_name, v in {**sets, **costs}.items():
            got[set_name] = (oof, whole.score(v))
        for c in CLASS_OUT:
            k = LABELS.index(c)
            inside, outside = [], []
            for f in folds:
                tr = np.array([j for j in f.train if y[j] != k])
                sc = fit(make, tr)
                te = np.array(f.test)
                v = sc.score(x[te])
                inside.append(v[y[te] != k])
                outside.append(v[y[te] == k])
                if name == "msp":  # the head that would answer: which held-out photos it calls normal
                    calls = sc.head.logits(x[te][y[te] == k]).argmax(axis=1)
                    predicted_normal.setdefault(c, []).append(calls == LABELS.index("normal"))
            got[f"class_out:{c}"] = (np.concatenate(inside), np.concatenate(outside))
        raw[name] = got
        print(f"{name}: done ({timing[name]:.3f} ms per crop)", flush=True)
    for a, b in COMBOS:  # either score far from its in-distribution spread (z on the reference)
        got = {}
        for key, (ins_a, out_a) in raw[a].items():
            ins_b, out_b = raw[b][key]
            za = lambda v, r=ins_a: (v - r.mean()) / r.std()  # noqa: E731
            zb = lambda v, r=ins_b: (v - r.mean()) / r.std()  # noqa: E731
            got[key] = (np.maximum(za(ins_a), zb(ins_b)), np.maximum(za(out_a), zb(out_b)))
        raw[f"{a}+{b}"] = got
        timing[f"{a}+{b}"] = timing[a] + timing[b]

    rows: list[Row] = []
    for name, got in raw.items():
        for key, (ins, outs) in got.items():
            tau = float(np.quantile(ins, PASS))
            rows.append(Row(name, key, len(outs), _auroc(ins, outs), float((outs > tau).mean())))
            if key.startswith("class_out:"):
                normal = np.concatenate(predicted_normal[key.split(":")[1]])
                if normal.any():
                    rows.append(Row(name, key + " called normal", int(normal.sum()), float("nan"),
                                    float((outs[normal] > tau).mean())))

    out.mkdir(parents=True, exist_ok=True)
    (out / "familiarity.json").write_text(json.dumps({"pass": PASS, "rows": [asdict(r) for r in rows],
                                                      "ms_per_crop": timing, "n_dev": len(dev)}, indent=2) + "\n")
    names = sorted({r.set for r in rows}, key=lambda n: (n.startswith("healthy") or n.startswith(("msld", "monkey")),
                                                        n))
    scorers = list(dict.fromkeys(r.scorer for r in rows))
    lines = ["| set | n | " + " | ".join(scorers) + " |", "|---|---:|" + "---|" * len(scorers)]
    for n in names:
        cells = {r.scorer: r for r in rows if r.set == n}
        first = next(iter(cells.values()))
        lines.append(f"| {n} | {first.n} | " + " | ".join(
            (f"{cells[s].auroc:.3f} / " if cells[s].auroc == cells[s].auroc else "— / ") + f"{cells[s].flagged:.2f}"
            for s in scorers) + " |")
    lines.append("| ms per crop (numpy, 1 of 256) | | " + " | ".join(f"{timing[s]:.3f}" for s in scorers) + " |")
    (out / "familiarity.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
