"""Linear probe, then fine-tune the top of the network (LP-FT) on cached activations.

Kumar et al. (2022, "Fine-tuning can distort pretrained features") find that fine-tuning from a
linear-probe head changes the backbone less and generalises better out of distribution than
fine-tuning from a random head. Here only the last ``blocks`` of the network (and its head) are
tuned: the frozen part's output is computed once per photo and view, so each fold's tuning costs
seconds per epoch on the CPU instead of a full network's minutes. Batch-norm statistics stay
frozen (small, class-balanced batches would skew them); dropout is on.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mpox_aism.model.efficientnet_lite import EfficientNetLite
from mpox_aism.model.zoo import classifier_head
from mpox_aism.training.data import Sample
from mpox_aism.training.probe import LinearHead, view_batches


class _LiteStem(nn.Module):
    """Stem conv and the first ``k`` blocks of an EfficientNet-Lite (shared modules, not copies)."""

    def __init__(self, m: EfficientNetLite, k: int):
        super().__init__()
        self.conv, self.bn, self.blocks = m._conv_stem, m._bn0, nn.ModuleList(m._blocks[:k])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.relu6(self.bn(self.conv(x)))
        for block in self.blocks:
            x = block(x)
        return x


class _LiteTop(nn.Module):
    """The remaining blocks, head conv, pooling and classifier; its parameters are what LP-FT tunes."""

    def __init__(self, m: EfficientNetLite, k: int):
        super().__init__()
        self.blocks = nn.ModuleList(m._blocks[k:])
        self.conv, self.bn, self.act, self.dropout, self.fc = m._conv_head, m._bn1, m._head_act, m._dropout, m._fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        x = self.act(self.bn(self.conv(x)))
        return self.fc(self.dropout(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)))


class _MobileTop(nn.Module):
    def __init__(self, m: nn.Module, k: int):
        super().__init__()
        self.features, self.classifier = m.features[k:], m.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@dataclass
class Split:
    """``top(stem(x)) == model(x)``; both hold the model's own modules, so tuning ``top`` tunes the model."""

    stem: nn.Module
    top: nn.Module


def split_model(model: nn.Module, arch: str, blocks: int) -> Split:
    """Freeze all but the last ``blocks`` feature stages (the head conv counts as one)."""
    if arch == "mobilenet_v2":
        depth = len(model.features)
    elif isinstance(model, EfficientNetLite):
        depth = len(model._blocks) + 1
    else:
        depth = 0
    if depth and not 1 <= blocks < depth:
        raise ValueError(f"--tune-blocks must be in 1..{depth - 1} for {arch}, got {blocks}")
    if arch == "mobilenet_v2":
        k = depth - blocks
        return Split(stem=model.features[:k], top=_MobileTop(model, k))
    if isinstance(model, EfficientNetLite):
        k = depth - blocks
        return Split(stem=_LiteStem(model, k), top=_LiteTop(model, k))
    raise ValueError(f"top fine-tuning is implemented for mobilenet_v2 and efficientnet_lite*, not {arch}")


@torch.no_grad()
def stem_outputs(stem: nn.Module, samples: list[Sample], *, image_size: int, batch_size: int = 32,
                 workers: int = 1) -> np.ndarray:
    """N × 2 views (photo, mirror) × C×H×W float16: the frozen part's output, computed once."""
    stem.eval()
    out = []
    for x in view_batches(samples, image_size=image_size, flip=True, batch_size=batch_size, workers=workers):
        n = x.shape[0]
        h = stem(x.flatten(0, 1))
        out.append(h.reshape(n, 2, *h.shape[1:]).half().numpy())
    return np.concatenate(out)


def tune_top(model: nn.Module, arch: str, blocks: int, stem_out: np.ndarray, y: np.ndarray,
             weights: np.ndarray, *, head: LinearHead, epochs: int = 6, lr: float = 3e-4, weight_decay: float = 0.05,
             batch_size: int = 64, seed: int = 0) -> nn.Module:
    """A tuned copy of ``model``: head initialised from the probe, then the top trained on every view."""
    model = copy.deepcopy(model)
    split = split_model(model, arch, blocks)
    head.fold_into(classifier_head(model))
    params = list(split.top.parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    n, v = stem_out.shape[:2]
    rows = np.arange(n * v)
    yy = torch.as_tensor(np.repeat(y, v), dtype=torch.long)
    ww = torch.as_tensor(np.repeat(weights, v), dtype=torch.float32)
    steps = epochs * math.ceil(len(rows) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    flat = stem_out.reshape(n * v, *stem_out.shape[2:])
    for _ in range(epochs):
        split.top.train()
        for m in split.top.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        order = rng.permutation(rows)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x = torch.from_numpy(flat[idx].astype(np.float32))
            loss = (nn.functional.cross_entropy(split.top(x), yy[idx], reduction="none") * ww[idx]).sum()
            loss = loss / ww[idx].sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@torch.no_grad()
def top_logits(model: nn.Module, arch: str, blocks: int, stem_out: np.ndarray, *, tta: bool,
               batch_size: int = 128) -> np.ndarray:
    """Logits from cached stem outputs: the photo's, or the mean over photo and mirror with ``tta``."""
    top = split_model(model, arch, blocks).top.eval()
    views = stem_out if tta else stem_out[:, :1]
    n, v = views.shape[:2]
    flat = views.reshape(n * v, *views.shape[2:])
    out = [top(torch.from_numpy(flat[i:i + batch_size].astype(np.float32))).numpy()
           for i in range(0, len(flat), batch_size)]
    return np.concatenate(out).reshape(n, v, -1).mean(axis=1)
