"""``mpox-aism export onnx``: dynamic-batch ONNX with its metadata, parity-checked against PyTorch.

The legacy TorchScript exporter (``dynamo=False``, opset 17) is used on purpose: a dynamo/opset-18
MobileNetV3 file gave wrong results in ``cv2.dnn`` on these machines (../shared/ENVIRONMENT.md),
while the legacy file was correct everywhere we tried. The export refuses to finish (non-zero
exit) when ONNX Runtime's probabilities differ from PyTorch's by more than ``--tolerance`` on real
images, so a silently broken graph never reaches a kiosk.
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from mpox_aism.contracts.decision import softmax
from mpox_aism.contracts.heatmap import heat_from_class_map
from mpox_aism.contracts.images import list_images, load_rgb
from mpox_aism.contracts.model import FEATURES_NAME, INPUT_NAME, MAPS_NAME, ONNX_META_KEY, OUTPUT_NAME, meta_to_json
from mpox_aism.contracts.preprocess import preprocess_batch
from mpox_aism.inference.cam import WithFeatures, supports_class_maps
from mpox_aism.inference.metadata import meta_from_info
from mpox_aism.model.modeldir import load_model

log = logging.getLogger(__name__)
OPSET = 17


class ParityError(RuntimeError):
    """ONNX Runtime and PyTorch disagree beyond the tolerance."""


def export_onnx(model_path: str | Path | None, out: str | Path, *, opset: int = OPSET) -> Path:
    model, info = load_model(model_path)
    meta = meta_from_info(info)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 3, info.image_size, info.image_size)
    maps = supports_class_maps(info.arch)  # the heat maps come with the answer
    net = WithFeatures(model, info.arch).eval()  # and the pooled features, for the familiarity score
    outputs = [OUTPUT_NAME, FEATURES_NAME, MAPS_NAME] if maps else [OUTPUT_NAME, FEATURES_NAME]
    with warnings.catch_warnings():  # the legacy exporter is chosen on purpose (module docstring)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (dummy,), str(out), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=outputs, external_data=False,
                          dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *outputs)})
    import onnx

    proto = onnx.load(str(out))
    props = {
        ONNX_META_KEY: meta_to_json(meta),
        "labels": json.dumps(list(meta.labels)),
        "input": f"{INPUT_NAME}: float32 N×3×{info.image_size}×{info.image_size}, RGB, /255, "
                 f"normalised mean={list(meta.mean)} std={list(meta.std)}",
        "output": f"{OUTPUT_NAME}: N×{len(meta.labels)} raw logits; probabilities = softmax(logits / temperature); "
                  f"{FEATURES_NAME}: N×D pooled features, the linear head's input"
                  + (f"; {MAPS_NAME}: N×{len(meta.labels)}×h×w class-activation maps (Σ_c W_kc·A_c on the last "
                     "feature map; heat map = ReLU + min-max, as Grad-CAM)" if maps else ""),
        "temperature": str(meta.temperature),
        "model_version": meta.model_version,
    }
    del proto.metadata_props[:]
    for k, v in props.items():
        proto.metadata_props.add(key=k, value=v)
    proto.doc_string = "mpox-aism skin classifier - research use only, not a diagnostic device"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    return out


def check_parity(model_path: str | Path | None, onnx_path: str | Path, images: list[np.ndarray], *,
                 tolerance: float = 1e-3) -> dict:
    """Max abs difference of calibrated probabilities, PyTorch vs ONNX Runtime, on the same batch."""
    from mpox_aism.inference.backends.onnxruntime import OnnxRuntimeClassifier

    model, info = load_model(model_path)
    batch = preprocess_batch(images, info.image_size)
    with torch.no_grad():  # one reference pass: logits, features and (GAP → linear heads) class maps
        ref_out = [t.numpy() for t in WithFeatures(model, info.arch).eval()(torch.from_numpy(batch))]
    ref = softmax(ref_out[0], info.temperature)
    with OnnxRuntimeClassifier(onnx_path) as ort:
        got = ort.predict_preprocessed(batch)
        got_maps = ort.logits_and_maps(batch)[1] if ort.can_explain and len(batch) else None
        got_feats = ort.logits_and_features(batch)[1] if ort.has_features and len(batch) else None
    diff = float(np.abs(ref - got).max()) if len(batch) else 0.0
    report = {"images": len(batch), "max_abs_diff": diff, "tolerance": tolerance,
              "argmax_agree": float((ref.argmax(1) == got.argmax(1)).mean()) if len(batch) else 1.0}
    if got_feats is not None:  # relative to the features' scale: they are not probabilities
        ref_feats = ref_out[1]
        scale = max(float(np.abs(ref_feats).max()), 1e-6)
        report["features_max_rel_diff"] = float(np.abs(ref_feats - got_feats).max() / scale)
    if got_maps is not None:  # the heat maps of the top class, as a person would see them
        ref_maps = ref_out[2]
        size, top = info.image_size, ref.argmax(1)
        report["heatmap_max_abs_diff"] = max(
            float(np.abs(heat_from_class_map(r[t], size, (size, size)) - heat_from_class_map(g[t], size, (size, size)))
                  .max()) for r, g, t in zip(ref_maps, got_maps, top, strict=True))
    worst = max(diff, report.get("heatmap_max_abs_diff", 0.0), report.get("features_max_rel_diff", 0.0))
    report["passed"] = worst <= tolerance
    if not report["passed"]:
        raise ParityError(f"ONNX Runtime differs from PyTorch by {worst:.2e} > {tolerance:.0e} on {len(batch)} images")
    return report


def _parity_images(data: str | None, limit: int) -> list[np.ndarray]:
    if data:
        files = list_images(data)
        if not files:
            raise FileNotFoundError(f"no images under {data}")
        step = max(1, len(files) // limit)
        return [load_rgb(p) for p in files[::step][:limit]]
    from mpox_aism.contracts.sample import builtin_sample_dir

    log.warning("no --parity-data: checking parity on the 2 built-in sample photos only")
    return [load_rgb(p) for p in list_images(builtin_sample_dir())]


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Export a model to ONNX and check parity.", add_help=add_help)
    p.add_argument("--model", default=None, help="model directory or model.pt (default: models/default)")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, default=OPSET)
    p.add_argument("--parity-data", default=None, help="folder of real images for the parity check")
    p.add_argument("--parity-images", type=int, default=64, help="how many images to check")
    p.add_argument("--tolerance", type=float, default=1e-3, help="max abs diff of probabilities")
    return p


def main(args: argparse.Namespace) -> dict:
    out = export_onnx(args.model, args.out, opset=args.opset)
    report = check_parity(args.model, out, _parity_images(args.parity_data, args.parity_images),
                          tolerance=args.tolerance)
    Path(str(out) + ".parity.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{out}: parity on {report['images']} images, max abs diff {report['max_abs_diff']:.2e} "
          f"(≤ {args.tolerance:.0e}), argmax agreement {report['argmax_agree']:.3f}")
    return report
