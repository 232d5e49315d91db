"""ModelMeta ↔ ONNX metadata and ↔ the training model directory, so every artefact is self-describing."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from export.classifier import ModelMeta
from training.modeldir import ModelInfo

ONNX_META_KEY = "mpox_aism_meta"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def meta_from_info(info: ModelInfo) -> ModelMeta:
    return ModelMeta(image_size=info.image_size, labels=tuple(info.labels), mean=tuple(info.mean),
                     std=tuple(info.std), temperature=info.temperature, threshold=info.threshold,
                     model_version=info.model_version, arch=info.arch)


def meta_to_json(meta: ModelMeta) -> str:
    d = asdict(meta)
    d["labels"], d["mean"], d["std"] = list(meta.labels), list(meta.mean), list(meta.std)
    return json.dumps(d)


def meta_from_json(text: str, source: str = "metadata") -> ModelMeta:
    try:
        d = json.loads(text)
        return ModelMeta(image_size=int(d["image_size"]), labels=tuple(d["labels"]), mean=tuple(d["mean"]),
                         std=tuple(d["std"]), temperature=float(d.get("temperature", 1.0)),
                         threshold=float(d.get("threshold", 0.6)), model_version=str(d.get("model_version", "")),
                         arch=str(d.get("arch", "")), extra=dict(d.get("extra", {})))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{source}: malformed mpox-aism model metadata ({e})") from None


def read_onnx_meta(path: str | Path) -> ModelMeta:
    """The ModelMeta stored in an exported ONNX file (read without loading the weights twice)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if ONNX_META_KEY not in props:
        raise ValueError(f"{path}: no {ONNX_META_KEY!r} metadata; export it with `mpox-aism export onnx`")
    return meta_from_json(props[ONNX_META_KEY], str(path))
