"""``mpox-aism bench classifier``: latency p50/p99 per batch size and crops/s per backend variant.

A variant is ``BACKEND[:OPTION...]`` — e.g. ``torch:cuda:fp16:channels_last:cuda_graphs``,
``onnxruntime``, ``onnxruntime-int8`` (``model.int8.onnx``), ``tensorrt`` — so one run can compare
several on the same machine. Two modes:
``end_to_end`` times ``predict_preprocessed`` from a host float32 batch to probabilities
(H2D copy, inference, D2H copy, softmax: what the pipeline pays); ``device`` (torch on CUDA only)
times the network on a device-resident batch, the figure GPU papers quote. Preprocessing (decode,
resize) is not included in either; the pipeline benchmark measures it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from mpox_aism.contracts.machine import describe_machine
from mpox_aism.inference.backends import BACKENDS, load_classifier
from mpox_aism.inference.classifier import Classifier

TORCH_OPTIONS = {"cpu", "cuda", "fp32", "fp16", "bf16", "channels_last", "cuda_graphs"}


def parse_variant(spec: str) -> tuple[str, dict]:
    name, *opts = spec.split(":")
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r} in {spec!r}; choose from {', '.join(BACKENDS)}")
    kw: dict = {}
    for o in opts:
        if name != "torch" or o not in TORCH_OPTIONS:
            raise ValueError(f"option {o!r} not understood for {name} in {spec!r}")
        if o in ("cpu", "cuda"):
            kw["device"] = o
        elif o in ("fp32", "fp16", "bf16"):
            kw["precision"] = o
        else:
            kw[o] = True
    return name, kw


def _time(fn, *, warmup: int, iters: int, min_seconds: float, sync: bool) -> list[float]:
    for _ in range(warmup):
        fn()
    if sync:
        torch.cuda.synchronize()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < iters or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
        if len(times) >= 20 * iters:
            break
    return times


def _row(clf: Classifier, spec: str, mode: str, batch: int, times: list[float]) -> dict:
    t = np.asarray(times)
    return {"variant": spec, "mode": mode, "batch": batch, **clf.describe(), "iters": len(t),
            "p50_ms": round(float(np.percentile(t, 50)), 3), "p99_ms": round(float(np.percentile(t, 99)), 3),
            "mean_ms": round(float(t.mean()), 3), "crops_per_s": round(batch * 1000 / float(t.mean()), 1)}


def bench_variant(spec: str, model: str | Path | None, batches: list[int], *, warmup: int, iters: int,
                  min_seconds: float) -> list[dict]:
    name, kw = parse_variant(spec)
    clf = load_classifier(name, model, max_batch=max(batches), **kw)
    rows = []
    try:
        rng = np.random.default_rng(0)
        for b in batches:
            x = rng.standard_normal((b, 3, clf.image_size, clf.image_size)).astype(np.float32)
            on_gpu = getattr(clf, "device", None) is not None and clf.device.type == "cuda"
            times = _time(lambda x=x: clf.predict_preprocessed(x), warmup=warmup, iters=iters,
                          min_seconds=min_seconds, sync=False)
            rows.append(_row(clf, spec, "end_to_end", b, times))
            if on_gpu:
                xd = clf.to_device(x)
                times = _time(lambda xd=xd: clf.forward_device(xd), warmup=warmup, iters=iters,
                              min_seconds=min_seconds, sync=True)
                rows.append(_row(clf, spec, "device", b, times))
            print(json.dumps({k: rows[-1][k] for k in ("variant", "mode", "batch", "p50_ms", "p99_ms",
                                                       "crops_per_s")}), flush=True)
    finally:
        clf.close()
    return rows


def speed_only_model(arch: str, image_size: int, out_dir: Path, *, onnx: bool) -> Path:
    """Random weights of ``arch`` in a model directory: speed does not depend on the weights."""
    from mpox_aism.export.onnx import export_onnx
    from mpox_aism.model.modeldir import ModelInfo, save_model
    from mpox_aism.model.zoo import build_model

    torch.manual_seed(0)
    save_model(out_dir, build_model(arch, image_size=image_size), ModelInfo(arch=arch, image_size=image_size))
    if onnx:
        export_onnx(out_dir, out_dir / "model.onnx")
    return out_dir


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Benchmark classifier backends.", add_help=add_help)
    p.add_argument("--backend", action="append", default=None,
                   help="BACKEND[:OPTION...], repeatable; options for torch: cpu cuda fp32 fp16 bf16 "
                        "channels_last cuda_graphs (default: torch and onnxruntime)")
    p.add_argument("--model", default=None, help="model directory (default: models/default)")
    p.add_argument("--arch", default=None, help="benchmark this architecture with random weights (speed only)")
    p.add_argument("--image-size", type=int, default=224, help="input size with --arch")
    p.add_argument("--batch-sizes", default="1,8,32")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", required=True, help="output JSON file")
    return p


def main(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = args.backend or ["torch", "onnxruntime"]
    batches = [int(b) for b in args.batch_sizes.split(",")]
    for v in variants:
        parse_variant(v)  # fail before any work
    tmp = None
    model = args.model
    if args.arch:
        tmp = tempfile.TemporaryDirectory(prefix="mpox-aism-bench-")
        needs_onnx = any(v.startswith("onnxruntime") or v.startswith("tensorrt") for v in variants)
        model = speed_only_model(args.arch, args.image_size, Path(tmp.name), onnx=needs_onnx)
    rows = []
    for v in variants:
        rows += bench_variant(v, model, batches, warmup=args.warmup, iters=args.iters, min_seconds=args.min_seconds)
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "mpox-aism " + shlex.join(sys.argv[1:]),
        "machine": asdict(describe_machine()),
        "model": {"path": str(args.model or "models/default") if not args.arch else None,
                  "arch": args.arch, "weights": "random (speed only)" if args.arch else "trained"},
        "versions": {"torch": torch.__version__, "cuda": torch.version.cuda},
        "results": rows,
    }
    try:
        import onnxruntime

        report["versions"]["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if tmp:
        tmp.cleanup()
    return report
