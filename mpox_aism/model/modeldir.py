"""The model directory contract: ``model.pt`` + ``labels.json`` + ``calibration.json`` (+ card, metrics).

``model.pt`` is self-describing — architecture, label order, input size and normalisation, fitted
temperature, threshold, the validation groups it was selected on — so a loader never has to guess
and a model trained with another label order is refused instead of silently mislabelling.

A linear probe leaves its backbone bit-for-bit the ImageNet weights, which the hash-checked weight
packages already hold; ``save_model(..., omit_imagenet=True)`` stores only the tensors that differ
(the head: kilobytes instead of 29 MB for two backbones) and names the rest, and ``load_model``
takes those from the packages and checks the result against ``model_version`` — the hash of the
*whole* network — so a different ImageNet file is refused, not silently used.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from mpox_aism.contracts.decision import DEFAULT_THRESHOLD
from mpox_aism.contracts.labels import LABELS
from mpox_aism.contracts.model import model_file
from mpox_aism.contracts.preprocess import MEAN, STD
from mpox_aism.model.zoo import build_model, classifier_head, load_imagenet_weights

FORMAT = "mpox-aism/model@1"
MODEL_FILE = "model.pt"


@dataclass
class ModelInfo:
    """Everything about a trained model except its weights."""

    arch: str
    image_size: int
    labels: list[str] = field(default_factory=lambda: list(LABELS))
    mean: list[float] = field(default_factory=lambda: list(MEAN))
    std: list[float] = field(default_factory=lambda: list(STD))
    temperature: float = 1.0
    threshold: float = DEFAULT_THRESHOLD
    model_version: str = ""
    val_groups: list[str] = field(default_factory=list)
    split: dict = field(default_factory=dict)
    recipe: dict = field(default_factory=dict)


def weights_version(state_dict: dict[str, torch.Tensor]) -> str:
    """A short hash of the weights: changes whenever the numbers change, goes into every event."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:12]


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _imagenet_state(info: ModelInfo) -> dict[str, torch.Tensor]:
    model = build_model(info.arch, num_classes=len(info.labels), image_size=info.image_size)
    load_imagenet_weights(model, info.arch)
    return model.state_dict()


def save_model(out_dir: str | Path, model: nn.Module, info: ModelInfo, *, omit_imagenet: bool = False) -> Path:
    """Write the model directory; ``omit_imagenet``: leave out tensors equal to the ImageNet weights."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    info.model_version = weights_version(state)
    blob: dict = {"format": FORMAT, "info": asdict(info), "state_dict": state}
    if omit_imagenet:
        reference = _imagenet_state(info)
        same = sorted(k for k, v in state.items() if k in reference and torch.equal(v, reference[k]))
        blob["state_dict"] = {k: v for k, v in state.items() if k not in set(same)}
        blob["imagenet_keys"] = same
    buf = io.BytesIO()
    torch.save(blob, buf)
    _atomic_write(out / MODEL_FILE, buf.getvalue())
    _atomic_write(out / "labels.json", (json.dumps(info.labels, indent=2) + "\n").encode())
    calib = {"temperature": info.temperature, "threshold": info.threshold,
             "model_version": info.model_version}
    _atomic_write(out / "calibration.json", (json.dumps(calib, indent=2) + "\n").encode())
    return out / MODEL_FILE


def resolve_model_path(path: str | Path | None) -> Path:
    """``model.pt`` of a model directory (or the file itself; ``None`` = the default model)."""
    return model_file(path, MODEL_FILE)


def load_model(path: str | Path | None = None, *, map_location: str = "cpu") -> tuple[nn.Module, ModelInfo]:
    """Load a model directory or ``model.pt`` (``None`` = the default model), in eval mode."""
    p = resolve_model_path(path)
    blob = torch.load(p, map_location=map_location, weights_only=False)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{p} is not an mpox-aism model file (format {FORMAT})")
    info = ModelInfo(**blob["info"])
    if list(info.labels) != list(LABELS):
        raise ValueError(f"{p} was trained with labels {info.labels}, this build expects {list(LABELS)}")
    model = build_model(info.arch, num_classes=len(info.labels), image_size=info.image_size)
    state = dict(blob["state_dict"])
    if blob.get("imagenet_keys"):
        reference = _imagenet_state(info)
        state.update({k: reference[k] for k in blob["imagenet_keys"]})
        if weights_version(state) != info.model_version:
            raise ValueError(f"{p}: its backbone is taken from the installed ImageNet weights, but they do "
                             f"not give model_version {info.model_version} — not the weights it was trained on")
    model.load_state_dict(state)
    model.eval()
    return model, info


def load_init_checkpoint(model: nn.Module, path: str | Path) -> tuple[int, int]:
    """Initialise from a checkpoint (a trained ``model.pt`` or a SimCLR ``encoder.pt``).

    Tensors whose name and shape match are copied; the head is always left fresh. Returns
    (copied, skipped) so the caller can refuse an init that matched nothing.
    """
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(blob, dict) and "imagenet_keys" in blob:  # a probe's model.pt: its backbone is elsewhere
        blob = {"state_dict": load_model(path)[0].state_dict()}
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else blob
    head_names = {n for n, p in model.named_parameters() if p is classifier_head(model).weight}
    head_names |= {n for n, p in model.named_parameters() if p is classifier_head(model).bias}
    own = model.state_dict()
    take = {k: v for k, v in state.items()
            if k in own and k not in head_names and own[k].shape == v.shape}
    if not take:
        raise ValueError(f"{path}: no tensor matches the {type(model).__name__} architecture")
    model.load_state_dict(take, strict=False)
    return len(take), len(state) - len(take)
