"""A linear head on a frozen ImageNet backbone: features once, many cheap, comparable fits.

Why a probe and not full fine-tuning: on a 2-core CPU a fine-tuned run costs ~1 h, so 5-fold and
leave-one-source-out cross-validation of several recipes (≈ 10 runs each) cannot be afforded; a
probe's features are extracted once per recipe and every fold fits in seconds. A frozen backbone
also has less capacity to learn each source's framing and watermark than a fine-tuned one — the
shortcut this project must avoid — and the head is still a GAP → linear layer, so the shipped
network is an ordinary classifier (one ``nn.Linear``), exportable and explainable as before.

The head is multinomial logistic regression on standardised features with an L2 penalty chosen by
an inner group k-fold on the training side only, sample-weighted so that every class (and, with
``balance="class_source"``, every source within a class) carries equal total weight.
"""

from __future__ import annotations

import hashlib
import logging
import statistics
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mpox_aism.contracts.images import load_rgb
from mpox_aism.contracts.labels import LABELS
from mpox_aism.model.zoo import classifier_head
from mpox_aism.training.augment import paper_augmentation
from mpox_aism.training.data import Sample
from mpox_aism.training.preprocess import preprocess

log = logging.getLogger(__name__)

BALANCES = ("class", "class_source", "none")
DEFAULT_L2_GRID: tuple[float, ...] = (3e-3, 1e-2, 3e-2, 1e-1)


PixelTransform = Callable[[np.ndarray, Sample], np.ndarray]  # RGB uint8 → RGB uint8, before preprocessing


class _Views(Dataset):
    """Each photo → (views × 3×S×S): the serving input and, with ``flip``, its mirror image.

    ``augment`` > 0 instead yields that many draws of the paper's training augmentation
    (``mpox_aism.training.augment``), seeded by photo and draw so a cached feature array can be recomputed.
    """

    def __init__(self, samples: Sequence[Sample], size: int, flip: bool, transform: PixelTransform | None = None,
                 augment: int = 0, seed: int = 0):
        self.samples, self.size, self.flip, self.transform = list(samples), size, flip, transform
        self.augment, self.seed = augment, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> torch.Tensor:
        s = self.samples[i]
        rgb = load_rgb(s.path)
        rgb = self.transform(rgb, s) if self.transform else rgb
        if self.augment:
            aug = paper_augmentation(self.size, seed=self.seed * 1_000_003 + i)  # per photo: cacheable
            return torch.stack([preprocess(aug(image=rgb)["image"], self.size) for _ in range(self.augment)])
        x = preprocess(rgb, self.size)
        return torch.stack([x, x.flip(-1)]) if self.flip else x.unsqueeze(0)


def view_batches(samples: Sequence[Sample], *, image_size: int, flip: bool, batch_size: int = 32,
                 workers: int = 1, desc: str | None = None,
                 transform: PixelTransform | None = None, augment: int = 0,
                 seed: int = 0) -> Iterator[torch.Tensor]:
    """B × views × 3×S×S batches through the shared preprocessing (photo, and its mirror with ``flip``).

    ``transform``: a measured pixel change (masking, colour constancy) applied before preprocessing.
    ``augment``: that many augmented draws per photo instead (training views only).
    """
    loader = DataLoader(_Views(samples, image_size, flip, transform, augment, seed),
                        batch_size=batch_size, num_workers=workers)
    return iter(tqdm(loader, desc=desc, leave=False, mininterval=5.0) if desc else loader)


@torch.no_grad()
def extract_features(model: nn.Module, samples: Sequence[Sample], *, image_size: int, flip: bool = True,
                     batch_size: int = 32, workers: int = 1, desc: str | None = "features",
                     transform: PixelTransform | None = None, augment: int = 0, seed: int = 0) -> np.ndarray:
    """N × views × D: the input of the model's final linear layer for every view of every photo."""
    head = classifier_head(model)
    captured: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    model.eval()
    out = []
    try:
        for x in view_batches(samples, image_size=image_size, flip=flip, batch_size=batch_size,
                              workers=workers, desc=desc, transform=transform, augment=augment, seed=seed):
            n, v = x.shape[:2]
            captured.clear()
            model(x.flatten(0, 1))
            out.append(captured[0].reshape(n, v, -1).float().numpy())
    finally:
        hook.remove()
    views = augment or (2 if flip else 1)
    return np.concatenate(out) if out else np.zeros((0, views, head.in_features), np.float32)


