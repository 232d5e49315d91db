"""``ModelMeta``: what a runtime must know about a network, and where a model directory is.

Training writes it (``model.pt``'s record, ONNX metadata under ``ONNX_META_KEY``, a TensorRT
engine's sidecar JSON); every backend reads it back as the same frozen dataclass and refuses a
model whose label order or normalisation is not this build's, so a file trained for another
contract cannot be served by mistake.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mpox_aism.contracts.decision import DEFAULT_THRESHOLD
from mpox_aism.contracts.labels import LABELS
from mpox_aism.contracts.preprocess import MEAN, STD

ONNX_META_KEY = "mpox_aism_meta"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MAPS_NAME = "class_maps"  # optional second output: N×K×h×w class-activation maps (GAP → linear heads)
FEATURES_NAME = "features"  # optional output: N×D pooled features, the head's input (familiarity reads them)
ENV_DEFAULT_MODEL = "MPOX_AISM_MODEL"


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


def meta_to_json(meta: ModelMeta) -> str:
    d = asdict(meta)
    d["labels"], d["mean"], d["std"] = list(meta.labels), list(meta.mean), list(meta.std)
    return json.dumps(d)


def meta_from_json(text: str, source: str = "metadata") -> ModelMeta:
    try:
        d = json.loads(text)
        return ModelMeta(image_size=int(d["image_size"]), labels=tuple(d["labels"]), mean=tuple(d["mean"]),
                         std=tuple(d["std"]), temperature=float(d.get("temperature", 1.0)),
                         threshold=float(d.get("threshold", DEFAULT_THRESHOLD)),
                         model_version=str(d.get("model_version", "")), arch=str(d.get("arch", "")),
                         extra=dict(d.get("extra", {})))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{source}: malformed mpox-aism model metadata ({e})") from None


def default_model_dir() -> Path:
    """``$MPOX_AISM_MODEL``, else the model shipped in the repository's ``models/default``."""
    env = os.environ.get(ENV_DEFAULT_MODEL)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "models" / "default"


def model_file(model: str | Path | None, name: str) -> Path:
    """``name`` (``model.onnx``, ``model.pt`` …) inside a model directory, or ``model`` itself if a file."""
    p = Path(model) if model else default_model_dir()
    if p.is_dir():
        p = p / name
    if not p.is_file():
        hint = {"model.onnx": "mpox-aism export onnx",
                "model.int8.onnx": "mpox-aism export int8 --calib-data DEV_PHOTOS",
                "model.engine": "mpox-aism export tensorrt"}.get(name, "")
        raise FileNotFoundError(f"no {name} at {p}" + (f"; make it with `{hint}`" if hint else ""))
    return p


def default_backend(model: str | Path | None) -> str:
    """``auto``: onnxruntime when the model directory has ``model.onnx``, else torch."""
    d = Path(model) if model else default_model_dir()
    return "onnxruntime" if (d / "model.onnx").is_file() else "torch"
