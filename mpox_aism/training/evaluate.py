"""``mpox-aism evaluate``: per-class figures, the 0.6-threshold view, calibration, per-source figures.

Everything goes to ``OUT_DIR``: ``metrics.json`` (schema in the README), ``metrics.md``,
``predictions.csv``, ``confusion_matrix.png``, ``reliability.png``, ``threshold_sweep.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from mpox_aism.contracts.decision import softmax
from mpox_aism.contracts.familiarity import Familiarity
from mpox_aism.contracts.labels import LABELS
from mpox_aism.model.modeldir import load_model, resolve_model_path
from mpox_aism.model.zoo import head_inputs
from mpox_aism.training import plots
from mpox_aism.training.augment import EvalTransform
from mpox_aism.training.data import ImageDataset, Sample, scan_dataset
from mpox_aism.training.metrics import compute_metrics, group_bootstrap, reliability_bins, threshold_sweep
from mpox_aism.training.split import split_by_groups

log = logging.getLogger(__name__)


@torch.no_grad()
def predict_logits(model: nn.Module, samples: Sequence[Sample], *, image_size: int,
                   batch_size: int = 64, device: str = "cpu", workers: int = 0) -> np.ndarray:
    """Logits for ``samples`` through the serving preprocessing (no augmentation)."""
    return _predict(model, samples, image_size=image_size, batch_size=batch_size, device=device, workers=workers)[0]


@torch.no_grad()
def _predict(model: nn.Module, samples: Sequence[Sample], *, image_size: int, batch_size: int, device: str,
             workers: int, features: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits and (``features``) the pooled features the head reads, from one forward pass per batch."""
    loader = DataLoader(ImageDataset(samples, EvalTransform(image_size)), batch_size=batch_size,
                        shuffle=False, num_workers=workers)
    model.eval().to(device)
    logits, feats = [], []
    # the head's input, as every backend's ``features`` output gives it
    with head_inputs(model) if features else contextlib.nullcontext([]) as pooled:
        for x, _ in loader:
            logits.append(model(x.to(device)).float().cpu())
            if pooled:
                feats.append(pooled.pop().float().cpu())
    if not logits:
        return np.zeros((0, len(LABELS)), dtype=np.float32), None
    return torch.cat(logits).numpy(), torch.cat(feats).numpy() if feats else None


def _by_column(samples: Sequence[Sample], probs: np.ndarray, y: np.ndarray, threshold: float) -> dict:
    """The same figures per value of each extra manifest column (source, body region, stage…)."""
    columns = sorted({c for s in samples for c in s.columns()})
    groups = np.array([s.group for s in samples])
    out: dict[str, dict] = {}
    for col in columns:
        values = np.array([s.columns().get(col, "") for s in samples])
        out[col] = {}
        for v in sorted(set(values)):
            m = values == v
            met = compute_metrics(probs[m], y[m], threshold=threshold).to_json()
            met["per_class"] = {k: c for k, c in met["per_class"].items() if c["support"] > 0}
            met["ci95"] = group_bootstrap(probs[m], y[m], groups[m], n=300)
            out[col][v] = met
    return out