def feature_cache_key(model: nn.Module, samples: Sequence[Sample], **settings: object) -> str:
    """Changes whenever the backbone's weights, the photos (paths and contents) or a setting change.

    The photos' bytes, not their mtimes: a remounted or re-copied data folder keeps its entries
    (hashing the 54 MB dev set takes well under a second; its features take minutes).

    Also the network's class and feature width: two networks on the same weights can pool different
    maps (scripts/probe_taps.py), and their features must not share a cache entry.
    """
    head = classifier_head(model)
    skip = {id(head.weight), id(head.bias)}
    h = hashlib.sha256(f"{type(model).__name__}|{head.in_features}".encode())
    for name, t in sorted(model.state_dict(keep_vars=True).items()):
        if id(t) in skip:
            continue
        h.update(name.encode())
        h.update(t.detach().cpu().float().numpy().tobytes())
    for s in samples:
        with open(s.path, "rb") as f:
            h.update(f"{s.path}|{hashlib.file_digest(f, 'sha256').hexdigest()}".encode())
    h.update(repr(sorted(settings.items())).encode())
    return h.hexdigest()[:16]


def cached_array(cache_dir: Path | None, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``compute()``, kept on disk as ``cache_dir/<key>.npy`` so later recipes reuse it."""
    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    arr = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, arr)
    tmp.replace(path)
    return arr


def cached_features(cache_dir: Path | None, model: nn.Module, samples: Sequence[Sample], *,
                    image_size: int, flip: bool, workers: int = 1, desc: str = "features",
                    augment: int = 0, seed: int = 0) -> np.ndarray:
    """:func:`extract_features` through :func:`cached_array` (``augment``: the augmented views alone)."""
    if augment:
        key = "augmented-" + feature_cache_key(model, samples, image_size=image_size, augment=augment, seed=seed)
    else:
        key = "features-" + feature_cache_key(model, samples, image_size=image_size, flip=flip)
    return cached_array(cache_dir, key, lambda: extract_features(
        model, samples, image_size=image_size, flip=flip, workers=workers, desc=desc, augment=augment, seed=seed))


def sample_weights(labels: np.ndarray, sources: Sequence[str], balance: str) -> np.ndarray:
    """Loss weight per photo, mean 1: equal total per class, or per (class, source) within each class.

    ``class_source`` stops a class being learnt as "photos from source X": when eczema is 2/3
    dermnet_com, its dermnet_com and dermnet_nz photos each get half of eczema's weight.
    """
    if balance not in BALANCES:
        raise ValueError(f"balance must be one of {BALANCES}, got {balance!r}")
    n = len(labels)
    if balance == "none":
        return np.ones(n)
    w = np.zeros(n)
    classes = sorted(set(labels.tolist()))
    for c in classes:
        in_c = labels == c
        if balance == "class":
            w[in_c] = 1.0 / in_c.sum()
            continue
        srcs = Counter(s for s, m in zip(sources, in_c, strict=True) if m)
        for src, count in srcs.items():
            m = in_c & (np.asarray(sources) == src)
            w[m] = 1.0 / (len(srcs) * count)
    return w * n / w.sum()


@dataclass
class LinearHead:
    """Logistic regression on standardised features; ``fold_into`` writes it into an ``nn.Linear``."""

    weight: np.ndarray  # K × D, on standardised features
    bias: np.ndarray  # K
    mean: np.ndarray  # D
    scale: np.ndarray  # D
    l2: float
    inner_scores: dict[float, float] = field(default_factory=dict)
    member_l2: tuple[float, ...] = ()  # a fold-mean head (:meth:`average`): each member's penalty
    removed_directions: int = 0  # source directions projected out (:func:`fit_head_without_sources`)

    def logits(self, feats: np.ndarray) -> np.ndarray:
        """``feats`` N×D, or N×V×D (views averaged in logit space: test-time augmentation)."""
        z = (feats - self.mean) / self.scale @ self.weight.T + self.bias
        return z.mean(axis=1) if z.ndim == 3 else z

    def raw(self) -> tuple[np.ndarray, np.ndarray]:
        """W·(x−μ)/σ + b  ==  (W/σ)·x + (b − W·μ/σ): weight and bias on raw features."""
        w = self.weight / self.scale
        return w, self.bias - w @ self.mean

    @classmethod
    def average(cls, heads: Sequence[LinearHead]) -> LinearHead:
        """One head whose logits are the mean of ``heads``' logits: an ensemble that is still one layer.

        Averaged on raw features, as each member standardised with its own training side's μ, σ.
        ``l2`` is the members' (upper) median penalty, a grid value, for the record; ``member_l2`` keeps them all.
        """
        raws = [h.raw() for h in heads]
        w, b = np.mean([r[0] for r in raws], axis=0), np.mean([r[1] for r in raws], axis=0)
        d = w.shape[1]
        return cls(weight=w, bias=b, mean=np.zeros(d), scale=np.ones(d),
                   l2=float(statistics.median_high(h.l2 for h in heads)), member_l2=tuple(h.l2 for h in heads),
                   removed_directions=max(h.removed_directions for h in heads))

    def fold_into(self, linear: nn.Linear) -> None:
        """Write :meth:`raw` into ``linear``: the network's logits are the head's."""
        w, b = self.raw()
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w).to(linear.weight.dtype))
            linear.bias.copy_(torch.from_numpy(b).to(linear.bias.dtype))


def _fit_lbfgs(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float, k: int, *,
               init: tuple[np.ndarray, np.ndarray] | None = None,
               max_iter: int = 150) -> tuple[np.ndarray, np.ndarray]:
    """Weighted multinomial logistic regression; ``init`` warm-starts from a nearby penalty's solution."""
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    wt = torch.as_tensor(w, dtype=torch.float32)
    wt = wt / wt.sum()
    weight = torch.zeros(k, x.shape[1]) if init is None else torch.as_tensor(init[0], dtype=torch.float32)
    bias = torch.zeros(k) if init is None else torch.as_tensor(init[1], dtype=torch.float32)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-5, tolerance_change=1e-7)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        nll = (nn.functional.cross_entropy(xt @ weight.T + bias, yt, reduction="none") * wt).sum()
        loss = nll + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return weight.detach().numpy().astype(np.float64), bias.detach().numpy().astype(np.float64)


