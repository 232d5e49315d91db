"""``mpox-aism train``: supervised training on a labeled folder, split by group, then calibrated.

Shaped like torchvision's references/classification: ``get_args_parser → main →
train_one_epoch``. Each epoch writes ``checkpoint.pt`` (resumable with ``--resume``), appends to
``history.csv`` and redraws ``curves.png``; the epoch with the best validation macro-F1 is kept,
its temperature fitted on the validation side, and saved as ``RUN_DIR/model.pt`` with the
validation report (``metrics.json``…) beside it.

Class balance: a ``WeightedRandomSampler`` draws every class equally often (weights 1/count).
The paper instead wrote augmented copies of its five scarce classes to disk; a sampler gives the
same balance with fresh random augmentations on every draw, no files, and no risk of copies
crossing the split.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler, get_worker_info
from tqdm import tqdm

from mpox_aism.contracts.decision import softmax
from mpox_aism.contracts.labels import LABELS
from mpox_aism.model.modeldir import ModelInfo, load_init_checkpoint, save_model
from mpox_aism.model.zoo import (
    ARCHS,
    DEFAULT_ARCH,
    IMAGENET_ARCHS,
    build_model,
    load_imagenet_weights,
)
from mpox_aism.training import plots
from mpox_aism.training.augment import TrainTransform
from mpox_aism.training.calibration import fit_temperature
from mpox_aism.training.data import ImageDataset, Sample, class_counts, scan_dataset
from mpox_aism.training.engine import make_scheduler, save_atomic, seed_everything, write_csv
from mpox_aism.training.evaluate import predict_logits, write_report
from mpox_aism.training.metrics import compute_metrics
from mpox_aism.training.modelcard import write_model_card
from mpox_aism.training.split import group_split

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "val_mpox_recall",
                  "lr", "seconds")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train a skin-lesion classifier.", add_help=add_help)
    p.add_argument("--data", required=True, help="image folder <root>/<class>/*.jpg (+ manifest.csv)")
    p.add_argument("--arch", default=DEFAULT_ARCH, choices=ARCHS)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--out", required=True, help="run directory (model.pt, checkpoint.pt, history.csv…)")
    p.add_argument("--init", default=None, help="initialise from a checkpoint (model.pt or SimCLR encoder.pt)")
    p.add_argument("--pretrained", choices=("auto", "imagenet", "none"), default="auto",
                   help="ImageNet weights: 'auto' = yes where obtainable offline (mobilenet_v2, "
                        "efficientnet_lite0/2)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--opt", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 5e-4 adamw, 0.01 sgd)")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up, then cosine decay")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--ema-decay", type=float, default=0.0,
                   help="keep an exponential moving average of the weights (per step, e.g. 0.99) and "
                        "validate/ship it: a small validation side makes single-epoch weights noisy")
    p.add_argument("--class-weight", action="append", default=[], metavar="LABEL=W",
                   help="loss weight of one class (repeatable), e.g. mpox=2 for a screening cost that "
                        "counts a missed mpox twice; on top of the balancing sampler")
    p.add_argument("--balance", choices=("sampler", "none"), default="sampler",
                   help="'sampler': draw each class equally often")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of each class's images for validation")
    p.add_argument("--patience", type=int, default=0,
                   help="stop after N epochs without a better val macro-F1 (0 = off)")
    p.add_argument("--limit-per-class", type=int, default=0,
                   help="use at most N images per class per side (quick runs)")
    p.add_argument("--seed", type=int, default=0, help="training randomness (init, sampling, augmentation)")
    p.add_argument("--split-seed", type=int, default=0,
                   help="which group split; kept apart from --seed so seeds can be compared on one split")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (slower)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (default: on for CUDA)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt")
    return p




def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    info = get_worker_info()
    if info is not None and hasattr(info.dataset.transform, "reseed"):
        info.dataset.transform.reseed(seed)


def _limit(samples: list[Sample], n: int) -> list[Sample]:
    if n <= 0:
        return samples
    kept: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        if len(kept[s.label]) < n:
            kept[s.label].append(s)
    return [s for group in kept.values() for s in group]




def parse_class_weights(items: list[str]) -> torch.Tensor | None:
    """``["mpox=2"]`` → a weight per label in label order; None when nothing is given."""
    if not items:
        return None
    w = torch.ones(len(LABELS))
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in LABELS:
            raise SystemExit(f"train --class-weight: expected LABEL=W with LABEL one of {', '.join(LABELS)}, "
                             f"got {item!r}")
        try:
            weight = float(value)
        except ValueError:
            raise SystemExit(f"train --class-weight: {value!r} is not a number (in {item!r})") from None
        if not weight > 0:
            raise SystemExit(f"train --class-weight: weights must be > 0 (in {item!r})")
        w[LABELS.index(name)] = weight
    return w


def make_ema(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An EMA copy that averages batch-norm buffers too, so it can be evaluated as is."""
    if decay <= 0:
        return None
    if not decay < 1:
        raise SystemExit(f"train --ema-decay: must be in [0, 1), got {decay}")
    return torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True)


