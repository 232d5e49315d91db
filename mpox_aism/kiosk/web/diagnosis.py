"""The diagnosis of one uploaded photo: decode → classify → the threshold rule → explain.

Shared by ``POST /v1/diagnose`` (machine token) and the staff upload page (login session), so both
give the same answer under the same limits. Research use only: a screening aid, never a diagnosis.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from mpox_aism.contracts.decision import State, decide
from mpox_aism.contracts.heatmap import Explanation
from mpox_aism.inference.classifier import Classifier
from mpox_aism.inference.explainer import ExplainerService
from mpox_aism.kiosk.web.upload import decode_upload

log = logging.getLogger(__name__)

GRADCAM_MAX_SIDE = 512  # the network sees 224 px; a 12 MP heat map would make a 20 MB JSON answer


class Diagnosis(BaseModel):
    """The diagnosis API's answer for one photo."""

    label: str = Field(description="Most probable class.")
    probability: float = Field(ge=0, le=1, description="Calibrated probability of `label`.")
    decision: State = Field(description="review: top probability under `threshold` (a person decides); "
                                        "suspected: a notifiable class (mpox) at or over it; clear: otherwise.")
    threshold: float = Field(description="Confidence under which the photo goes to a person (0.6).")
    probabilities: dict[str, float] = Field(description="Calibrated probability of every class; sums to 1.")
    model_version: str = Field(description="Model that answered.")
    gradcam_png_base64: str | None = Field(
        None, description="Grad-CAM overlay for `label` as a base64 PNG (at most 512 px a side); present when "
                          "the server was started with an explainer.")
    research_use_only: Literal[True] = Field(True, description="A screening aid for research, not a diagnosis.")


def _png_b64(explanation: Explanation) -> str:
    return base64.b64encode(explanation.overlay_png()).decode("ascii")


class DiagnosisService:
    """One uploaded photo: decode → classify → the threshold rule → explain. Runs in a worker thread.

    When the classifier's model gives class maps, one forward pass answers and explains; otherwise the
    process's Grad-CAM explainer runs after the classification, for the classifier's own label.
    ``explainer`` None: answers carry no heat map.
    """

    def __init__(self, classifier: Classifier, explainer: ExplainerService | None, *,
                 threshold: float, notifiable: Sequence[str], max_pixels: int) -> None:
        self.classifier, self.labels = classifier, tuple(classifier.labels)
        self.threshold, self.notifiable, self.max_pixels = threshold, tuple(notifiable), max_pixels
        self.model_version = str(classifier.meta.model_version)
        self.explainer = explainer

    def _overlay_png(self, rgb: np.ndarray, top: int) -> str | None:
        if self.explainer is None:
            return None
        try:
            # explain the classifier's label, not the torch model's own argmax, so the two agree
            return _png_b64(self.explainer.explain(rgb, target=top, max_side=GRADCAM_MAX_SIDE))
        except Exception:  # the classification stands without its picture
            log.exception("Grad-CAM failed; answering without the overlay")
            return None

    def analyse(self, data: bytes) -> Diagnosis:
        rgb = decode_upload(data, self.max_pixels)
        one_pass = self.explainer is not None and self.explainer.one_pass
        png: str | None = None
        probs: np.ndarray | None = None
        if one_pass:  # one forward pass answers and explains
            try:
                exp = self.explainer.explain(rgb, max_side=GRADCAM_MAX_SIDE)  # type: ignore[union-attr]
                probs, png = np.asarray(exp.probabilities, dtype=np.float64), _png_b64(exp)
            except Exception:  # the classification below stands without its picture
                log.exception("explanation failed; answering without the overlay")
        if probs is None:
            probs = np.asarray(self.classifier.predict([rgb])[0], dtype=np.float64)
        top = int(np.argmax(probs))
        if not one_pass:
            png = self._overlay_png(rgb, top)
        label, p = self.labels[top], float(probs[top])
        return Diagnosis(label=label, probability=p, threshold=self.threshold,
                         decision=decide(label, p, threshold=self.threshold, notifiable=self.notifiable),
                         probabilities={k: float(v) for k, v in zip(self.labels, probs, strict=True)},
                         model_version=self.model_version, gradcam_png_base64=png)
