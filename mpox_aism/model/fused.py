"""Two ImageNet backbones side by side, one linear head on their concatenated features.

Why: out of fold, MobileNetV2 and EfficientNet-Lite2 features together gave a better probe than
either alone (k-fold macro-F1 +0.03, fewer healthy camera crops called mpox, docs/RESULTS.md) — the
two backbones were trained differently and err differently. Why this shape: both end in a stride-32
feature map of the same size (7×7 at 224 px), so the two maps are concatenated along channels
*before* pooling. The network is then still "last feature map → GAP → one ``nn.Linear``": the
forward-pass class maps of ``mpox_aism.inference.cam`` and Grad-CAM (``fuse`` is their layer) stay exact, the
probe's feature hook reads the head's input, and ONNX export needs nothing new. Both branches read
the same preprocessed input (one image size, one preprocessing function).

An architecture name is the two backbones joined by ``+``: ``mobilenet_v2+efficientnet_lite2``.
"""

from __future__ import annotations

import torch
from torch import nn

FUSED_SEPARATOR = "+"


def fused_parts(arch: str) -> tuple[str, ...]:
    """``"a+b"`` → ``("a", "b")``; a single backbone's name → ``()``."""
    return tuple(arch.split(FUSED_SEPARATOR)) if FUSED_SEPARATOR in arch else ()


def _strip_head(branch: nn.Module) -> nn.Module:
    """The branch's own classifier is never used: drop it so it is neither saved nor hashed."""
    for name in ("classifier", "_fc", "_dropout"):
        if hasattr(branch, name):
            setattr(branch, name, nn.Identity())
    return branch


class FusedBackbones(nn.Module):
    """``branches`` → channel-concatenated last feature maps (``fuse``) → GAP → ``fc``."""

    def __init__(self, branches: dict[str, nn.Module], *, num_classes: int, image_size: int) -> None:
        super().__init__()
        if len(branches) < 2:
            raise ValueError("a fused network needs at least two backbones")
        self.arch = FUSED_SEPARATOR.join(branches)
        self.branches = nn.ModuleList(_strip_head(b) for b in branches.values())
        with torch.no_grad():
            shapes = [b.eval().features(torch.zeros(1, 3, image_size, image_size)).shape[1:]
                      for b in self.branches]
        if len({s[1:] for s in shapes}) != 1:
            raise ValueError(f"{self.arch} at {image_size} px: feature maps differ in size "
                             f"({', '.join('×'.join(map(str, s[1:])) for s in shapes)}), cannot be fused")
        self.fuse = nn.Identity()  # the fused last feature map: what Grad-CAM and class maps read
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(sum(s[0] for s in shapes), num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([b.features(x) for b in self.branches], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x).mean(dim=(2, 3))))