def _flatten_views(feats: np.ndarray, y: np.ndarray, w: np.ndarray, groups: np.ndarray):
    """Every training view is one row, each carrying 1/views of its photo's weight."""
    if feats.ndim == 2:
        return feats, y, w, groups
    v = feats.shape[1]
    return (feats.reshape(-1, feats.shape[-1]), np.repeat(y, v), np.repeat(w / v, v), np.repeat(groups, v))


def fit_head(feats: np.ndarray, y: np.ndarray, *, weights: np.ndarray, groups: Sequence[str],
             l2_grid: Sequence[float] = DEFAULT_L2_GRID, inner_folds: int = 3, seed: int = 0,
             num_classes: int = len(LABELS)) -> LinearHead:
    """Fit on ``feats`` (N×D or N×V×D), choosing the L2 penalty by an inner group k-fold on these photos.

    The inner score is the weighted macro-F1 proxy "balanced accuracy" of the held-out views'
    averaged logits; the penalty is chosen before any outer test photo is seen. Averaged although the
    outer test scores the photo alone: scoring view 0 only was measured (session 6) and cost
    MobileNetV2 0.026 of mpox recall — two views make the less noisy inner score.
    """
    y = np.asarray(y, dtype=int)
    groups = np.asarray(list(groups))
    flat = feats.reshape(-1, feats.shape[-1])
    mean, scale = flat.mean(axis=0), flat.std(axis=0) + 1e-6
    z = (feats - mean) / scale
    scores: dict[float, float] = {}
    if len(l2_grid) > 1:
        uniq = np.unique(groups)
        rng = np.random.default_rng(seed)
        fold_of = dict(zip(uniq, rng.permutation(len(uniq)) % inner_folds, strict=True))
        gf = np.array([fold_of[g] for g in groups])
        path = sorted(l2_grid, reverse=True)  # strongest first: each fit warm-starts the next
        correct = {v: np.zeros(num_classes) for v in path}
        total = {v: np.zeros(num_classes) for v in path}
        for f in range(inner_folds):
            tr, te = gf != f, gf == f
            if not te.any() or len(set(y[tr])) < 2:
                continue
            xf, yf, wf, _ = _flatten_views(z[tr], y[tr], weights[tr], groups[tr])
            start = None
            for l2 in path:
                start = _fit_lbfgs(xf, yf, wf, l2, num_classes, init=start)
                logit = z[te] @ start[0].T + start[1]
                pred = (logit.mean(axis=1) if logit.ndim == 3 else logit).argmax(axis=1)
                for c in range(num_classes):
                    m = y[te] == c
                    correct[l2][c] += (pred[m] == c).sum()
                    total[l2][c] += m.sum()
        for l2 in path:
            present = total[l2] > 0
            scores[l2] = float((correct[l2][present] / total[l2][present]).mean())
        l2 = max(l2_grid, key=lambda v: (scores[v], v))  # ties → the stronger penalty
    else:
        l2 = l2_grid[0]
    xf, yf, wf, _ = _flatten_views(z, y, weights, groups)
    wgt, b = _fit_lbfgs(xf, yf, wf, l2, num_classes)
    return LinearHead(weight=wgt, bias=b, mean=mean, scale=scale, l2=l2, inner_scores=scores)


