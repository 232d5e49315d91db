"""From a class-activation map to the picture a person sees: one normalisation for every explainer.

For a network whose head is global-average-pool → linear (MobileNetV2, EfficientNet, ResNet/ResNeXt,
RegNet), Grad-CAM's channel weights are the linear layer's weights divided by the map size, so
Grad-CAM *is* CAM: ``ReLU(Σ_k w_ck · A_k)`` on the last feature map, available from the forward pass
(the ONNX model's ``class_maps`` output). This module turns such a map into a heat map exactly as
pytorch-grad-cam does (ReLU, min-max to [0, 1], bilinear to the network's input size, min-max again)
and then to the crop's size, so the two explainers agree (``tests/export/test_cam.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    x = x - np.min(x)
    return x / (1e-7 + np.max(x))


def heat_from_class_map(class_map: np.ndarray, input_size: int, out_hw: tuple[int, int]) -> np.ndarray:
    """One class's h×w activation map → H×W float32 heat in [0, 1] at ``out_hw``."""
    heat = _unit(np.maximum(np.asarray(class_map, dtype=np.float32), 0))
    heat = _unit(cv2.resize(heat, (input_size, input_size)))
    return cv2.resize(heat.astype(np.float32), (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)


def overlay_heatmap(crop_rgb: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    colour = cv2.applyColorMap(np.uint8(255 * np.clip(heatmap, 0, 1)), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(crop_rgb, 1 - alpha, colour, alpha, 0)


def _encode(rgb: np.ndarray, ext: str, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params or [])
    if not ok:
        raise ValueError(f"could not encode {ext}")
    return buf.tobytes()


class Explainer(Protocol):
    """What explains a crop: a ``Classifier`` with class maps, or ``mpox_aism.inference.gradcam.GradCamExplainer``."""

    def explain(self, crop_rgb: np.ndarray, target: int | None = None) -> Explanation: ...


@dataclass
class Explanation:
    label: str
    target: int
    probability: float
    heatmap: np.ndarray  # H×W float32 in [0, 1], at the overlay's size
    overlay: np.ndarray  # H×W×3 RGB uint8
    probabilities: np.ndarray | None = None  # every class, when the explanation came with the answer
    unfamiliarity: float | None = None  # the familiarity score, when it came with the answer (model permitting)

    def overlay_png(self) -> bytes:
        return _encode(self.overlay, ".png")

    def overlay_jpeg(self, quality: int = 85) -> bytes:
        return _encode(self.overlay, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality])
