"""What int8 costs (issue 28, item 3): out-of-fold quality and heat-map parity, fp32 vs int8 ONNX.

Run after ``mpox-aism export int8 --model M --calib-data DATA --calib-images N`` (which writes
``M/model.int8.onnx``); speed is ``mpox-aism bench classifier --backend onnxruntime --backend
onnxruntime-int8`` on the same model directory.

(a) Quality out of fold. The dev photos are split 5-fold by group (``group_kfold``, seed 0). Each fold
fits the shipped recipe's head (``fit_head``, ``sample_weights(..., "class_source")``, l2 fixed to
the shipped model's ``recipe["l2"]``, no inner search) on the *fp32* features of its training side,
then applies that one head to the test side's fp32 features and to its int8 features (view 0: the
photo as is, no flip). The int8 model's own head is not used: a head refitted on fp32 features is what
every future head will be, and applying the same head to both isolates what quantizing the backbone
costs. The healthy-people crops of the shipped recipe (``--negatives``) are skipped: they are not in
../shared/data and only add training rows to every fold alike.

Calibration photos: the export takes ``split_photos(all dev photos, N, H)``: N calibration photos and
H other photos for parity, disjoint. Calibration fits activation ranges only (no labels), but those
photos are also test photos of some fold, so the figures are reported twice: on all photos, and on
the photos never used for calibration.

(b) Heat maps: the H parity photos (none used for calibration): Pearson correlation of the top-class
heat maps (as a person sees them: ReLU + min-max, upsampled to the input size), fp32 vs int8, mean
and minimum, and the max abs difference.

KEEP/DROP RULE (written before the deciding run): int8 ships on by default (``classifier.backend``
auto → onnxruntime-int8 where the file exists, and ``model.int8.onnx`` committed) only if
  1. out-of-fold macro-F1 (int8 − fp32) ≥ −0.01, AND
  2. out-of-fold mpox recall (int8 − fp32) ≥ −0.01,
     — 1 and 2 on all photos AND on the photos not used for calibration, AND
  3. the mean top-class heat-map correlation fp32 vs int8 ≥ 0.95 on the H parity photos, AND
  4. int8 is faster than fp32 (crops/s) at batch 1 and at batch 8 on the 2-core machine
     (a smaller, slower file is no reason to change the default).
Otherwise it stays an option (``classifier.backend: onnxruntime-int8``), with these figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from mpox_aism.contracts.decision import softmax
from mpox_aism.contracts.images import list_images, load_rgb
from mpox_aism.contracts.labels import LABELS
from mpox_aism.contracts.machine import describe_machine
from mpox_aism.contracts.model import FEATURES_NAME, INPUT_NAME, OUTPUT_NAME, model_file
from mpox_aism.contracts.preprocess import preprocess_batch
from mpox_aism.export.int8 import int8_parity, split_photos
from mpox_aism.inference.metadata import read_onnx_meta
from mpox_aism.training.data import scan_dataset
from mpox_aism.training.folds import group_kfold
from mpox_aism.training.metrics import compute_metrics
from mpox_aism.training.probe import fit_head, sample_weights

BOUND_F1 = BOUND_RECALL = 0.01
BOUND_HEAT_CORR = 0.95


def onnx_features(path: Path, photos: list[Path], image_size: int, batch: int = 16) -> np.ndarray:
    """The ``features`` output for every photo (view 0), through the one preprocessing."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = []
    for i in range(0, len(photos), batch):
        x = preprocess_batch([load_rgb(p) for p in photos[i:i + batch]], image_size)
        out.append(sess.run([FEATURES_NAME, OUTPUT_NAME], {INPUT_NAME: x})[0])
    return np.concatenate(out)


def cached(cache: Path | None, name: str, compute) -> np.ndarray:
    if cache is None:
        return compute()
    f = cache / f"{name}.npy"
    if f.is_file():
        return np.load(f)
    cache.mkdir(parents=True, exist_ok=True)
    arr = compute()
    np.save(f, arr)
    return arr


