"""``mpox-aism screen``: the paper's model screening (its Fig. 3a/b) — several architectures, one recipe.

Each architecture is trained by ``mpox-aism train`` with the same data, split, epochs, image size
and optimiser settings into ``OUT/<arch>/``; then a table (accuracy, macro-F1, mpox recall,
parameters, inference ms/image on this machine) and overlaid validation curves are written. On a
CPU use small images and few epochs: the table says which were used, so nobody mistakes a quick
screen for a converged comparison.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch

from mpox_aism.model.modeldir import load_model
from mpox_aism.model.zoo import ARCHS, count_parameters
from mpox_aism.training import train


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train several architectures under one recipe and compare them.",
                                add_help=add_help)
    p.add_argument("--data", required=True)
    p.add_argument("--archs", required=True, help=f"comma-separated, from: {', '.join(ARCHS)}")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", required=True)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pretrained", choices=("auto", "imagenet", "none"), default="none",
                   help="'none' (default) keeps the comparison fair: only mobilenet_v2 has ImageNet weights")
    p.add_argument("--limit-per-class", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


@torch.no_grad()
def ms_per_image(model: torch.nn.Module, image_size: int, device: str, batch: int = 8, reps: int = 3) -> float:
    model.eval().to(device)
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    model(x)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        model(x)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t0) / (reps * batch)


def _overlay(out: Path, archs: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for arch in archs:
        with (out / arch / "history.csv").open() as f:
            rows = list(csv.DictReader(f))
        ep = [int(r["epoch"]) for r in rows]
        a1.plot(ep, [float(r["val_accuracy"]) for r in rows], "o-", label=arch)
        a2.plot(ep, [float(r["train_loss"]) for r in rows], "o-", label=arch)
    a1.set(xlabel="epoch", ylabel="validation accuracy", ylim=(0, 1))
    a2.set(xlabel="epoch", ylabel="training loss")
    a1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)


def main(args: argparse.Namespace) -> list[dict]:
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    unknown = [a for a in archs if a not in ARCHS]
    if unknown:
        raise ValueError(f"unknown architecture(s) {unknown}; choose from {', '.join(ARCHS)}")
    out = Path(args.out)
    rows = []
    for arch in archs:
        targs = train.get_args_parser().parse_args([
            "--data", args.data, "--arch", arch, "--epochs", str(args.epochs), "--image-size", str(args.image_size),
            "--batch-size", str(args.batch_size), "--out", str(out / arch), "--pretrained", args.pretrained,
            "--seed", str(args.seed), "--workers", str(args.workers), "--device", args.device,
            "--limit-per-class", str(args.limit_per_class)])
        m = train.main(targs)
        model, info = load_model(out / arch)
        rows.append({"arch": arch, "accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4),
                     "mpox_recall": round(m["per_class"]["mpox"]["recall"], 4),
                     "params_m": round(count_parameters(model) / 1e6, 2),
                     "ms_per_image": round(ms_per_image(model, info.image_size, args.device), 2),
                     "best_epoch": info.recipe.get("best_epoch")})
    recipe = (f"{args.epochs} epochs, {args.image_size} px, batch {args.batch_size}, pretrained={args.pretrained}, "
              f"seed {args.seed}, device {args.device}" + (f", ≤{args.limit_per_class} images/class/side"
                                                          if args.limit_per_class else ""))
    lines = [f"# Model screening ({recipe})", "", "| arch | accuracy | macro-F1 | mpox recall | params (M) | "
             f"ms/image ({args.device}, batch 8) | best epoch |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['arch']} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {r['mpox_recall']:.3f} | {r['params_m']} "
              f"| {r['ms_per_image']} | {r['best_epoch']} |" for r in rows]
    (out / "screen.md").write_text("\n".join(lines) + "\n")
    (out / "screen.json").write_text(json.dumps({"recipe": recipe, "results": rows}, indent=2) + "\n")
    _overlay(out, archs)
    print("\n".join(lines))
    return rows
