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
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mpox_aism.contracts.images import load_rgb
from mpox_aism.contracts.labels import LABELS
from mpox_aism.model.zoo import classifier_head, head_inputs
from mpox_aism.training.data import Sample
from mpox_aism.training.preprocess import preprocess

log = logging.getLogger(__name__)

BALANCES = ("class", "class_source", "none")
DEFAULT_L2_GRID: tuple[float, ...] = (3e-3, 1e-2, 3e-2, 1e-1)


PixelTransform = Callable[[np.ndarray, Sample], np.ndarray]  # RGB uint8 → RGB uint8, before preprocessing


class _Views(Dataset):
    """Each photo → (views × 3×S×S): the serving input and, with ``flip``, its mirror image."""

    def __init__(self, samples: Sequence[Sample], size: int, flip: bool, transform: PixelTransform | None = None):
        self.samples, self.size, self.flip, self.transform = list(samples), size, flip, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> torch.Tensor:
        s = self.samples[i]
        rgb = load_rgb(s.path)
        rgb = self.transform(rgb, s) if self.transform else rgb
        x = preprocess(rgb, self.size)
        return torch.stack([x, x.flip(-1)]) if self.flip else x.unsqueeze(0)


def view_batches(samples: Sequence[Sample], *, image_size: int, flip: bool, batch_size: int = 32,
                 workers: int = 1, desc: str | None = None,
                 transform: PixelTransform | None = None) -> Iterator[torch.Tensor]:
    """B × views × 3×S×S batches through the shared preprocessing (photo, and its mirror with ``flip``).

    ``transform``: a measured pixel change (masking, colour constancy) applied before preprocessing.
    """
    loader = DataLoader(_Views(samples, image_size, flip, transform),
                        batch_size=batch_size, num_workers=workers)
    return iter(tqdm(loader, desc=desc, leave=False, mininterval=5.0) if desc else loader)


@torch.no_grad()
def extract_features(model: nn.Module, samples: Sequence[Sample], *, image_size: int, flip: bool = True,
                     batch_size: int = 32, workers: int = 1, desc: str | None = "features",
                     transform: PixelTransform | None = None) -> np.ndarray:
    """N × views × D: the input of the model's final linear layer for every view of every photo."""
    model.eval()
    out = []
    with head_inputs(model) as captured:
        for x in view_batches(samples, image_size=image_size, flip=flip, batch_size=batch_size,
                              workers=workers, desc=desc, transform=transform):
            n, v = x.shape[:2]
            captured.clear()
            model(x.flatten(0, 1))
            out.append(captured[0].reshape(n, v, -1).float().numpy())
    views = 2 if flip else 1
    return np.concatenate(out) if out else np.zeros((0, views, classifier_head(model).in_features), np.float32)


def feature_cache_key(model: nn.Module, samples: Sequence[Sample], **settings: object) -> str:
    """Changes whenever the backbone's weights, the photos (paths and contents) or a setting change.

    The photos' bytes, not their mtimes: a remounted or re-copied data folder keeps its entries
    (hashing the 54 MB dev set takes well under a second; its features take minutes).

    Also the network's class and feature width: two networks on the same weights can pool different
    maps (research/probe_taps.py), and their features must not share a cache entry.
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
                    image_size: int, flip: bool, workers: int = 1, desc: str = "features") -> np.ndarray:
    """:func:`extract_features` through :func:`cached_array`."""
    key = "features-" + feature_cache_key(model, samples, image_size=image_size, flip=flip)
    return cached_array(cache_dir, key, lambda: extract_features(
        model, samples, image_size=image_size, flip=flip, workers=workers, desc=desc))


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

    def logits(self, feats: np.ndarray) -> np.ndarray:
        """``feats`` N×D, or N×V×D (views averaged in logit space: test-time augmentation)."""
        z = (feats - self.mean) / self.scale @ self.weight.T + self.bias
        return z.mean(axis=1) if z.ndim == 3 else z

    def raw(self) -> tuple[np.ndarray, np.ndarray]:
        """W·(x−μ)/σ + b  ==  (W/σ)·x + (b − W·μ/σ): weight and bias on raw features."""
        w = self.weight / self.scale
        return w, self.bias - w @ self.mean

    def fold_into(self, linear: nn.Linear) -> None:
        """Write :meth:`raw` into ``linear``: the network's logits are the head's."""
        w, b = self.raw()
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w).to(linear.weight.dtype))
            linear.bias.copy_(torch.from_numpy(b).to(linear.bias.dtype))


def _fit_lbfgs(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float, k: int, *,
               init: tuple[np.ndarray, np.ndarray] | None = None, prior: np.ndarray | None = None,
               max_iter: int = 150) -> tuple[np.ndarray, np.ndarray]:
    """Weighted multinomial logistic regression; ``init`` warm-starts from a nearby penalty's solution.
    ``prior``: the weights the L2 penalty pulls toward (default zero) — a base head, so a refit moves
    only as far from it as the new data asks (L2-SP)."""
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    wt = torch.as_tensor(w, dtype=torch.float32)
    wt = wt / wt.sum()
    weight = torch.zeros(k, x.shape[1]) if init is None else torch.as_tensor(init[0], dtype=torch.float32)
    bias = torch.zeros(k) if init is None else torch.as_tensor(init[1], dtype=torch.float32)
    centre = torch.zeros(k, x.shape[1]) if prior is None else torch.as_tensor(prior, dtype=torch.float32)
    if prior is not None and init is None:
        weight = centre.clone()  # start where the penalty is centred
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-5, tolerance_change=1e-7)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        nll = (nn.functional.cross_entropy(xt @ weight.T + bias, yt, reduction="none") * wt).sum()
        loss = nll + 0.5 * l2 * (weight - centre).pow(2).sum()
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
             num_classes: int = len(LABELS), prior_raw: np.ndarray | None = None) -> LinearHead:
    """Fit on ``feats`` (N×D or N×V×D), choosing the L2 penalty by an inner group k-fold on these photos.

    ``prior_raw``: K×D weights on raw features (a base head's, :meth:`LinearHead.raw`) the penalty pulls
    toward instead of zero; they are carried into this fit's standardisation (W·σ).

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
    prior = None if prior_raw is None else np.asarray(prior_raw) * scale
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
                start = _fit_lbfgs(xf, yf, wf, l2, num_classes, init=start, prior=prior)
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
    wgt, b = _fit_lbfgs(xf, yf, wf, l2, num_classes, prior=prior)
    return LinearHead(weight=wgt, bias=b, mean=mean, scale=scale, l2=l2, inner_scores=scores)