def train_one_epoch(model: nn.Module, loader: DataLoader, criterion: nn.Module,
                    opt: torch.optim.Optimizer, scheduler, scaler: torch.amp.GradScaler, *,
                    device: str, amp_dtype: torch.dtype | None, desc: str,
                    ema: torch.optim.swa_utils.AveragedModel | None = None) -> float:
    model.train()
    total, n = 0.0, 0
    bar = tqdm(loader, desc=desc, leave=False, mininterval=2.0, file=sys.stderr)
    for x, y in bar:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device_type="cuda", dtype=amp_dtype or torch.float16, enabled=amp_dtype is not None):
            loss = criterion(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        total += loss.item() * len(y)
        n += len(y)
        bar.set_postfix(loss=f"{total / n:.3f}")
    return total / max(1, n)


def _write_history(run: Path, history: list[dict]) -> None:
    write_csv(run / "history.csv", history, HISTORY_FIELDS)
    plots.training_curves(history, run / "curves.png")




def main(args: argparse.Namespace) -> dict:
    class_weight = parse_class_weights(args.class_weight)  # a typo fails before any data is read
    run = Path(args.out)
    run.mkdir(parents=True, exist_ok=True)
    seed_everything(args.seed, args.deterministic)
    device = args.device
    amp = args.amp if args.amp is not None else device.startswith("cuda")
    amp_dtype = None
    if amp and device.startswith("cuda"):
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    samples = scan_dataset(args.data, require_all_classes=True)
    train_s, val_s = group_split(samples, val_fraction=args.val_fraction, seed=args.split_seed)
    train_s, val_s = _limit(train_s, args.limit_per_class), _limit(val_s, args.limit_per_class)
    counts = class_counts(train_s)
    if min(counts) == 0:
        empty = [LABELS[i] for i, c in enumerate(counts) if c == 0]
        raise SystemExit(f"train: the training side has no images of {', '.join(empty)}")
    print(f"train {len(train_s)} images {dict(zip(LABELS, counts, strict=True))}")
    print(f"val   {len(val_s)} images {dict(zip(LABELS, class_counts(val_s), strict=True))}")

    model = build_model(args.arch, image_size=args.image_size)
    pretrained = args.pretrained
    if pretrained == "auto":
        pretrained = "imagenet" if args.arch in IMAGENET_ARCHS and not args.init else "none"
    if pretrained == "imagenet":
        load_imagenet_weights(model, args.arch)
    if args.init:
        copied, skipped = load_init_checkpoint(model, args.init)
        print(f"init from {args.init}: {copied} tensors copied, {skipped} skipped")
    model.to(device)

    g = torch.Generator().manual_seed(args.seed)
    sampler = None
    if args.balance == "sampler":
        weights = [1.0 / counts[s.label] for s in train_s]
        sampler = WeightedRandomSampler(weights, num_samples=len(train_s), replacement=True, generator=g)
    loader = DataLoader(ImageDataset(train_s, TrainTransform(args.image_size, seed=args.seed)),
                        batch_size=args.batch_size, sampler=sampler, shuffle=sampler is None,
                        generator=g, num_workers=args.workers, worker_init_fn=_worker_init,
                        drop_last=len(train_s) > args.batch_size, pin_memory=device.startswith("cuda"),
                        persistent_workers=False)
    lr = args.lr or (5e-4 if args.opt == "adamw" else 0.01)
    if args.opt == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=args.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=args.weight_decay,
                              nesterov=True)
    steps = len(loader)
    scheduler = make_scheduler(opt, int(args.warmup_epochs * steps), args.epochs * steps)
    scaler = torch.amp.GradScaler(enabled=amp_dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(weight=None if class_weight is None else class_weight.to(device),
                                    label_smoothing=args.label_smoothing)
    ema = make_ema(model, args.ema_decay)
    shipped = model if ema is None else ema.module  # the weights that are validated and saved

    start, history, best_f1, best_state, stale = 0, [], -1.0, None, 0
    ckpt_path = run / CHECKPOINT
    if args.resume:
        if not ckpt_path.is_file():
            raise SystemExit(f"train --resume: no {ckpt_path}")
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        if ema is not None:
            ema.load_state_dict(ck["ema"])
        g.set_state(ck["generator"])
        torch.set_rng_state(ck["torch_rng"])
        start, history, best_f1, best_state, stale = (ck["epoch"] + 1, ck["history"], ck["best_f1"],
                                                      ck["best_state"], ck["stale"])
        print(f"resumed from {ckpt_path} at epoch {start + 1}")

    y_val = np.array([s.label for s in val_s])
    for epoch in range(start, args.epochs):
        t0 = time.time()
        loss = train_one_epoch(model, loader, criterion, opt, scheduler, scaler, device=device,
                               amp_dtype=amp_dtype, desc=f"epoch {epoch + 1}/{args.epochs}", ema=ema)
        logits = predict_logits(shipped, val_s, image_size=args.image_size, device=device,
                                workers=args.workers)
        m = compute_metrics(softmax(logits), y_val)
        val_loss = float(nn.functional.cross_entropy(torch.from_numpy(logits).float(),
                                                     torch.from_numpy(y_val)).item())
        row = {"epoch": epoch + 1, "train_loss": round(loss, 5), "val_loss": round(val_loss, 5),
               "val_accuracy": round(m.accuracy, 5), "val_macro_f1": round(m.macro_f1, 5),
               "val_mpox_recall": round(m.per_class["mpox"].recall, 5),
               "lr": f"{scheduler.get_last_lr()[0]:.3g}", "seconds": round(time.time() - t0, 1)}
        history.append(row)
        print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        if m.macro_f1 > best_f1:
            best_f1, stale = m.macro_f1, 0
            best_state = {k: v.detach().cpu().clone() for k, v in shipped.state_dict().items()}
        else:
            stale += 1
        _write_history(run, history)
        save_atomic(ckpt_path, {
            "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "generator": g.get_state(),
            "ema": None if ema is None else ema.state_dict(),
            "torch_rng": torch.get_rng_state(), "history": history, "best_f1": best_f1,
            "best_state": best_state, "stale": stale, "args": vars(args)})
        if args.patience and stale >= args.patience:
            print(f"early stop: no better val macro-F1 for {stale} epochs")
            break

    model.load_state_dict(best_state)
    logits = predict_logits(model, val_s, image_size=args.image_size, device=device, workers=args.workers)
    temperature = fit_temperature(logits, y_val)
    best_epoch = max(history, key=lambda h: h["val_macro_f1"])["epoch"]
    info = ModelInfo(
        arch=args.arch, image_size=args.image_size, temperature=temperature,
        val_groups=sorted({s.group for s in val_s}),
        split={"val_fraction": args.val_fraction, "seed": args.split_seed, "n_train": len(train_s),
               "n_val": len(val_s), "train_counts": counts, "val_counts": class_counts(val_s)},
        recipe={"command": "mpox-aism train " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["train"]
                                                         else sys.argv[1:]),
                "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                         if k != "func"},
                "best_epoch": best_epoch, "pretrained": pretrained},
    )
    model.cpu()
    save_model(run, model, info)
    metrics = write_report(run, val_s, logits, temperature=temperature, threshold=info.threshold,
                           title=f"{args.arch} validation (group-held-out, epoch {best_epoch})",
                           extra={"model_version": info.model_version, "split": "val",
                                  "selected_on": "this validation side (best macro-F1 epoch)"})
    write_model_card(run, info, metrics, samples, data_root=str(args.data))
    print(f"best epoch {best_epoch}: val macro_f1={metrics['macro_f1']:.3f} "
          f"mpox_recall={metrics['per_class']['mpox']['recall']:.3f} temperature={temperature:.3f} "
          f"→ {run / 'model.pt'}")
    return metrics