def _markdown(metrics: dict, title: str) -> str:
    lines = [f"# {title}", "",
             f"n = {metrics['n']}, accuracy = {metrics['accuracy']:.3f}, "
             f"macro-F1 = {metrics['macro_f1']:.3f}, ECE = {metrics['ece']:.3f}", "",
             "| class | precision | recall | specificity | F1 | support |",
             "|---|---|---|---|---|---|"]
    for name, c in metrics["per_class"].items():
        lines.append(f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['specificity']:.3f} "
                     f"| {c['f1']:.3f} | {c['support']} |")
    ci = metrics.get("ci95")
    if ci:
        lines += ["", f"95 % intervals (bootstrap over {ci['resamples']['groups']} groups): accuracy "
                  f"{ci['accuracy']['low']:.3f}–{ci['accuracy']['high']:.3f}, macro-F1 {ci['macro_f1']['low']:.3f}–"
                  f"{ci['macro_f1']['high']:.3f}, mpox recall {ci['mpox_recall']['low']:.3f}–"
                  f"{ci['mpox_recall']['high']:.3f}."]
    th = metrics["threshold"]
    lines += ["", f"At threshold {th['value']}: coverage {th['coverage']:.3f} (the rest go to a person), "
              f"accuracy on answered {th['accuracy_answered']:.3f}.", ""]
    for col, groups in metrics.get("by_column", {}).items():
        lines += [f"## by {col}", "", "| value | n | accuracy | macro-F1 (present classes) |",
                  "|---|---|---|---|"]
        for v, m in groups.items():
            lines.append(f"| {v} | {m['n']} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def write_report(out_dir: str | Path, samples: Sequence[Sample], logits: np.ndarray, *,
                 temperature: float, threshold: float, title: str = "evaluation",
                 extra: dict | None = None) -> dict:
    """Compute every figure from logits and write the report files; returns the metrics dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    probs = softmax(logits, temperature)
    y = np.array([s.label for s in samples], dtype=int)
    metrics = compute_metrics(probs, y, threshold=threshold).to_json()
    metrics["threshold_sweep"] = threshold_sweep(probs, y)
    metrics["by_column"] = _by_column(samples, probs, y, threshold)
    metrics["ci95"] = group_bootstrap(probs, y, [s.group for s in samples])
    metrics["temperature"] = temperature
    if extra:
        metrics.update(extra)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "metrics.md").write_text(_markdown(metrics, title))
    np.save(out / "logits.npy", np.asarray(logits, dtype=np.float32))  # before T: lets a report be re-tempered
    with (out / "predictions.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "predicted", "probability", *LABELS])
        for s, p in zip(samples, probs, strict=True):
            w.writerow([s.path, s.label_name, LABELS[int(p.argmax())], f"{p.max():.4f}",
                        *(f"{v:.4f}" for v in p)])
    plots.confusion(np.array(metrics["confusion_matrix"]), LABELS, out / "confusion_matrix.png")
    plots.reliability(reliability_bins(probs, y), metrics["ece"], out / "reliability.png")
    plots.threshold_sweep(metrics["threshold_sweep"], threshold, out / "threshold_sweep.png")
    return metrics


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Evaluate a model on a labeled image folder.",
                                add_help=add_help)
    p.add_argument("--data", help="image folder <root>/<class>/*.jpg (+ optional manifest.csv)")
    p.add_argument("--sample", action="store_true",
                   help="evaluate on the built-in sample (no data needed; a smoke run, not a measure)")
    p.add_argument("--model", default=None, help="model directory or model.pt (default: models/default)")
    p.add_argument("--out", required=True, help="output folder for metrics.json and figures")
    p.add_argument("--split", choices=("all", "val"), default="all",
                   help="'val': only the validation groups stored in the model (its own held-out side)")
    p.add_argument("--where", default=None, metavar="COLUMN=VALUE",
                   help="only the photos whose manifest COLUMN equals VALUE, e.g. source=msid")
    p.add_argument("--threshold", type=float, default=None, help="review threshold (default: the model's)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def main(args: argparse.Namespace) -> dict:
    model, info = load_model(args.model)
    if args.sample:
        from mpox_aism.contracts.sample import builtin_sample_dir
        data = builtin_sample_dir()
    elif args.data:
        data = Path(args.data)
    else:
        raise SystemExit("evaluate: give --data DIR or --sample")
    samples = scan_dataset(data)
    if args.split == "val":
        if not info.val_groups:
            raise SystemExit("evaluate --split val: this model stores no validation groups")
        _, samples = split_by_groups(samples, info.val_groups)
        if not samples:
            raise SystemExit(f"evaluate --split val: none of the model's validation groups is in {data}")
    if args.where:
        column, sep, value = args.where.partition("=")
        if not sep:
            raise SystemExit(f"evaluate --where: expected COLUMN=VALUE, got {args.where!r}")
        samples = [s for s in samples if s.columns().get(column) == value]
        if not samples:
            raise SystemExit(f"evaluate --where: no photo in {data} has {column}={value!r}")
    threshold = info.threshold if args.threshold is None else args.threshold
    familiarity = Familiarity.beside(resolve_model_path(args.model).parent, info.model_version)
    logits, feats = _predict(model, samples, image_size=info.image_size, batch_size=args.batch_size,
                             device=args.device, workers=args.workers, features=familiarity is not None)
    extra: dict = {"model_version": info.model_version, "data": str(data), "split": args.split, "where": args.where}
    if familiarity is not None and feats is not None:  # the share a kiosk would hold as unfamiliar
        unfamiliar = familiarity.unfamiliarity(feats, logits) > familiarity.threshold
        extra["unfamiliar_rate"] = float(unfamiliar.mean())
        extra["unfamiliar_threshold"] = familiarity.threshold
    metrics = write_report(args.out, samples, logits, temperature=info.temperature, threshold=threshold,
                           title=f"{info.arch} {info.model_version} on {data} ({args.split})", extra=extra)
    mpox = metrics["per_class"]["mpox"]
    mpox_recall = f"{mpox['recall']:.3f}" if mpox["support"] else "n/a (no mpox images)"
    print(f"n={metrics['n']} accuracy={metrics['accuracy']:.3f} macro_f1={metrics['macro_f1']:.3f} "
          f"mpox_recall={mpox_recall} ece={metrics['ece']:.3f} "
          f"coverage@{threshold}={metrics['threshold']['coverage']:.3f} → {args.out}/metrics.json")
    return metrics
