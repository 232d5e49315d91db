"""The numpy half of the one preprocessing function, and the one max-side resize.

Train/serve skew is the classic bug of deployed classifiers, so there is exactly one definition of
how an RGB uint8 image becomes the network's input: resize the whole image to ``size``×``size``
(no centre crop — a lesion at the edge of a camera crop must not be cut away), scale to [0, 1],
normalise with the ImageNet mean/std, CHW float32. Training augments *before* calling it and wraps
it as a tensor (``mpox_aism.training.preprocess.preprocess``); the ONNX parity check and every backend call
it as is.
"""

from __future__ import annotations

import cv2
import numpy as np

MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
DEFAULT_IMAGE_SIZE = 224


def check_image(image: object) -> None:
    """Reject what is not an RGB uint8 picture, with a message that says what was received."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected a numpy array (H, W, 3) uint8 RGB, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 RGB image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image of shape {image.shape}")


def resize_square(image_rgb: np.ndarray, size: int) -> np.ndarray:
    """The whole image to size×size, aspect not kept: area averaging when shrinking, bilinear otherwise.

    Also what SimCLR's on-device views start from, so pretraining sees the classifier's geometry.
    """
    if image_rgb.shape[0] == size and image_rgb.shape[1] == size:
        return image_rgb
    shrinking = image_rgb.shape[0] > size or image_rgb.shape[1] > size
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image_rgb, (size, size), interpolation=interp)


def fit_within(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink (never enlarge) so the longer side is at most ``max_side``, aspect kept.

    For pictures shown to people (event crops, heat maps, the live view), not for the network.
    """
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def preprocess_numpy(image_rgb: np.ndarray, size: int = DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """RGB uint8 H×W×3 → normalised float32 3×size×size."""
    check_image(image_rgb)
    x = resize_square(image_rgb, size).astype(np.float32) / 255.0
    x = (x - np.asarray(MEAN, dtype=np.float32)) / np.asarray(STD, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess_batch(images: list[np.ndarray], size: int = DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """Stack several crops into one N×3×size×size float32 batch."""
    if not images:
        return np.zeros((0, 3, size, size), dtype=np.float32)
    return np.stack([preprocess_numpy(im, size) for im in images])
