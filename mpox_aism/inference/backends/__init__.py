"""Runtime backends behind the one ``Classifier`` interface.

Heavy or optional runtimes (onnxruntime, tensorrt) are imported only when their backend is asked
for, so a machine without TensorRT can still run everything else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mpox_aism.contracts.model import model_file
from mpox_aism.inference.classifier import Classifier

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def load_classifier(backend: str, model: str | Path | None = None, **options: Any) -> Classifier:
    """A classifier for ``backend`` from a model directory (or a direct file path)."""
    if backend == "torch":
        from mpox_aism.inference.backends.torch import TorchClassifier

        return TorchClassifier(model_file(model, "model.pt"), **options)
    if backend == "onnxruntime":
        from mpox_aism.inference.backends.onnxruntime import OnnxRuntimeClassifier

        return OnnxRuntimeClassifier(model_file(model, "model.onnx"), **options)
    if backend == "tensorrt":
        from mpox_aism.inference.backends.tensorrt import TensorRTClassifier

        return TensorRTClassifier(model_file(model, "model.engine"), **options)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
