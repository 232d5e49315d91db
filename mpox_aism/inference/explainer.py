"""One explainer per process, shared by the event sink and the diagnosis API.

A heat map comes from the classifier's own forward pass when its model has class maps (the shipped
GAP → linear networks: no torch, one pass); otherwise from Grad-CAM (ViT, Swin, DenseNet), built on
the first crop that needs it so torch stays out of memory until then. Grad-CAM hooks a shared torch
model and is not thread-safe, so every caller — each camera's sink, each API request — goes through
this one object and its one lock; the class-map path needs no lock of its own (the classifier
serialises itself when its backend must).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mpox_aism.contracts.heatmap import Explainer, Explanation
from mpox_aism.contracts.preprocess import fit_within
from mpox_aism.inference.classifier import CropClassifier


class ExplainerService:
    """``explain(rgb, target)`` for whoever asks. ``gradcam``: the Grad-CAM explainer, or a factory
    for one, to use when the classifier has no class maps (default: ``GradCamExplainer(model)``)."""

    def __init__(self, classifier: CropClassifier, *, model: str | Path | None = None,
                 gradcam: Explainer | Callable[[], Explainer] | None = None) -> None:
        self.classifier = classifier
        self._model, self._gradcam, self._built = model, gradcam, None
        self._lock = threading.Lock()

    def with_classifier(self, classifier: CropClassifier) -> ExplainerService:
        """This explainer (its one Grad-CAM model and lock) with its one-pass heat maps made by ``classifier``:
        each caller of the inference service explains through its own handle, so it waits in its own turn."""
        other = ExplainerService(classifier, model=self._model, gradcam=self._grad_cam)
        other._lock = self._lock
        return other

    @property
    def one_pass(self) -> bool:
        """True when the forward pass that classifies also explains (the class-map path)."""
        return bool(self.classifier.can_explain)

    def _grad_cam(self) -> Explainer:
        if self._built is None:
            g = self._gradcam
            if g is None:
                from mpox_aism.inference.gradcam import GradCamExplainer

                self._built = GradCamExplainer(self._model)
            else:
                self._built = g if hasattr(g, "explain") else g()  # type: ignore[operator]
        return self._built  # type: ignore[return-value]

    def explain(self, rgb: np.ndarray, target: int | None = None, *, max_side: int | None = None) -> Explanation:
        """Probabilities and the heat map of ``target`` (default: the top class), made at most ``max_side`` a side."""
        if self.one_pass:
            return self.classifier.explain(rgb, target, max_side=max_side)
        crop = fit_within(rgb, max_side) if max_side else rgb
        with self._lock:  # also guards building the Grad-CAM explainer once
            return self._grad_cam().explain(crop, target=target)
