"""Class-activation maps from the forward pass, for networks whose head is GAP → linear.

``WithClassMaps`` wraps a trained network so one forward pass returns the logits and, for every
class k, ``Σ_c W_kc · A_c`` over the last feature map A (the layer Grad-CAM would weigh, see
``mpox_aism.inference.gradcam.target_layer``). Grad-CAM's weights for such a head are ``W_kc / (h·w)``, so after
ReLU and min-max (``mpox_aism.contracts.heatmap``) the two maps are the same picture, at the cost of a
forward pass instead of a forward and a backward. It is what the ONNX export adds as a second
output (``class_maps``, N×K×h×w) and what the torch backend runs when asked to explain.
"""

from __future__ import annotations

import torch
from torch import nn

from mpox_aism.inference.gradcam import target_layer
from mpox_aism.model.zoo import classifier_head, head_inputs

# families whose target layer's output goes straight into global average pooling and one linear
# layer (dropout is identity at inference); DenseNet applies a ReLU after its last norm, ViT and
# Swin are not convolutional: those keep Grad-CAM
CAM_PREFIXES = ("mobilenet_v2", "efficientnet", "resnet", "resnext", "regnet", "googlenet")


def supports_class_maps(arch: str) -> bool:
    return arch.startswith(CAM_PREFIXES)


class WithClassMaps(nn.Module):
    def __init__(self, model: nn.Module, arch: str) -> None:
        super().__init__()
        if not supports_class_maps(arch):
            raise ValueError(f"{arch}: no GAP → linear head to read class maps from; use Grad-CAM")
        self.model = model
        self.head = classifier_head(model)
        self.layer, _ = target_layer(model, arch)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features: list[torch.Tensor] = []
        # hooked for this call only: the wrapped model also serves plain predictions, which must not
        # keep feature maps alive
        handle = self.layer.register_forward_hook(lambda _m, _i, out: features.append(out))
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        maps = torch.einsum("nchw,kc->nkhw", features[-1], self.head.weight.to(features[-1].dtype))
        return logits, maps


class WithFeatures(nn.Module):
    """Logits and the pooled features the head reads (N×D), one forward pass; plus the class maps
    when the head is GAP → linear. The ONNX export's outputs, and the torch backend's familiarity path.

    Why the head's input: it is what the shipped linear probe was fitted on, so a familiarity score
    on it measures distance in the very space the decision is made in, and any backend can hand it
    to the numpy scorer (``mpox_aism.contracts.familiarity``) without torch.
    """

    def __init__(self, model: nn.Module, arch: str) -> None:
        super().__init__()
        self.model = model
        self.maps = WithClassMaps(model, arch) if supports_class_maps(arch) else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with head_inputs(self.model) as pooled:
            if self.maps is not None:
                logits, maps = self.maps(x)
                return logits, pooled[-1], maps
            return self.model(x), pooled[-1]
