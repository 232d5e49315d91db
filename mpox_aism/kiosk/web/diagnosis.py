"""The diagnosis of one uploaded photo: decode → check → classify → the decision rule → explain.

Shared by ``POST /v1/diagnose`` (machine token) and the staff upload page (login session), so both
give the same answer under the same limits. The answer uses the pipeline's states and review reasons
(``mpox_aism.contracts.decision``): a photo that fails the photo checks (``http.photo_checks``: too
dark, blurred, noise, too little skin) or that the model's familiarity score finds unlike its
training photos is ``review`` / ``unfamiliar`` — the model's label is still given, never as the
answer. Research use only: a screening aid, never a diagnosis.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from mpox_aism.contracts.decision import ReviewReason, State, decide
from mpox_aism.contracts.heatmap import Explanation
from mpox_aism.contracts.preprocess import resize_square
from mpox_aism.inference.classifier import CropClassifier
from mpox_aism.inference.explainer import ExplainerService
from mpox_aism.kiosk.config import PhotoChecks
from mpox_aism.kiosk.web.upload import decode_upload
from mpox_aism.pipeline.crops import ImageMeasures

log = logging.getLogger(__name__)

GRADCAM_MAX_SIDE = 512  # the network sees 224 px; a 12 MP heat map would make a 20 MB JSON answer


class Diagnosis(BaseModel):
    """The diagnosis API's answer for one photo."""

    label: str = Field(description="Most probable class.")
    probability: float = Field(ge=0, le=1, description="Calibrated probability of `label`.")
    decision: State = Field(description="suspected: a notifiable class (mpox) at or over `threshold`; "
                                        "other_condition: another disease at or over it (`label` says which); "
                                        "clear: healthy skin at or over it; review: a person decides (`reason`).")
    reason: ReviewReason | None = Field(None, description="Why a review: unfamiliar (the photo failed the photo "
                                        "checks or is unlike the training photos; `detail` says which) or "
                                        "low_confidence (top probability under `threshold`). Absent otherwise.")
    detail: str | None = Field(None, description="What made the photo unfamiliar, in words.")
    threshold: float = Field(description="Confidence under which the photo goes to a person (0.6).")
    probabilities: dict[str, float] = Field(description="Calibrated probability of every class; sums to 1.")
    unfamiliarity: float | None = Field(None, description="The model's familiarity score (higher: less like its "
                                        "training photos); absent for a model without one.")
    model_version: str = Field(description="Model that answered.")
    gradcam_png_base64: str | None = Field(
        None, description="Grad-CAM overlay for `label` as a base64 PNG (at most 512 px a side); present when "
                          "the server was started with an explainer.")
    research_use_only: Literal[True] = Field(True, description="A screening aid for research, not a diagnosis.")


def _png_b64(explanation: Explanation) -> str:
    return base64.b64encode(explanation.overlay_png()).decode("ascii")


class DiagnosisService:
    """One uploaded photo: decode → check → classify → the decision rule → explain. Runs in a worker thread.

    When the classifier's model gives class maps, one forward pass answers, scores familiarity and
    explains; otherwise the process's Grad-CAM explainer runs after the classification, for the
    classifier's own label. ``explainer`` None: answers carry no heat map.
    """

    def __init__(self, classifier: CropClassifier, explainer: ExplainerService | None, *,
                 threshold: float, notifiable: Sequence[str], max_pixels: int,
                 checks: PhotoChecks | None = None) -> None:
        self.classifier, self.labels = classifier, tuple(classifier.labels)
        self.threshold, self.notifiable, self.max_pixels = threshold, tuple(notifiable), max_pixels
        self.checks = checks or PhotoChecks()
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

    def check(self, rgb: np.ndarray) -> str | None:
        """What the photo, as the network sees it, fails of the photo checks (None: nothing)."""
        return self.checks.problem(ImageMeasures.of(resize_square(rgb, self.classifier.image_size)))

    def _classify(self, rgb: np.ndarray) -> tuple[np.ndarray, float | None, str | None]:
        """Probabilities, unfamiliarity and the overlay PNG: one pass where the model has class maps."""
        one_pass = self.explainer is not None and self.explainer.one_pass
        if one_pass:
            try:
                exp = self.explainer.explain(rgb, max_side=GRADCAM_MAX_SIDE)  # type: ignore[union-attr]
                return np.asarray(exp.probabilities, dtype=np.float64), exp.unfamiliarity, _png_b64(exp)
            except Exception:  # the classification below stands without its picture
                log.exception("explanation failed; answering without the overlay")
        c = self.classifier.classify([rgb])
        probs = np.asarray(c.probabilities[0], dtype=np.float64)
        unfamiliar = None if c.unfamiliarity is None else float(c.unfamiliarity[0])
        return probs, unfamiliar, None if one_pass else self._overlay_png(rgb, int(np.argmax(probs)))

    def analyse(self, data: bytes) -> Diagnosis:
        rgb = decode_upload(data, self.max_pixels)
        problem = self.check(rgb)
        probs, unfamiliarity, png = self._classify(rgb)
        familiarity = self.classifier.familiarity
        if problem is None and unfamiliarity is not None and familiarity is not None \
                and unfamiliarity > familiarity.threshold:
            problem = "unlike the photos the model was trained on"
        top = int(np.argmax(probs))
        label, p = self.labels[top], float(probs[top])
        verdict = decide(label, p, threshold=self.threshold, notifiable=self.notifiable, familiar=problem is None)
        return Diagnosis(label=label, probability=p, threshold=self.threshold, decision=verdict.state,
                         reason=verdict.reason, detail=problem,
                         probabilities={k: float(v) for k, v in zip(self.labels, probs, strict=True)},
                         unfamiliarity=unfamiliarity, model_version=self.model_version, gradcam_png_base64=png)
