"""One ``Classifier`` interface for every runtime: crops in, calibrated probabilities out.

Backends only implement :meth:`Classifier.logits` on an already preprocessed N×3×S×S float32
batch. Preprocessing (``contracts.preprocess``), chunking into the backend's batch limit and the
temperature-scaled softmax live here, once, so two backends cannot disagree on them.

One classifier is shared by every camera thread and the HTTP thread. A backend says whether its
``logits`` may be called concurrently (``thread_safe``: ONNX Runtime's ``InferenceSession.run`` is;
a TensorRT execution context, with its bound device buffers, is not, nor is a torch module whose
CPU threads would fight each other); when it may not, the base class serialises the calls with one
lock, so a backend cannot forget it.
"""

from __future__ import annotations

import abc
import contextlib
import threading
from collections.abc import Sequence

import numpy as np

from contracts.decision import softmax
from contracts.model import ModelMeta
from contracts.preprocess import preprocess_batch


class Classifier(abc.ABC):
    """Classify skin crops. ``predict`` is the whole contract the pipeline relies on."""

    backend: str = "abstract"
    thread_safe: bool = False  # may ``logits`` run in two threads at once? (the safe default: no)

    def __init__(self, meta: ModelMeta, *, max_batch: int = 32):
        meta.check_compatible(self.backend)
        self.meta = meta
        self.max_batch = max_batch
        self._lock: contextlib.AbstractContextManager = (contextlib.nullcontext() if self.thread_safe
                                                          else threading.Lock())

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
        with self._lock:
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
