"""One ``Classifier`` interface for every runtime: crops in, calibrated probabilities out.

Backends only implement :meth:`Classifier.logits` on an already preprocessed N×3×S×S float32
batch. Preprocessing (``mpox_aism.contracts.preprocess``), chunking into the backend's batch limit and the
temperature-scaled softmax live here, once, so two backends cannot disagree on them.

One classifier is shared by every camera thread and the HTTP thread. A backend says whether its
``logits`` may be called concurrently (``thread_safe``: ONNX Runtime's ``InferenceSession.run`` is;
a TensorRT execution context, with its bound device buffers, is not, nor is a torch module whose
CPU threads would fight each other); when it may not, the base class serialises the calls with one
lock, so a backend cannot forget it.

A backend whose model returns class-activation maps from the forward pass (``can_explain``: the ONNX
file has a ``class_maps`` output, or the torch model a GAP → linear head) also implements
``logits_and_maps``; :meth:`Classifier.explain` then answers and explains a crop in one call — no torch,
no backward pass — with the heat map made as Grad-CAM makes it (``mpox_aism.contracts.heatmap``).

A backend whose model returns its pooled features (``has_features``: the ``features`` output, or the
torch model's head input) lets :meth:`Classifier.classify` add the familiarity score of every crop
(``mpox_aism.contracts.familiarity``, fitted per model and loaded from its directory) in the same
forward pass.
"""

from __future__ import annotations

import abc
import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from mpox_aism.contracts.decision import softmax
from mpox_aism.contracts.familiarity import Familiarity
from mpox_aism.contracts.heatmap import Explanation, heat_from_class_map, overlay_heatmap
from mpox_aism.contracts.model import ModelMeta
from mpox_aism.contracts.preprocess import fit_within, preprocess_batch


@dataclass(frozen=True)
class Classification:
    """Calibrated probabilities of N crops and, where the model has a familiarity score, how unfamiliar
    each crop is (higher: further from the training photos) and the score's threshold."""

    probabilities: np.ndarray  # N×K
    unfamiliarity: np.ndarray | None = None  # N
    threshold: float | None = None

    @property
    def familiar(self) -> np.ndarray | None:
        """N booleans (True: like the training photos), or None without a familiarity score."""
        return None if self.unfamiliarity is None else self.unfamiliarity <= self.threshold


class CropClassifier(Protocol):
    """What the pipeline, the event sink and the diagnosis API need of a classifier: a :class:`Classifier`
    itself, or a caller's handle on the process's inference service (``mpox_aism.inference.service``)."""

    meta: ModelMeta
    familiarity: Familiarity | None
    can_explain: bool

    @property
    def labels(self) -> tuple[str, ...]: ...

    @property
    def image_size(self) -> int: ...

    def classify(self, crops: Sequence[np.ndarray]) -> Classification: ...

    def predict(self, crops: Sequence[np.ndarray]) -> np.ndarray: ...

    def explain(self, crop: np.ndarray, target: int | None = None, *,
                max_side: int | None = None) -> Explanation: ...


