"""``mpox-aism pretrain``: SimCLR self-supervised pretraining of an encoder on images without labels.

The Mpox-AISM paper pretrains its backbone with SimCLR before fine-tuning. This command does that
step and writes ``RUN_DIR/encoder.pt``, whose ``state_dict`` has the key names of
``build_model(arch)`` minus the head, so ``mpox-aism train --init RUN_DIR/encoder.pt`` fine-tunes
from it. Like ``mpox-aism train`` it writes a resumable ``checkpoint.pt`` every epoch, plus
``history.csv`` (loss, learning rate, throughput) and ``loss.png``.

Any folder of images works (recursively). A folder holding a ``manifest.csv`` is a labeled set:
only its *training* side under ``group_split(scan_dataset(DIR), val_fraction, seed)`` is used,
the split ``mpox-aism train`` makes with the same ``--val-fraction``/``--split-seed``, so validation
images never shape the encoder; exact copies of validation images elsewhere are dropped too.

Runs under ``torchrun`` with DistributedDataParallel when ``WORLD_SIZE`` > 1 (NCCL on CUDA, gloo on
CPU). ``--batch-size`` is per process; NT-Xent draws its negatives from the global batch.

``--views device`` (the default) augments on the training device: DataLoader workers only decode
each image and resize it to one fixed square (:func:`source_size`), and :class:`DeviceViews` makes
both views of the whole batch there. ``--views loader`` is the original per-image CPU pipeline
(:class:`SimCLRViews` in the workers), about 26 ms per image — too slow to feed ResNeXt-101 on a GPU.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
import random
import shlex
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from mpox_aism.contracts.images import DatasetError, is_image_name, load_rgb
from mpox_aism.contracts.preprocess import resize_square
from mpox_aism.model.zoo import ARCHS, DEFAULT_ARCH
from mpox_aism.training.data import MANIFEST, scan_dataset
from mpox_aism.training.engine import make_scheduler, save_atomic, seed_everything, write_csv
from mpox_aism.training.folds import leave_source_out as leave_source_out_fold
from mpox_aism.training.split import group_split
from mpox_aism.training.ssl import DeviceViews, Encoder, ProjectionHead, SimCLR, SimCLRViews, nt_xent_loss

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
ENCODER = "encoder.pt"
ENCODER_FORMAT = "mpox-aism/encoder@1"
HISTORY_FIELDS = ("epoch", "loss", "lr", "seconds", "images_per_s")
SOURCE_SCALE = 1.15  # --views device: side of the stored square relative to --image-size
VIEWS_STREAM = 1  # epoch_seed stream of the on-device views' generator (0: the global RNG's)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="SimCLR self-supervised pretraining of an encoder.",
                                add_help=add_help)
    p.add_argument("--data", required=True, nargs="+", help="image folders, searched recursively; labels are "
                   "ignored, and a folder with manifest.csv contributes only its training side")
    p.add_argument("--arch", default=DEFAULT_ARCH, choices=ARCHS)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=64, help="images per process (each gives two views)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--views", choices=("device", "loader"), default="device",
                   help="where the two augmented views are made: 'device' augments whole batches on "
                        "--device (workers only decode and resize); 'loader' runs torchvision transforms per "
                        "image in the DataLoader workers, too slow to feed a GPU. Default device on CPU too: "
                        "the same augmentation wherever a run goes, and fewer CPU-seconds per image even there "
                        "(~1.6x on one core), though on a CPU it no longer overlaps the training step")
    p.add_argument("--out", required=True, help="run directory (encoder.pt, checkpoint.pt, history.csv…)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak AdamW learning rate (default 1e-3·sqrt(global batch/256))")
    p.add_argument("--weight-decay", type=float, default=0.05, help="not applied to norms and biases")
    p.add_argument("--warmup-epochs", type=float, default=10.0,
                   help="linear warm-up (at most a tenth of the run), then cosine decay")
    p.add_argument("--temperature", type=float, default=0.5, help="NT-Xent temperature τ")
    p.add_argument("--proj-dim", type=int, default=128, help="projection head output width")
    p.add_argument("--exclude-val-of", nargs="+", default=[], action="extend", metavar="DIR",
                   help="labeled folders (with manifest.csv) whose validation images, and copies of them, "
                        "must not be used even if they appear under --data")
    p.add_argument("--leave-source-out", default=None, metavar="SOURCE",
                   help="labeled folders: use everything except the test side of `cv --loso SOURCE` "
                        "(instead of the --val-fraction split), so that fold's test photos never shape the encoder")
    p.add_argument("--init", choices=("none", "imagenet"), default="none",
                   help="imagenet: continue from the hash-checked ImageNet weights (domain-adaptive pretraining)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="validation share of labeled folders, as in `mpox-aism train`")
    p.add_argument("--limit", type=int, default=0, help="use at most N images (a seeded sample; quick runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-seed", type=int, default=0,
                   help="the group split whose validation side is excluded (= `mpox-aism train --split-seed`)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision, bf16 where supported (default: on for CUDA)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt")
    return p


# ----------------------------------------------------------------------------------------- data


@dataclass
class ImageCollection:
    """The images to pretrain on, and what was left out and why (for the log and the recipe)."""

    paths: list[Path]
    excluded_val: int = 0
    unreadable: list[str] = field(default_factory=list)
    labeled_roots: list[str] = field(default_factory=list)


def _walk(root: Path) -> tuple[list[Path], list[Path]]:
    """(images outside labeled folders, labeled folders) under ``root``; hidden entries skipped."""
    images: list[Path] = []
    labeled: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop, or one folder reachable twice
            dirnames[:] = []
            continue
        seen.add(real)
        if MANIFEST in filenames:
            labeled.append(Path(dirpath))
            dirnames[:] = []  # the manifest, not the folder tree, says what belongs to this set
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        images += [Path(dirpath) / f for f in sorted(filenames) if is_image_name(f)]
    return images, labeled


def split_labeled(root: Path, *, val_fraction: float, seed: int,
                  leave_source_out: str | None = None) -> tuple[list[Path], list[Path]]:
    """(training side, held-out side) of a labeled folder.

    By default the split ``mpox-aism train`` makes; with ``leave_source_out`` the sides of
    ``cv --loso SOURCE`` (its test side held out), so an encoder adapted here is fair to that fold.
    """
    samples = scan_dataset(root, verify=False)
    if leave_source_out:
        fold = leave_source_out_fold(samples, leave_source_out)
        return [samples[i].path for i in fold.train], [samples[i].path for i in fold.test]
    train, val = group_split(samples, val_fraction=val_fraction, seed=seed)
    return [s.path for s in train], [s.path for s in val]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _readable(path: Path) -> str | None:
    """None when the image decodes, else the reason."""
    try:
        load_rgb(path)
    except (DatasetError, OSError) as e:
        return str(e)
    return None


def _find(data: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """(loose images, distinct labeled folders) under all of ``data``."""
    images: list[Path] = []
    labeled: dict[str, Path] = {}
    for d in map(Path, data):
        if not d.is_dir():
            raise DatasetError(f"data folder {d} does not exist")
        found, roots = _walk(d)
        images += found
        for r in roots:
            labeled.setdefault(os.path.realpath(r), r)
    return images, list(labeled.values())


def _drop_copies(kept: list[Path], val: list[Path], pool: ThreadPoolExecutor) -> list[Path]:
    """Leave out byte-identical copies of validation images (a renamed copy is still that photo)."""
    val_digests = set(pool.map(_digest, val))
    return [p for p, digest in zip(kept, pool.map(_digest, kept), strict=True) if digest not in val_digests]


def collect_images(data: Sequence[str | Path], *, val_fraction: float = 0.2, seed: int = 0,
                   exclude_val_of: Iterable[str | Path] = (), leave_source_out: str | None = None,
                   limit: int = 0, threads: int = 4, verbose: bool = True) -> ImageCollection:
    """Every usable image under ``data``, never one from a labeled folder's validation side.

    Each image is decoded once here, so an unreadable one is skipped with a warning now instead of
    crashing a DataLoader worker mid-epoch.
    """
    say = print if verbose else (lambda *_a, **_k: None)
    candidates, labeled = _find(data)
    val: list[Path] = []  # validation images of every labeled folder: never to be used
    for root in labeled:
        train_side, val_side = split_labeled(root, val_fraction=val_fraction, seed=seed,
                                             leave_source_out=leave_source_out)
        candidates += train_side
        val += val_side
        how = (f"test-side images excluded (cv --loso {leave_source_out})" if leave_source_out
               else f"validation-side images excluded (val_fraction {val_fraction}, seed {seed})")
        say(f"{root}: labeled folder, training side {len(train_side)} images, {len(val_side)} {how}")
    excluded = len(val)  # never candidates, but left out all the same
    for root in map(Path, exclude_val_of):
        if not (root / MANIFEST).is_file():
            raise DatasetError(f"--exclude-val-of {root}: no {MANIFEST} there")
        val += split_labeled(root, val_fraction=val_fraction, seed=seed, leave_source_out=leave_source_out)[1]

    first: dict[str, Path] = {}  # one entry per file, however many ways it was reached
    for p in candidates:
        first.setdefault(os.path.realpath(p), p)
    unique = list(first.values())
    val_real = {os.path.realpath(p) for p in val}
    kept = [p for p in unique if os.path.realpath(p) not in val_real]
    with ThreadPoolExecutor(max(1, threads)) as pool:
        kept = _drop_copies(kept, val, pool) if val else kept
        if len(kept) < len(unique):
            say(f"{len(unique) - len(kept)} more image(s) excluded: the same files as validation images")
        excluded += len(unique) - len(kept)
        if limit and len(kept) > limit:
            kept = sorted(random.Random(seed).sample(kept, limit))
        problems = list(pool.map(_readable, kept))
    unreadable = [f"{p} ({why})" for p, why in zip(kept, problems, strict=True) if why]
    if unreadable and verbose:
        more = f" (and {len(unreadable) - 10} more)" if len(unreadable) > 10 else ""
        log.warning("skipping %d unreadable image(s): %s%s", len(unreadable), "; ".join(unreadable[:10]), more)
    paths = [p for p, why in zip(kept, problems, strict=True) if not why]
    if not paths:
        raise DatasetError(f"no usable images found under {', '.join(map(str, data))}")
    return ImageCollection(paths, excluded, unreadable, [str(r) for r in labeled])


def source_size(image_size: int) -> int:
    """Side of the square each image is stored at for ``--views device``: a little above the view
    size, so a full-image crop still shrinks (antialiased) and small crops keep some detail."""
    return round(image_size * SOURCE_SCALE)


class SourceImages(Dataset):
    """Image paths → each image as a uint8 3×size×size tensor, for :class:`DeviceViews` to augment.

    The whole image is resized to the square, aspect ratio not kept — as ``preprocess`` does at
    inference (no centre crop, so nothing at the edge is lost) — so equal-sized images batch and
    the views' crops see the same geometry the classifier later sees.
    """

    def __init__(self, paths: Sequence[Path], size: int):
        self.paths = list(paths)
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = resize_square(load_rgb(self.paths[index]), self.size)
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class UnlabeledDataset(Dataset):
    """Image paths → two augmented views of each."""

    def __init__(self, paths: Sequence[Path], views: SimCLRViews):
        self.paths = list(paths)
        self.views = views

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.views(load_rgb(self.paths[index]))


# ------------------------------------------------------------------------------------ training


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(0, 1, device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        device = f"cuda:{local}"
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=torch.device(device))
    else:
        dist.init_process_group("gloo")
    return Dist(rank, world, device)




def epoch_seed(seed: int, epoch: int, rank: int, stream: int = 0) -> int:
    """Distinct per epoch and rank, and recomputable, so a resumed run draws what it would have.

    ``stream`` > 0 gives an independent seed for another generator of the same epoch and rank.
    """
    entropy = [seed, epoch, rank] + ([stream] if stream else [])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])




def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights only: decaying norm scales and biases just fights BatchNorm."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    plain = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def train_one_epoch(model: nn.Module, loader: DataLoader, opt: torch.optim.Optimizer, scheduler,
                    scaler: torch.amp.GradScaler, *, device: str, amp_dtype: torch.dtype | None,
                    temperature: float, desc: str, show: bool, views: DeviceViews | None = None,
                    generator: torch.Generator | None = None) -> tuple[float, int]:
    """One pass; returns this process's (sum of per-image losses, images).

    With ``views`` the loader yields uint8 image batches and ``views(batch, generator)`` makes the
    two views on ``device``; without, it yields the two views made by its workers.
    """
    model.train()
    total = torch.zeros((), device=device)
    n = 0
    bar = tqdm(loader, desc=desc, leave=False, mininterval=2.0, file=sys.stderr, disable=not show)
    for step, batch in enumerate(bar):
        if views is not None:
            v1, v2 = views(batch.to(device, non_blocking=True), generator)
            x = torch.cat([v1, v2])
        else:
            v1, v2 = batch
            x = torch.cat([v1, v2]).to(device, non_blocking=True)
        x = x.contiguous(memory_format=torch.channels_last)  # on the CPU too: MobileNetV2 step 19 s → 11 s
        with torch.autocast(device_type="cuda", dtype=amp_dtype or torch.float16, enabled=amp_dtype is not None):
            z1, z2 = model(x).chunk(2)  # one pass over both views: BN statistics span the whole batch
        loss = nt_xent_loss(z1, z2, temperature)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        scheduler.step()
        total += loss.detach() * len(v1)
        n += len(v1)
        if show and step % 10 == 0:  # .item() syncs the GPU: not every step
            bar.set_postfix(loss=f"{total.item() / n:.3f}")
    return float(total.item()), n


def _all_sum(values: Sequence[float], d: Dist) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    if d.world > 1:
        dist.all_reduce(t)
    return t.tolist()


def _plot_loss(history: Sequence[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([h["epoch"] for h in history], [float(h["loss"]) for h in history], "o-", color="tab:red")
    ax.set_xlabel("epoch")
    ax.set_ylabel("NT-Xent loss")
    ax.set_title("SimCLR pretraining")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_history(run: Path, history: list[dict]) -> None:
    write_csv(run / "history.csv", history, HISTORY_FIELDS)
    _plot_loss(history, run / "loss.png")




def encoder_blob(encoder: Encoder, *, arch: str, image_size: int, recipe: dict) -> dict:
    """encoder.pt's content: the backbone under build_model(arch)'s key names, head left out."""
    state = {k: v.detach().cpu().clone() for k, v in encoder.backbone.state_dict().items()}
    return {"format": ENCODER_FORMAT, "arch": arch, "image_size": image_size,
            "feature_dim": encoder.feature_dim, "state_dict": state, "recipe": recipe}


def _command() -> str:
    argv = sys.argv[2:] if sys.argv[1:2] == ["pretrain"] else sys.argv[1:]
    return "mpox-aism pretrain " + shlex.join(argv)


def main(args: argparse.Namespace) -> dict:
    d = setup_distributed(args.device)
    try:
        return _run(args, d)
    finally:
        if d.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _run(args: argparse.Namespace, d: Dist) -> dict:
    run = Path(args.out)
    if d.main:
        run.mkdir(parents=True, exist_ok=True)
    say = print if d.main else (lambda *_a, **_k: None)
    seed_everything(args.seed + d.rank)
    device = d.device
    amp = args.amp if args.amp is not None else device.startswith("cuda")
    amp_dtype = None
    if amp and device.startswith("cuda"):
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    torch.backends.cudnn.benchmark = device.startswith("cuda")  # fixed input size: let cuDNN pick

    images = collect_images(args.data, val_fraction=args.val_fraction, seed=args.split_seed,
                            exclude_val_of=args.exclude_val_of, leave_source_out=args.leave_source_out,
                            limit=args.limit,
                            threads=max(1, args.workers), verbose=d.main)
    global_batch = args.batch_size * d.world
    say(f"pretrain on {len(images.paths)} images ({images.excluded_val} held out, "
        f"{len(images.unreadable)} unreadable skipped); {d.world} process(es) × batch {args.batch_size}")

    sampler, loader = _loader(images.paths, args, d)
    steps = len(loader)
    views = DeviceViews(args.image_size).to(device) if args.views == "device" else None
    generator = torch.Generator(device=device) if views is not None else None

    encoder = Encoder.build(args.arch, image_size=args.image_size, imagenet=args.init == "imagenet")
    model: nn.Module = SimCLR(encoder, ProjectionHead(encoder.feature_dim, out_dim=args.proj_dim)).to(device)
    model = model.to(memory_format=torch.channels_last)  # see train_one_epoch
    lr = args.lr or 1e-3 * math.sqrt(global_batch / 256)
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=lr)
    warmup = min(args.warmup_epochs, args.epochs / 10)
    scheduler = make_scheduler(opt, int(warmup * steps), args.epochs * steps)
    scaler = torch.amp.GradScaler(enabled=amp_dtype == torch.float16)

    start, history = 0, []
    ckpt_path = run / CHECKPOINT
    if args.resume:
        start, history = _resume(ckpt_path, args.arch, views=args.views, model=model, optimizer=opt,
                                 scheduler=scheduler, scaler=scaler)
        say(f"resumed from {ckpt_path} at epoch {start + 1}")

    if d.world > 1:
        if device.startswith("cuda"):  # SimCLR's global BN: per-GPU statistics would leak a shortcut
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ddp = DistributedDataParallel(model, device_ids=[torch.device(device)] if device.startswith("cuda") else None)
    else:
        ddp = model
    say(f"{args.arch}, image size {args.image_size}, global batch {global_batch}, {steps} steps/epoch, "
        f"lr {lr:.3g}, τ {args.temperature}, amp {amp_dtype}, device {device}, views on {args.views}")

    for epoch in range(start, args.epochs):
        torch.manual_seed(epoch_seed(args.seed, epoch, d.rank))
        if generator is not None:  # its own stream, recomputable per epoch and rank, so resume repeats it
            generator.manual_seed(epoch_seed(args.seed, epoch, d.rank, VIEWS_STREAM))
        sampler.set_epoch(epoch)
        t0 = time.time()
        loss_sum, n = train_one_epoch(ddp, loader, opt, scheduler, scaler, device=device, amp_dtype=amp_dtype,
                                      temperature=args.temperature, desc=f"epoch {epoch + 1}/{args.epochs}",
                                      show=d.main, views=views, generator=generator)
        loss_sum, n = _all_sum([loss_sum, n], d)
        seconds = time.time() - t0
        loss = loss_sum / n
        if not math.isfinite(loss):
            raise ValueError(f"pretrain: loss became {loss} in epoch {epoch + 1}; try a lower --lr or --no-amp")
        row = {"epoch": epoch + 1, "loss": round(loss, 5), "lr": f"{scheduler.get_last_lr()[0]:.3g}",
               "seconds": round(seconds, 1), "images_per_s": round(n / seconds, 1)}
        history.append(row)
        say("  ".join(f"{k}={v}" for k, v in row.items()) + f"  ({int(n)} images, 2 views each)", flush=True)
        if d.main:
            _write_history(run, history)
            save_atomic(ckpt_path, {"epoch": epoch, "model": _unwrap(ddp).state_dict(), "optimizer": opt.state_dict(),
                              "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                              "history": history, "args": _plain(vars(args))})

    recipe = {"method": "SimCLR (NT-Xent)", "command": _command(), "args": _plain(vars(args)),
              "epochs_done": len(history), "final_loss": history[-1]["loss"] if history else None,
              "n_images": len(images.paths), "excluded_validation_images": images.excluded_val,
              "unreadable_skipped": len(images.unreadable), "labeled_folders": images.labeled_roots,
              "world_size": d.world, "global_batch": global_batch, "lr": lr,
              "views": "random resized crop (0.2-1), h-flip, colour jitter p0.8 s0.5, grayscale p0.2, blur p0.5"
                       + (f"; on {device}, batched (hue as YIQ rotation, fixed jitter order) from "
                          f"{source_size(args.image_size)} px squares" if views is not None
                          else "; per image in DataLoader workers (torchvision v2)")}
    if d.main:
        encoder = _unwrap(ddp).encoder
        save_atomic(run / ENCODER, encoder_blob(encoder, arch=args.arch, image_size=args.image_size, recipe=recipe))
        say(f"encoder ({encoder.feature_dim} features) → {run / ENCODER}; fine-tune with "
            f"`mpox-aism train --init {run / ENCODER} --arch {args.arch}`")
    if d.world > 1:
        dist.barrier()
    return {"history": history, "encoder": str(run / ENCODER), **recipe}


def _loader(paths: Sequence[Path], args: argparse.Namespace, d: Dist) -> tuple[DistributedSampler, DataLoader]:
    """Each process its own shard, full batches only (a 1-image batch would break BatchNorm).

    Workers are not persistent: re-created each epoch, they take their seeds from the epoch's seed,
    so a resumed run augments as an uninterrupted one would have. With ``--views device`` they only
    decode and resize; the views are made on the device.
    """
    if args.views == "device":
        dataset: Dataset = SourceImages(paths, source_size(args.image_size))
    else:
        dataset = UnlabeledDataset(paths, SimCLRViews(args.image_size))
    sampler = DistributedSampler(dataset, num_replicas=d.world, rank=d.rank, shuffle=True, seed=args.seed,
                                 drop_last=True)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                        drop_last=True, pin_memory=d.device.startswith("cuda"))
    if len(loader) == 0:
        raise DatasetError(f"{len(paths)} images give no full batch of {args.batch_size} per process "
                           f"on {d.world} process(es); lower --batch-size")
    return sampler, loader


def _resume(path: Path, arch: str, views: str = "", **state) -> tuple[int, list[dict]]:
    """Load model/optimizer/scheduler/scaler state in place; (first epoch to run, history so far)."""
    if not path.is_file():
        raise FileNotFoundError(f"pretrain --resume: no {path}")
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if ck["args"]["arch"] != arch:
        raise ValueError(f"pretrain --resume: {path} is a {ck['args']['arch']} run, not {arch}")
    before = ck["args"].get("views", "loader")  # runs from before --views made them in the loader
    if views and before != views:
        log.warning("pretrain --resume: %s made its views with --views %s, this run uses --views %s; "
                    "the augmentation changes from here on", path, before, views)
    for name, obj in state.items():
        obj.load_state_dict(ck[name])
    return ck["epoch"] + 1, ck["history"]


def _unwrap(model: nn.Module) -> SimCLR:
    return model.module if isinstance(model, DistributedDataParallel) else model


def _plain(args: dict) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in args.items() if k != "func"}


if __name__ == "__main__":  # `torchrun -m mpox_aism.training.pretrain …` works without the CLI's other commands
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(get_args_parser().parse_args())
