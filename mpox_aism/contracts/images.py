"""Finding and decoding image files: one suffix list, one hidden-file rule, one decoder.

A path is an image when its suffix is one of ``IMAGE_SUFFIXES`` and no part of it below the folder
being listed starts with a dot (editor backups, ``.DS_Store``, ``.ipynb_checkpoints``, a hidden
cache): every lister — datasets, camera image folders, parity and calibration data — uses this
rule, so a photo cannot be trained on yet skipped by the kiosk, or the other way round.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


class DatasetError(ValueError):
    """The data on disk cannot be used as given; the message names the offending file."""


def is_image_name(name: str) -> bool:
    """The naming half of the rule (for ``os.walk`` callers that see names, not paths)."""
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


def is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def list_images(root: str | Path, *, recursive: bool = True) -> list[Path]:
    """Image files under ``root``, sorted by path (so every run sees the same order)."""
    root = Path(root)
    candidates = root.rglob("*") if recursive else root.iterdir()
    return sorted(p for p in candidates
                  if p.suffix.lower() in IMAGE_SUFFIXES and not is_hidden(p, root) and p.is_file())


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB uint8; a clear error when it cannot be decoded."""
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None or image.size == 0:
        raise DatasetError(f"cannot decode image {path}: not an image, or truncated/corrupt")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
