"""One ``Classifier`` interface for every runtime: crops in, calibrated probabilities out.

Backends only implement :meth:`Classifier.logits` on an already preprocessed N×3×S×S float32
batch. Preprocessing (``training.preprocess``), chunking into the backend's batch limit and the
temperature-scaled softmax live here, once, so two backends cannot disagree on them.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from training.calibration import softmax
from training.labels import LABELS
from training.metrics import DEFAULT_THRESHOLD
from training.preprocess import MEAN, STD, preprocess_batch


@dataclass(frozen=True)
class ModelMeta:
    """What a backend must know about the network it runs; stored in ONNX metadata and sidecars."""

    image_size: int
    labels: tuple[str, ...] = LABELS
    mean: tuple[float, ...] = MEAN
    std: tuple[float, ...] = STD
    temperature: float = 1.0
    threshold: float = DEFAULT_THRESHOLD
    model_version: str = ""
    arch: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    def check_compatible(self, source: str) -> None:
        """Refuse a model whose label order or normalisation differs from this build's contract."""
        if tuple(self.labels) != tuple(LABELS):
            raise ValueError(f"{source}: labels {list(self.labels)} differ from this build's {list(LABELS)}")
        if not (np.allclose(self.mean, MEAN) and np.allclose(self.std, STD)):
            raise ValueError(f"{source}: normalisation mean={self.mean} std={self.std} differs from preprocess()")


class Classifier(abc.ABC):
    """Classify skin crops. ``predict`` is the whole contract the pipeline relies on."""

    backend: str = "abstract"

    def __init__(self, meta: ModelMeta, *, max_batch: int = 32):
        meta.check_compatible(self.backend)
        self.meta = meta
        self.max_batch = max_batch

    @property
    def labels(self) -> tuple[str, ...]:
        return self.meta.labels

    @property
    def image_size(self) -> int:
        return self.meta.image_size

    @abc.abstractmethod
    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw logits for a preprocessed float32 batch of at most ``max_batch`` images."""

    def predict_preprocessed(self, batch: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for an N×3×S×S batch already made by ``preprocess``."""
        if batch.ndim != 4 or batch.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(f"expected N×3×{self.image_size}×{self.image_size}, got {batch.shape}")
        if len(batch) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        out = [self.logits(batch[i:i + self.max_batch]) for i in range(0, len(batch), self.max_batch)]
        return softmax(np.concatenate(out), self.meta.temperature).astype(np.float32)

    def predict(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 crops (any size) → N×8 probabilities, temperature applied."""
        return self.predict_preprocessed(preprocess_batch(list(crops), self.image_size))

    def describe(self) -> dict:
        """Backend, precision and versions, for benchmark JSON and /metrics."""
        return {"backend": self.backend, "model_version": self.meta.model_version, "max_batch": self.max_batch}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device memory / sessions."""

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
