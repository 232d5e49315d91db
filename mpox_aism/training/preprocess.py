"""The tensor form of the one preprocessing function (``mpox_aism.contracts.preprocess`` is its numpy half).

Training's evaluation transform and augmentation end here, so the training input and the serving
input share resize and normalisation; only the final ``torch.from_numpy`` is training's own.
"""

from __future__ import annotations

import numpy as np
import torch

from mpox_aism.contracts.preprocess import DEFAULT_IMAGE_SIZE, preprocess_numpy


def preprocess(image_rgb: np.ndarray, size: int = DEFAULT_IMAGE_SIZE) -> torch.Tensor:
    """RGB uint8 H×W×3 → normalised float32 tensor 3×size×size."""
    return torch.from_numpy(preprocess_numpy(image_rgb, size))
