"""The TensorRT engine's sidecar (``<engine>.json``): what built it, checked before the engine is loaded.

A serialised TensorRT engine runs only on the GPU model and the exact TensorRT version that built
it, and elsewhere it fails late and obscurely. ``mpox-aism export tensorrt`` writes the sidecar
(those two, the ModelMeta, the batch profile, the ONNX hash); the TensorRT backend calls
:func:`check_sidecar` before deserialising and tells the operator how to rebuild. It lives on the
runtime side so the backend never imports the build tool.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TRT_MISSING = ("TensorRT is not installed: pip install tensorrt on a CUDA machine; it cannot be installed on the "
               "development machines (see ../shared/ENVIRONMENT.md), where the onnxruntime and torch backends work")


class EngineMismatchError(RuntimeError):
    """The engine was built for another GPU or TensorRT version and must be rebuilt on this machine."""


def import_tensorrt() -> Any:
    """``import tensorrt`` with a message that says what to do when it is missing."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as e:  # a wheel without its CUDA libraries fails with either
        raise ImportError(f"{TRT_MISSING} (import failed: {e})") from e
    return trt


def sidecar_path(engine_path: str | Path) -> Path:
    return Path(f"{engine_path}.json")


def load_sidecar(engine_path: str | Path) -> dict:
    p = sidecar_path(engine_path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} is missing: without it the engine cannot be checked against this GPU and "
                                f"TensorRT version; rebuild with `mpox-aism export tensorrt --onnx MODEL.onnx "
                                f"--out {engine_path}`")
    return json.loads(p.read_text())


def gpu_identity(device: Any = None) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of a CUDA device, via torch."""
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


def rebuild_command(sidecar: dict) -> str:
    a = sidecar.get("build_args", {})
    onnx_file, engine = sidecar.get("onnx", "MODEL.onnx"), sidecar.get("engine", "ENGINE")
    cmd = f"mpox-aism export tensorrt --onnx {onnx_file} --out {engine}"
    if a.get("int8"):
        cmd += f" --int8 --calib-data {a.get('calib_dir') or 'DIR'}"
    elif a.get("fp16"):
        cmd += " --fp16"
    return cmd + (f" --max-batch {a['max_batch']}" if "max_batch" in a else "")


def check_sidecar(sidecar: dict, *, trt_version: str, gpu_name: str, compute_capability: str) -> None:
    """Refuse an engine built elsewhere: TensorRT plans are tied to the GPU model and the TensorRT version."""
    built = (sidecar.get("gpu_name"), str(sidecar.get("compute_capability")), sidecar.get("tensorrt_version"))
    here = (gpu_name, str(compute_capability), trt_version)
    if built != here:
        raise EngineMismatchError(
            f"engine built for {built[0]} (compute capability {built[1]}) with TensorRT {built[2]}, this machine has "
            f"{here[0]} (compute capability {here[1]}) with TensorRT {here[2]}; a TensorRT engine only runs where it "
            f"was built: rebuild with `{rebuild_command(sidecar)}`")
