"""``mpox-aism export int8``: ``model.int8.onnx`` beside ``model.onnx``, for CPU boxes.

ONNX Runtime static quantization (QDQ format, int8 weights per output channel, int8 activations
with ranges calibrated by MinMax on real photos) of the fp32 ONNX file, keeping all three outputs
(``logits``, ``features``, ``class_maps``): the heat maps and the familiarity score must work on the
int8 model exactly as on fp32. Static rather than dynamic quantization because convolutions are
most of the network and dynamic quantization leaves them in float.

Calibration photos go through the project's one ``preprocess_batch`` (a different normalisation here
would calibrate ranges for inputs the kiosk never sends). Calibration and parity photos are taken
from the same folder but are disjoint (``split_photos``), so the parity report is not judged on the
photos the ranges were fitted to. Parity is against the fp32 ONNX file (no torch needed), and is
*reported*, not enforced: int8 is meant to differ a little; whether it differs too little to matter
is the out-of-fold quality measurement's job (``research/int8_quality.py``), not a tolerance here.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mpox_aism.contracts.decision import softmax
from mpox_aism.contracts.heatmap import heat_from_class_map
from mpox_aism.contracts.images import list_images, load_rgb
from mpox_aism.contracts.model import FEATURES_NAME, INPUT_NAME, MAPS_NAME, OUTPUT_NAME, model_file
from mpox_aism.contracts.preprocess import preprocess_batch
from mpox_aism.inference.metadata import read_onnx_meta

log = logging.getLogger(__name__)
INT8_NAME = "model.int8.onnx"


def split_photos(files: list[Path], n_calib: int, n_parity: int) -> tuple[list[Path], list[Path]]:
    """Evenly spread, disjoint calibration and parity photos (a folder sorted by class gives every class)."""
    files = sorted(files)
    step = max(1, len(files) // max(1, n_calib))
    calib = files[::step][:n_calib]
    chosen = set(calib)
    rest = [f for f in files if f not in chosen]
    pstep = max(1, len(rest) // max(1, n_parity))
    return calib, rest[pstep // 2::pstep][:n_parity]


class _PhotoReader:
    """A CalibrationDataReader: preprocessed photos, ``batch`` at a time (MinMax over a batch is the same
    as over its photos one by one, in fewer runs)."""

    def __init__(self, paths: list[Path], image_size: int, batch: int = 8):
        self._it: Iterator[list[Path]] = iter([paths[i:i + batch] for i in range(0, len(paths), batch)])
        self.image_size = image_size

    def get_next(self) -> dict[str, np.ndarray] | None:
        paths = next(self._it, None)
        return None if paths is None else {INPUT_NAME: preprocess_batch([load_rgb(p) for p in paths], self.image_size)}

    def rewind(self) -> None:  # part of the CalibrationDataReader protocol; one pass is all MinMax needs
        pass


def quantize_int8(fp32_onnx: str | Path, out: str | Path, calib_photos: list[Path]) -> Path:
    """Quantize ``fp32_onnx`` to ``out`` (QDQ, per-channel int8), calibrated on ``calib_photos``; the
    fp32 file's metadata (labels, temperature, ``model_version``) is carried over, so the familiarity
    score fitted for that network loads beside the int8 one."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calib_photos:
        raise ValueError("no calibration photos")
    meta = read_onnx_meta(fp32_onnx)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mpox-aism-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_onnx), str(prepared))  # shape inference + fusions, as ORT advises
        quantize_static(str(prepared), str(out), _PhotoReader(calib_photos, meta.image_size),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
        # not ``CalibMaxIntermediateOutputs``: in onnxruntime 1.32 it discards each full chunk's outputs
        # without folding them into the ranges (calibrate.py ``collect_data``), so only the remainder counts
    source = onnx.load(str(fp32_onnx), load_external_data=False)
    proto = onnx.load(str(out))
    del proto.metadata_props[:]
    for p in source.metadata_props:
        proto.metadata_props.add(key=p.key, value=p.value)
    proto.metadata_props.add(key="precision", value=f"int8 (ORT static QDQ, per-channel, MinMax on "
                                                    f"{len(calib_photos)} photos)")
    onnx.save(proto, str(out))
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two heat maps; 1.0 when both are flat and equal (nothing to disagree on)."""
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float(np.allclose(a, b))


def int8_parity(fp32_onnx: str | Path, int8_onnx: str | Path, images: list[np.ndarray]) -> dict:
    """int8 vs fp32 ONNX on the same preprocessed batch: probabilities, top class, top-class heat maps
    (as shown to a person: ReLU + min-max, upsampled) and the pooled features."""
    import onnxruntime as ort

    meta = read_onnx_meta(fp32_onnx)
    batch = preprocess_batch(images, meta.image_size)
    names = [OUTPUT_NAME, FEATURES_NAME, MAPS_NAME]
    runs = []
    for path in (fp32_onnx, int8_onnx):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        have = {o.name for o in sess.get_outputs()}
        missing = [n for n in names if n not in have]
        if missing:
            raise ValueError(f"{path}: outputs {missing} missing (has {sorted(have)})")
        runs.append([np.concatenate(parts) for parts in
                     zip(*(sess.run(names, {INPUT_NAME: batch[i:i + 16]}) for i in range(0, len(batch), 16)),
                         strict=True)])
    (ref_logits, ref_feats, ref_maps), (got_logits, got_feats, got_maps) = runs
    ref, got = softmax(ref_logits, meta.temperature), softmax(got_logits, meta.temperature)
    size, top = meta.image_size, ref.argmax(1)
    heat_ref = [heat_from_class_map(m[t], size, (size, size)) for m, t in zip(ref_maps, top, strict=True)]
    heat_got = [heat_from_class_map(m[t], size, (size, size)) for m, t in zip(got_maps, top, strict=True)]
    corr = np.array([pearson(a, b) for a, b in zip(heat_ref, heat_got, strict=True)])
    scale = max(float(np.abs(ref_feats).max()), 1e-6)
    return {"images": len(batch), "reference": "fp32 ONNX (model.onnx)",
            "max_abs_diff": float(np.abs(ref - got).max()), "mean_abs_diff": float(np.abs(ref - got).mean()),
            "argmax_agree": float((ref.argmax(1) == got.argmax(1)).mean()),
            "heatmap_corr_mean": float(corr.mean()), "heatmap_corr_min": float(corr.min()),
            "heatmap_max_abs_diff": max(float(np.abs(a - b).max()) for a, b in zip(heat_ref, heat_got, strict=True)),
            "features_max_rel_diff": float(np.abs(ref_feats - got_feats).max() / scale),
            "features_mean_rel_diff": float(np.abs(ref_feats - got_feats).mean() / scale)}


def _photos(data: str | None, n_calib: int, n_parity: int) -> tuple[list[Path], list[Path]]:
    if data:
        files = list_images(data)
        if len(files) < 2:
            raise FileNotFoundError(f"need at least 2 images under {data}, found {len(files)}")
        return split_photos(files, n_calib, n_parity)
    from mpox_aism.contracts.sample import builtin_sample_dir

    log.warning("no --calib-data: calibrating on the built-in sample photos only; for a kiosk, pass the dev photos")
    files = list_images(builtin_sample_dir())
    return files, files  # too few to keep apart: the report says so (calibration_photos_in_parity)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Quantize a model's model.onnx to int8 (ONNX Runtime static, QDQ, "
                                "per-channel), calibrated on real photos, with a parity report.", add_help=add_help)
    p.add_argument("--model", default=None, help="model directory holding model.onnx (default: models/default)")
    p.add_argument("--out", default=None, help=f"output file (default: {INT8_NAME} in the model directory)")
    p.add_argument("--calib-data", default=None, help="folder of real photos (e.g. the dev photos) to calibrate on")
    p.add_argument("--calib-images", type=int, default=128, help="how many photos to calibrate on")
    p.add_argument("--parity-images", type=int, default=64, help="how many other photos to check parity on")
    return p


def main(args: argparse.Namespace) -> dict:
    fp32 = model_file(args.model, "model.onnx")
    out = Path(args.out) if args.out else fp32.parent / INT8_NAME
    calib, parity = _photos(args.calib_data, args.calib_images, args.parity_images)
    quantize_int8(fp32, out, calib)
    report = int8_parity(fp32, out, [load_rgb(p) for p in parity])
    report.update(calibration_photos=len(calib), calibration_data=args.calib_data or "built-in sample",
                  calibration_photos_in_parity=bool(set(calib) & set(parity)))
    Path(str(out) + ".parity.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{out}: int8 vs fp32 on {report['images']} photos: probabilities max abs diff {report['max_abs_diff']:.3f}, "
          f"argmax agreement {report['argmax_agree']:.3f}, top-class heat-map correlation mean "
          f"{report['heatmap_corr_mean']:.3f} (min {report['heatmap_corr_min']:.3f})")
    return report
