"""Runtime backends behind the one ``Classifier`` interface.

Heavy or optional runtimes (onnxruntime, tensorrt) are imported only when their backend is asked
for, so a machine without TensorRT can still run everything else.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mpox_aism.contracts.familiarity import Familiarity
from mpox_aism.contracts.model import model_file
from mpox_aism.inference.classifier import Classifier

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8", "tensorrt")


def load_classifier(backend: str, model: str | Path | None = None, **options: Any) -> Classifier:
    """A classifier for ``backend`` from a model directory (or a direct file path), with the model's
    familiarity score when its directory has one fitted for this network."""
    if backend == "torch":
        from mpox_aism.inference.backends.torch import TorchClassifier

        path = model_file(model, "model.pt")
        classifier: Classifier = TorchClassifier(path, **options)
    elif backend == "onnxruntime":
        from mpox_aism.inference.backends.onnxruntime import OnnxRuntimeClassifier

        path = model_file(model, "model.onnx")
        classifier = OnnxRuntimeClassifier(path, **options)
    elif backend == "onnxruntime-int8":  # the same runtime on the quantized file (`mpox-aism export int8`)
        from mpox_aism.inference.backends.onnxruntime import OnnxRuntimeInt8Classifier

        path = model_file(model, "model.int8.onnx")
        classifier = OnnxRuntimeInt8Classifier(path, **options)
    elif backend == "tensorrt":
        from mpox_aism.inference.backends.tensorrt import TensorRTClassifier

        path = model_file(model, "model.engine")
        classifier = TensorRTClassifier(path, **options)
    else:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    classifier.familiarity = _familiarity(path.parent, classifier)
    return classifier


def _familiarity(model_dir: Path, classifier: Classifier) -> Familiarity | None:
    """The score beside the model, if it was fitted on this network's features (``Familiarity.beside``)."""
    score = Familiarity.beside(model_dir, classifier.meta.model_version)
    if score is not None and not classifier.has_features:
        log.warning("%s: the %s model gives no pooled features, so no familiarity score; re-export it",
                    model_dir, classifier.backend)
    return score
