"""Runtime backends behind the one ``Classifier`` interface.

Heavy or optional runtimes (onnxruntime, tensorrt) are imported only when their backend is asked
for, so a machine without TensorRT can still run everything else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from export.classifier import Classifier

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def _model_file(model: str | Path | None, name: str) -> Path:
    from training.modeldir import default_model_dir

    p = Path(model) if model else default_model_dir()
    if p.is_dir():
        p = p / name
    if not p.is_file():
        hint = {"model.onnx": "mpox-aism export onnx", "model.engine": "mpox-aism export tensorrt"}.get(name, "")
        raise FileNotFoundError(f"no {name} at {p}" + (f"; make it with `{hint}`" if hint else ""))
    return p


def load_classifier(backend: str, model: str | Path | None = None, **options: Any) -> Classifier:
    """A classifier for ``backend`` from a model directory (or a direct file path)."""
    if backend == "torch":
        from export.backends.torch import TorchClassifier

        return TorchClassifier(_model_file(model, "model.pt"), **options)
    if backend == "onnxruntime":
        from export.backends.onnxruntime import OnnxRuntimeClassifier

        return OnnxRuntimeClassifier(_model_file(model, "model.onnx"), **options)
    if backend == "tensorrt":
        from export.backends.tensorrt import TensorRTClassifier

        return TensorRTClassifier(_model_file(model, "model.engine"), **options)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
