"""Shared fixtures. Real data is read in place from ../shared/data; tests that need it skip when absent."""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MPOX_AISM_SHARED_DATA", REPO.parent / "shared" / "data"))
SKIN8 = SHARED_DATA / "skin8"


def need_skin8() -> Path:
    if not (SKIN8 / "manifest.csv").is_file():
        pytest.skip(f"real skin photos not found at {SKIN8} (../shared/data is absent on this machine)")
    return SKIN8


@pytest.fixture(scope="session")
def skin8() -> Path:
    return need_skin8()


def make_subset(root: Path, per_class: int, groups_per_class: int = 2) -> Path:
    """A small real subset of skin8 as symlinks plus a manifest, whole groups only.

    Symlinks in a temporary folder read the photos in place; nothing is copied into the project.
    """
    src = need_skin8()
    with (src / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    by_label: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_label[r["label"]][r["group"]].append(r)
    kept = []
    for _label, groups in sorted(by_label.items()):
        # smallest groups first, so a few images still cover several groups
        ordered = sorted(groups.items(), key=lambda kv: (len(kv[1]), kv[0]))[:groups_per_class]
        take = per_class
        for i, (_g, items) in enumerate(ordered):
            share = take if i == len(ordered) - 1 else max(1, per_class // groups_per_class)
            kept += items[:share]
            take -= len(items[:share])
    for r in kept:
        dst = root / r["path"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(src / r["path"])
    with (root / "manifest.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(kept)
    return root


@pytest.fixture(scope="session")
def tiny_skin8(tmp_path_factory) -> Path:
    """About 6 real photos per class in 2 groups each (so a group split has both sides)."""
    return make_subset(tmp_path_factory.mktemp("tiny_skin8"), per_class=6)


def link_photos(tmp_path: Path, label: str, n: int) -> Path:
    """A folder of the first n real skin8 photos of a class, as symlinks (read in place)."""
    src = SKIN8 / label
    if not src.is_dir():
        pytest.skip(f"real skin photos not found at {src}")
    d = tmp_path / label
    d.mkdir()
    for f in sorted(src.glob("*.jpg"))[:n]:
        (d / f.name).symlink_to(f)
    return d


def default_model_or_skip() -> Path:
    from mpox_aism.contracts.model import default_model_dir

    d = default_model_dir()
    if not (d / "model.pt").is_file():
        pytest.skip(f"no trained default model at {d}")
    return d


@pytest.fixture(scope="session")
def default_model() -> Path:
    return default_model_or_skip()


@pytest.fixture(scope="session")
def real_crops() -> list:
    """A dozen real skin photos (RGB uint8), two per class where possible."""
    from mpox_aism.contracts.images import load_rgb
    from mpox_aism.training.data import scan_dataset

    samples = scan_dataset(need_skin8(), verify=False)
    picked, seen = [], defaultdict(int)
    for s in samples:
        if seen[s.label] < 2:
            picked.append(load_rgb(s.path))
            seen[s.label] += 1
    return picked


def skin_coloured_tiles(side: int = 300):
    """An obviously non-skin image that passes every photo and crop check (skin-coloured, sharp, lit): the
    familiarity score, not the gates, must give it away."""
    import numpy as np

    checker = (np.indices((side, side)).sum(0) // 30 % 2).astype(bool)
    tiles = np.zeros((side, side, 3), np.uint8)
    tiles[checker], tiles[~checker] = (220, 180, 150), (150, 100, 70)
    return tiles
