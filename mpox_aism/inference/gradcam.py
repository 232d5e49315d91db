"""Grad-CAM on the torch weights: the explainer for heads that are not GAP → linear (ViT, Swin,
DenseNet's ReLU after its last norm), and the reference the forward-pass CAM is tested against.

Networks with a GAP → linear head explain from their own forward pass instead (``mpox_aism/inference/cam.py``,
the ONNX ``class_maps`` output); this path costs a torch forward and backward pass. Built on
pytorch-grad-cam; its context manager releases the hooks after every call, so a long-running daemon
does not accumulate them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from mpox_aism.contracts.decision import softmax
from mpox_aism.contracts.heatmap import Explanation, overlay_heatmap
from mpox_aism.contracts.preprocess import check_image
from mpox_aism.model.fused import FusedBackbones
from mpox_aism.model.modeldir import ModelInfo, load_model
from mpox_aism.training.preprocess import preprocess


def _vit_reshape(t: torch.Tensor) -> torch.Tensor:
    tokens = t[:, 1:, :]  # drop the class token
    side = int(tokens.shape[1] ** 0.5)
    return tokens.reshape(t.shape[0], side, side, t.shape[2]).permute(0, 3, 1, 2)


def _swin_reshape(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 3, 1, 2)  # torchvision's swin keeps N×H×W×C


def target_layer(model: nn.Module, arch: str) -> tuple[nn.Module, Callable | None]:
    """The layer whose activations Grad-CAM weighs, and how to turn them into N×C×H×W."""
    if isinstance(model, FusedBackbones):  # the branches' concatenated last feature maps
        return model.fuse, None
    if arch == "vit_b_16":
        return model.encoder.layers[-1].ln_1, _vit_reshape
    if arch == "swin_b":
        return model.features[-1], _swin_reshape
    if arch in ("resnet101", "resnext101_64x4d"):
        return model.layer4[-1], None
    if arch == "googlenet":
        return model.inception5b, None
    if arch.startswith("regnet"):
        return model.trunk_output[-1], None
    if arch.startswith("efficientnet_lite"):
        return model._head_act, None
    if arch in ("mobilenet_v2", "efficientnet_b0", "densenet201"):
        return model.features[-1], None
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"no convolution to explain in {arch}")
    return convs[-1], None


class GradCamExplainer:
    """Explain crops with the torch weights of a model directory (default: the shipped model)."""

    def __init__(self, model_path: str | Path | None = None, *, device: str = "cpu",
                 model: nn.Module | None = None, info: ModelInfo | None = None):
        if model is None or info is None:
            model, info = load_model(model_path)
        self.model, self.info = model.to(device).eval(), info
        self.device = device
        self.layer, self.reshape = target_layer(self.model, info.arch)

    def explain(self, crop_rgb: np.ndarray, target: int | None = None) -> Explanation:
        """Heat map for ``target`` (default: the predicted class) over the crop."""
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        check_image(crop_rgb)
        x = preprocess(crop_rgb, self.info.image_size).unsqueeze(0).to(self.device)
        with torch.no_grad():
            probs = softmax(self.model(x).float().cpu().numpy(), self.info.temperature)[0]
        target = int(probs.argmax()) if target is None else int(target)
        with GradCAM(model=self.model, target_layers=[self.layer], reshape_transform=self.reshape) as cam:
            grey = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0]
        h, w = crop_rgb.shape[:2]
        heat = cv2.resize(grey.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        return Explanation(label=self.info.labels[target], target=target, probability=float(probs[target]),
                           heatmap=heat, overlay=overlay_heatmap(crop_rgb, heat))
