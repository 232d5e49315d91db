"""ModelMeta from the training model directory and from an ONNX file (``mpox_aism.contracts.model`` holds the record).

``meta_from_info`` needs training's ``ModelInfo`` (torch), so only the exporters and the torch
backend import it; reading an ONNX file's record needs only ``onnx``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mpox_aism.contracts.model import ONNX_META_KEY, ModelMeta, meta_from_json

if TYPE_CHECKING:
    from mpox_aism.model.modeldir import ModelInfo


def meta_from_info(info: ModelInfo) -> ModelMeta:
    return ModelMeta(image_size=info.image_size, labels=tuple(info.labels), mean=tuple(info.mean),
                     std=tuple(info.std), temperature=info.temperature, threshold=info.threshold,
                     model_version=info.model_version, arch=info.arch)


def read_onnx_meta(path: str | Path) -> ModelMeta:
    """The ModelMeta stored in an exported ONNX file (read without loading the weights twice)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if ONNX_META_KEY not in props:
        raise ValueError(f"{path}: no {ONNX_META_KEY!r} metadata; export it with `mpox-aism export onnx`")
    return meta_from_json(props[ONNX_META_KEY], str(path))