def figures(probs: np.ndarray, y: np.ndarray) -> dict:
    m = compute_metrics(probs, y)
    return {"n": len(y), "macro_f1": round(m.macro_f1, 4), "mpox_recall": round(m.per_class["mpox"].recall, 4),
            "accuracy": round(m.accuracy, 4)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="dev photos with manifest.csv (../shared/data/skin8)")
    p.add_argument("--model", default=None, help="model directory with model.onnx and model.int8.onnx")
    p.add_argument("--calib-images", type=int, default=128, help="as given to `mpox-aism export int8`")
    p.add_argument("--heat-images", type=int, default=100, help="as --parity-images of the export")
    p.add_argument("--cache", default=None, help="folder for the features (reruns skip extraction)")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    t0 = time.time()
    fp32, int8 = model_file(args.model, "model.onnx"), model_file(args.model, "model.int8.onnx")
    meta = read_onnx_meta(fp32)
    from mpox_aism.model.modeldir import load_model

    info = load_model(args.model)[1]
    l2 = float(info.recipe["l2"])
    samples = scan_dataset(args.data, verify=False)
    photos = [s.path for s in samples]
    y = np.array([s.label for s in samples])
    calib, heat = split_photos(list_images(args.data), args.calib_images, args.heat_images)
    calib_set = {c.resolve() for c in calib}
    not_calib = np.array([ph.resolve() not in calib_set for ph in photos])
    cache = Path(args.cache) if args.cache else None
    feats = {k: cached(cache, f"{k}-{path.stat().st_size}-{path.stat().st_mtime_ns}",  # a re-export: new key
                       lambda path=path: onnx_features(path, photos, meta.image_size))
             for k, path in (("fp32", fp32), ("int8", int8))}
    weights = sample_weights(y, [s.source for s in samples], "class_source")
    groups = [s.group for s in samples]
    probs = {k: np.zeros((len(samples), len(LABELS))) for k in feats}
    for fold in group_kfold(samples, 5, seed=0):
        head = fit_head(feats["fp32"][fold.train], y[fold.train], weights=weights[fold.train],
                        groups=[groups[i] for i in fold.train], l2_grid=[l2])
        for k, f in feats.items():
            probs[k][fold.test] = softmax(head.logits(f[fold.test]), meta.temperature)
    quality = {scope: {k: figures(probs[k][m], y[m]) for k in probs}
               for scope, m in (("all", np.ones(len(y), bool)), ("not_calibration", not_calib))}
    for q in quality.values():
        q["delta"] = {m: round(q["int8"][m] - q["fp32"][m], 4) for m in ("macro_f1", "mpox_recall", "accuracy")}
        q["top_class_agree"] = None
    agree = (probs["fp32"].argmax(1) == probs["int8"].argmax(1))
    quality["all"]["top_class_agree"] = round(float(agree.mean()), 4)
    quality["not_calibration"]["top_class_agree"] = round(float(agree[not_calib].mean()), 4)
    heat_report = int8_parity(fp32, int8, [load_rgb(h) for h in heat])
    passes = {
        "macro_f1": all(q["delta"]["macro_f1"] >= -BOUND_F1 for q in quality.values()),
        "mpox_recall": all(q["delta"]["mpox_recall"] >= -BOUND_RECALL for q in quality.values()),
        "heatmap_corr": heat_report["heatmap_corr_mean"] >= BOUND_HEAT_CORR,
    }
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python research/int8_quality.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": asdict(describe_machine()),
        "model_version": meta.model_version, "l2": l2, "temperature": meta.temperature,
        "photos": len(samples), "calibration_photos": len(calib), "healthy_crops": "skipped",
        "quality": quality, "heatmaps": heat_report,
        "rule": {"bound_f1": BOUND_F1, "bound_recall": BOUND_RECALL, "bound_heat_corr": BOUND_HEAT_CORR,
                 "passes_quality_and_heat": passes, "speed": "judged from `mpox-aism bench classifier` (rule 4)"},
        "seconds": round(time.time() - t0, 1),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"quality": quality, "heat": {k: heat_report[k] for k in
                      ("heatmap_corr_mean", "heatmap_corr_min", "heatmap_max_abs_diff")}, "passes": passes}, indent=1))
    return report


if __name__ == "__main__":
    main()
