"""``mpox-aism export tensorrt``: a TensorRT 10 engine from the exported ONNX, plus a sidecar JSON.

A serialised TensorRT engine runs only on the GPU model and the exact TensorRT version that built
it, so every engine gets ``<engine>.json`` recording both (with the ModelMeta, the batch profile and
the ONNX hash). That sidecar is a contract between this build tool and the runtime, so it is defined
in ``mpox_aism.inference.sidecar``, which the backend reads without importing the build tool.

TensorRT is imported lazily: it cannot be installed on the development machines
(../shared/ENVIRONMENT.md). What can be tested without it — the ONNX contract and the
calibration-image reader — are pure functions here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mpox_aism.contracts.images import IMAGE_SUFFIXES, DatasetError, list_images, load_rgb
from mpox_aism.contracts.model import INPUT_NAME, ONNX_META_KEY, OUTPUT_NAME, ModelMeta, meta_from_json
from mpox_aism.contracts.preprocess import preprocess_numpy
from mpox_aism.inference.sidecar import gpu_identity, import_tensorrt, load_sidecar, sidecar_path

log = logging.getLogger(__name__)

def onnx_contract(onnx_file: str | Path | bytes, *, image_size: int | None = None,
                  source: str | None = None) -> tuple[ModelMeta, int]:
    """The ModelMeta stored in the ONNX file and the input size S it takes, checked against each other.

    The engine's optimisation profile is N×3×S×S with a dynamic N, so the file must have been exported
    with a dynamic batch axis and an input called ``input`` (``mpox-aism export onnx`` does both).
    """
    import onnx

    source = source or ("<onnx bytes>" if isinstance(onnx_file, bytes) else str(onnx_file))
    data = onnx_file if isinstance(onnx_file, bytes) else Path(onnx_file).read_bytes()
    model = onnx.load_model_from_string(data)
    props = {p.key: p.value for p in model.metadata_props}
    if ONNX_META_KEY not in props:
        raise ValueError(f"{source}: no {ONNX_META_KEY!r} metadata; export it with `mpox-aism export onnx`")
    meta = meta_from_json(props[ONNX_META_KEY], source)
    inputs = {i.name: i for i in model.graph.input}
    if INPUT_NAME not in inputs:
        raise ValueError(f"{source}: no input named {INPUT_NAME!r} (has {sorted(inputs)}); "
                         "export it with `mpox-aism export onnx`")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[INPUT_NAME].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3:
        raise ValueError(f"{source}: input {INPUT_NAME!r} has shape {dims}, expected N×3×S×S")
    if dims[0] is not None:
        raise ValueError(f"{source}: input batch size is fixed at {dims[0]}; export with a dynamic batch axis")
    if dims[2] != dims[3]:
        raise ValueError(f"{source}: input is {dims[2]}×{dims[3]}, expected a square S×S (or dynamic) input")
    size = dims[2] if dims[2] is not None else (image_size or meta.image_size)
    for name, value in (("--image-size", image_size), ("its metadata image_size", meta.image_size)):
        if value is not None and value != size:
            raise ValueError(f"{source}: input is {size}×{size} but {name} is {value}")
    return meta, size


def list_calibration_images(root: str | Path, limit: int | None = None, *, seed: int = 0) -> list[Path]:
    """Image files anywhere under ``root``; a seeded random subset of ``limit`` so every class is sampled."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"calibration data folder {root} does not exist")
    files = list_images(root)
    if not files:
        raise ValueError(f"no images under {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    if limit and len(files) > limit:
        files = sorted(random.Random(seed).sample(files, limit))
    return files


def calibration_batches(paths: Iterable[Path], size: int, batch_size: int) -> Iterator[np.ndarray]:
    """Full float32 batch_size×3×S×S batches, decoded RGB and made by the one ``preprocess_numpy``.

    Undecodable files are skipped with a warning. A last partial batch is left out: the calibration
    profile fixes the batch dimension, so TensorRT takes only batches of exactly ``batch_size``.
    """
    pending: list[np.ndarray] = []
    for p in paths:
        try:
            pending.append(preprocess_numpy(load_rgb(p), size))
        except DatasetError as e:
            log.warning("calibration: skipping %s", e)
            continue
        if len(pending) == batch_size:
            yield np.stack(pending)
            pending = []
    if pending:
        log.info("calibration: last %d image(s) left out (TensorRT calibrates in batches of %d)", len(pending),
                 batch_size)


def _make_calibrator(trt: Any, batches: Iterator[np.ndarray], shape: tuple[int, ...], cache_file: Path) -> Any:
    """An IInt8EntropyCalibrator2 fed from ``batches`` through one torch CUDA buffer (no pycuda).

    Implicit INT8 calibration is deprecated since TensorRT 10.1 (superseded by explicit Q/DQ
    quantization) and removed in TensorRT 11, but still works in 10.x; this targets 10.x.
    """
    import torch

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind11 needs the base __init__ called explicitly
            self.buffer = torch.empty(shape, dtype=torch.float32, device="cuda")
            self.images = 0
            self.cache_read = False

        def get_batch_size(self) -> int:
            return shape[0]

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(batches, None)
            if batch is None:
                return None  # no more data: calibration ends
            self.buffer.copy_(torch.from_numpy(batch))
            torch.cuda.synchronize()  # TensorRT reads the buffer on its own stream
            self.images += len(batch)
            return [self.buffer.data_ptr()]

        def read_calibration_cache(self) -> bytes | None:
            if cache_file.is_file():
                log.info("using calibration cache %s (delete it to recalibrate)", cache_file)
                self.cache_read = True
                return cache_file.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            with open(cache_file, "wb") as f:
                f.write(cache)

    return Calibrator()


def _check_trt(trt: Any, *, reduced_precision: bool) -> None:
    major = int(trt.__version__.split(".")[0])
    if major < 10:
        raise RuntimeError(f"TensorRT {trt.__version__} is too old: this code uses the TensorRT 10 API")
    if major >= 11 and reduced_precision:
        raise RuntimeError(f"TensorRT {trt.__version__} removed the FP16/INT8 builder flags and implicit INT8 "
                           "calibration: build fp32, or use TensorRT 10.x for --fp16/--int8")


def _warn_platform(builder: Any, attr: str, what: str) -> None:
    # platform_has_fast_* are deprecated since TensorRT 10.5 (removed in 11) but still present in 10.x.
    if not getattr(builder, attr, True):
        log.warning("this GPU has no fast native %s: the %s engine may be no faster than fp32", what, what)


def _describe_tensors(tensors: Iterable[Any]) -> list[dict]:
    return [{"name": t.name, "shape": list(t.shape), "dtype": str(t.dtype)} for t in tensors]


def build_engine(onnx_path: str | Path, out_path: str | Path, *, fp16: bool = False, int8: bool = False,
                 calib_dir: str | Path | None = None, calib_images: int = 256, max_batch: int = 32,
                 opt_batch: int = 8, image_size: int | None = None, workspace_gib: float = 2.0,
                 timing_cache: str | Path | None = None) -> Path:
    """Build ``out_path`` (and ``<out>.json``) from an ONNX file exported by ``mpox-aism export onnx``."""
    trt = import_tensorrt()
    _check_trt(trt, reduced_precision=fp16 or int8)
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("building a TensorRT engine needs a CUDA GPU; torch.cuda.is_available() is False")
    if not 1 <= opt_batch <= max_batch:
        raise ValueError(f"need 1 ≤ opt batch ({opt_batch}) ≤ max batch ({max_batch})")
    onnx_path, out = Path(onnx_path), Path(out_path)
    data = onnx_path.read_bytes()
    meta, size = onnx_contract(data, image_size=image_size, source=str(onnx_path))
    meta.check_compatible(str(onnx_path))
    onnx_sha = hashlib.sha256(data).hexdigest()
    calib_cache = Path(f"{out}.calib-cache")
    cache_file = Path(timing_cache) if timing_cache else Path(f"{out}.timing-cache")
    precision = "int8" if int8 else "fp16" if fp16 else "fp32"
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(sidecar_path(out).read_text()) if sidecar_path(out).is_file() else {}
    if int8 and calib_cache.is_file() and previous and previous.get("onnx_sha256") != onnx_sha:
        log.info("removing %s: it was calibrated for another ONNX file", calib_cache)
        calib_cache.unlink()
    if int8 and calib_dir is None and not calib_cache.is_file():
        raise ValueError("--int8 needs --calib-data DIR (real images to calibrate on), or an existing "
                         f"calibration cache at {calib_cache}")

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TRT 10; EXPLICIT_BATCH is deprecated
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(data, str(onnx_path)):
        errors = "\n".join(f"  {parser.get_error(i)}" for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path} ({parser.num_errors} error(s)):\n{errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    shapes = {k: [b, 3, size, size] for k, b in (("min", 1), ("opt", opt_batch), ("max", max_batch))}
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, min=shapes["min"], opt=shapes["opt"], max=shapes["max"])
    config.add_optimization_profile(profile)

    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        log.warning("timing cache %s is from another GPU or TensorRT version; starting a fresh one", cache_file)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)

    calibrator = None
    if fp16 or int8:  # INT8 builds also allow FP16, so layers without an INT8 kernel fall back to FP16, not FP32
        _warn_platform(builder, "platform_has_fast_fp16", "fp16")
        config.set_flag(trt.BuilderFlag.FP16)  # weak typing: deprecated since TRT 10.12, still supported in 10.x
    if int8:
        _warn_platform(builder, "platform_has_fast_int8", "int8")
        paths = list_calibration_images(calib_dir, calib_images) if calib_dir is not None else []
        calib_shape = (max(1, min(opt_batch, len(paths))), 3, size, size)
        calibrator = _make_calibrator(trt, calibration_batches(paths, size, calib_shape[0]), calib_shape, calib_cache)
        calib_profile = builder.create_optimization_profile()  # calibration runs at one fixed shape
        calib_profile.set_shape(INPUT_NAME, min=calib_shape, opt=calib_shape, max=calib_shape)
        config.set_calibration_profile(calib_profile)
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator

    log.info("building %s TensorRT engine from %s (batch %s, %d×%d)", precision, onnx_path,
             "/".join(str(s[0]) for s in shapes.values()), size, size)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - start
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT errors above)")
    if calibrator is not None and not calibrator.cache_read and calibrator.images == 0:
        raise RuntimeError(f"no calibration image under {calib_dir} could be decoded")
    cache_file.write_bytes(memoryview(config.get_timing_cache().serialize()))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(memoryview(serialized))
    os.replace(tmp, out)  # never leave a half-written engine next to an older sidecar

    gpu_name, capability = gpu_identity()
    sidecar = {
        "engine": str(out), "onnx": str(onnx_path), "onnx_sha256": onnx_sha,
        "tensorrt_version": trt.__version__, "gpu_name": gpu_name, "compute_capability": capability,
        "precision": precision,
        "inputs": _describe_tensors(network.get_input(i) for i in range(network.num_inputs)),
        "outputs": _describe_tensors(network.get_output(i) for i in range(network.num_outputs)),
        "profile": shapes,
        "meta": {**asdict(meta), "labels": list(meta.labels), "mean": list(meta.mean), "std": list(meta.std)},
        "build_seconds": round(build_seconds, 1), "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_args": {"fp16": fp16, "int8": int8, "calib_dir": str(calib_dir) if calib_dir else None,
                       "calib_images": calibrator.images if calibrator is not None else 0,
                       "max_batch": max_batch, "opt_batch": opt_batch, "workspace_gib": workspace_gib},
    }
    if not any(o["name"] == OUTPUT_NAME for o in sidecar["outputs"]):
        log.warning("the network has no output named %r; the TensorRT backend will refuse it", OUTPUT_NAME)
    sidecar_path(out).write_text(json.dumps(sidecar, indent=2) + "\n")
    log.info("wrote %s and %s in %.0f s", out, sidecar_path(out).name, build_seconds)
    return out


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Build a TensorRT 10 engine (+ sidecar JSON) from an exported ONNX file.",
                                add_help=add_help)
    p.add_argument("--onnx", required=True, help="ONNX file made by `mpox-aism export onnx`")
    p.add_argument("--out", required=True, help="output .engine file (its sidecar is <out>.json)")
    p.add_argument("--fp16", action="store_true", help="allow FP16 kernels")
    p.add_argument("--int8", action="store_true", help="INT8 with entropy calibration on --calib-data (implies FP16)")
    p.add_argument("--calib-data", default=None, help="folder of real images for INT8 calibration (recursive)")
    p.add_argument("--calib-images", type=int, default=256, help="how many calibration images to use")
    p.add_argument("--max-batch", type=int, default=32, help="largest batch the engine accepts")
    p.add_argument("--opt-batch", type=int, default=8, help="batch size TensorRT tunes kernels for")
    p.add_argument("--image-size", type=int, default=None, help="S, when the ONNX input has no static size")
    p.add_argument("--workspace-gib", type=float, default=2.0, help="builder workspace memory limit")
    p.add_argument("--timing-cache", default=None, help="timing cache file (default: <out>.timing-cache)")
    return p


def main(args: argparse.Namespace) -> dict:
    try:
        import_tensorrt()
    except ImportError as e:
        raise SystemExit(f"export tensorrt: {e}") from None
    out = build_engine(args.onnx, args.out, fp16=args.fp16, int8=args.int8, calib_dir=args.calib_data,
                       calib_images=args.calib_images, max_batch=args.max_batch, opt_batch=args.opt_batch,
                       image_size=args.image_size, workspace_gib=args.workspace_gib, timing_cache=args.timing_cache)
    return load_sidecar(out)