def source_directions(z: np.ndarray, y: np.ndarray, sources: Sequence[str], *, min_photos: int = 5) -> np.ndarray:
    """Orthonormal rows (r × D) spanning the within-class differences of source means in ``z`` (N×D).

    For each class with ≥ 2 sources of ≥ ``min_photos`` photos, each source's mean minus the mean of
    those source means (every source counted once, as ``balance="class_source"`` weighs them): the
    directions along which photos of one class differ by where they came from.
    """
    src = np.asarray(list(sources))
    diffs = []
    for c in np.unique(y):
        in_c = y == c
        names = [n for n in np.unique(src[in_c]) if (in_c & (src == n)).sum() >= min_photos]
        if len(names) < 2:
            continue
        means = np.stack([z[in_c & (src == n)].mean(axis=0) for n in names])
        diffs.append(means - means.mean(axis=0))
    if not diffs:
        return np.zeros((0, z.shape[1]))
    _, sv, vt = np.linalg.svd(np.concatenate(diffs), full_matrices=False)
    return vt[sv > 1e-6 * sv[0]]


def fit_head_without_sources(feats: np.ndarray, y: np.ndarray, *, sources: Sequence[str], weights: np.ndarray,
                             groups: Sequence[str], min_photos: int = 5, **kwargs: object) -> LinearHead:
    """:func:`fit_head` on standardised features with :func:`source_directions` projected out.

    Why: out of fold the model reads the source (dermnet_com eczema 0.97 right, dermnet_nz 0.55); this
    takes away the linear directions in which one class's sources differ, on the training side only.
    The projection is affine, so it folds into the head: still one ``nn.Linear``, no serving cost.
    """
    y = np.asarray(y, dtype=int)
    flat = feats.reshape(-1, feats.shape[-1])
    mean, scale = flat.mean(axis=0), flat.std(axis=0) + 1e-6
    z = (feats - mean) / scale
    u = source_directions(z[:, 0] if z.ndim == 3 else z, y, sources, min_photos=min_photos)
    head = fit_head(z - (z @ u.T) @ u, y, weights=weights, groups=groups, **kwargs)
    w, b = head.raw()  # on projected z: w·(I − uᵀu)·(x − μ)/σ + b
    w = (w - (w @ u.T) @ u) / scale
    d = len(mean)
    return replace(head, weight=w, bias=b - w @ mean, mean=np.zeros(d), scale=np.ones(d),
                   removed_directions=len(u))