class Classifier(abc.ABC):
    """Classify skin crops. ``predict`` is the whole contract the pipeline relies on."""

    backend: str = "abstract"
    thread_safe: bool = False  # may ``logits`` run in two threads at once? (the safe default: no)
    can_explain: bool = False  # does the model give class maps from its forward pass?
    has_features: bool = False  # does it give the pooled features (the familiarity score's input)?

    def __init__(self, meta: ModelMeta, *, max_batch: int = 32):
        meta.check_compatible(self.backend)
        self.meta = meta
        self.max_batch = max_batch
        self.familiarity: Familiarity | None = None  # set by ``load_classifier`` from the model directory
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

    def logits_and_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits and N×K×h×w class maps, for backends with ``can_explain``."""
        raise NotImplementedError(f"{self.backend}: this model gives no class maps; use Grad-CAM")

    def logits_and_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits and the N×D pooled features the head reads, for backends with ``has_features``."""
        raise NotImplementedError(f"{self.backend}: this model gives no features (an ONNX file exported before "
                                  "session 10? re-export it with `mpox-aism export onnx`)")

    def logits_maps_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Logits, class maps and (where the backend gives them in the same pass) features; the default
        makes the features a second pass, or gives None without them."""
        logits, maps = self.logits_and_maps(batch)
        return logits, maps, (self.logits_and_features(batch)[1] if self.has_features else None)

    def explain(self, crop: np.ndarray, target: int | None = None, *, max_side: int | None = None) -> Explanation:
        """Probabilities of every class, the crop's unfamiliarity (where the model has a familiarity score)
        and the heat map of ``target`` (default: the top class), one forward pass.

        The network sees the whole crop; the heat map and overlay are made at most ``max_side`` a side.
        """
        batch = preprocess_batch([crop], self.image_size)
        with self._lock:
            if self.familiarity is not None and self.has_features:
                logits, maps, feats = self.logits_maps_features(batch)
            else:
                (logits, maps), feats = self.logits_and_maps(batch), None
        probs = softmax(logits, self.meta.temperature)[0].astype(np.float32)
        target = int(probs.argmax()) if target is None else int(target)
        shown = crop if max_side is None else fit_within(crop, max_side)
        heat = heat_from_class_map(maps[0, target], self.image_size, shown.shape[:2])
        unfamiliar = None if feats is None or self.familiarity is None else \
            float(self.familiarity.unfamiliarity(feats, logits)[0])
        return Explanation(label=self.labels[target], target=target, probability=float(probs[target]), heatmap=heat,
                           overlay=overlay_heatmap(shown, heat), probabilities=probs, unfamiliarity=unfamiliar)

    def predict_preprocessed(self, batch: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for an N×3×S×S batch already made by ``preprocess``."""
        if batch.ndim != 4 or batch.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(f"expected N×3×{self.image_size}×{self.image_size}, got {batch.shape}")
        if len(batch) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        out = self._chunked(self.logits, np.ascontiguousarray(batch, dtype=np.float32))
        return softmax(np.concatenate(out), self.meta.temperature).astype(np.float32)

    def _chunked(self, run: Callable[[np.ndarray], Any], batch: np.ndarray) -> list[Any]:
        """``run`` on slices of at most ``max_batch``, under the backend's lock when it needs one."""
        with self._lock:
            return [run(batch[i:i + self.max_batch]) for i in range(0, len(batch), self.max_batch)]

    def predict(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 crops (any size) → N×8 probabilities, temperature applied."""
        return self.predict_preprocessed(preprocess_batch(list(crops), self.image_size))

    def classify(self, crops: Sequence[np.ndarray]) -> Classification:
        """:meth:`predict` plus each crop's familiarity score, from the same forward pass, where the model
        has a score and the backend gives the features; the probabilities alone otherwise."""
        return self.classify_preprocessed(preprocess_batch(list(crops), self.image_size))

    def classify_preprocessed(self, batch: np.ndarray) -> Classification:
        """:meth:`classify` on a batch already made by ``preprocess_batch`` (the inference service
        preprocesses in each caller's thread and runs only the forward pass in its own)."""
        if self.familiarity is None or not self.has_features:
            return Classification(self.predict_preprocessed(batch))
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if len(batch) == 0:
            return Classification(np.zeros((0, len(self.labels)), np.float32), np.zeros(0), self.familiarity.threshold)
        parts = self._chunked(self.logits_and_features, batch)
        logits = np.concatenate([p[0] for p in parts])
        feats = np.concatenate([p[1] for p in parts])
        return Classification(softmax(logits, self.meta.temperature).astype(np.float32),
                              self.familiarity.unfamiliarity(feats, logits), self.familiarity.threshold)

    def describe(self) -> dict:
        """Backend, precision and versions, for benchmark JSON and /metrics."""
        return {"backend": self.backend, "model_version": self.meta.model_version, "max_batch": self.max_batch}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device memory / sessions."""

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
