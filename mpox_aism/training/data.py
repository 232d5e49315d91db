"""Labeled image folders: ``<root>/<class>/*.jpg`` with an optional ``manifest.csv``.

Every problem with the data (an unknown class folder, an unreadable image, an empty class, a
manifest row pointing nowhere) is found while scanning and reported as a :class:`DatasetError`
naming the file, instead of surfacing later as a crash deep inside a DataLoader worker.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mpox_aism.contracts.images import DatasetError, is_image_name, load_rgb
from mpox_aism.contracts.labels import LABEL_TO_INDEX, LABELS

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"


@dataclass(frozen=True)
class Sample:
    """One labeled image. ``group`` joins images that must stay on one side of a split.

    ``source`` (the collection it came from: source balancing and leave-one-source-out folds) and
    ``parent`` (the dev photo a derived view was cut from: ``cv --derived``) are manifest columns the
    code relies on, so they are fields; any other column stays in ``extra`` for reports by column.
    """

    path: Path
    label: int
    group: str
    source: str = field(default="", compare=False)
    parent: str = field(default="", compare=False)
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def label_name(self) -> str:
        return LABELS[self.label]

    def columns(self) -> dict[str, str]:
        """The manifest's columns beyond path, label and group (``source`` and ``parent`` where set)."""
        known = {k: v for k, v in (("source", self.source), ("parent", self.parent)) if v}
        return known | self.extra


def _is_image(path: Path) -> bool:
    return is_image_name(path.name) and path.is_file()


def _scan_manifest(root: Path) -> list[Sample]:
    manifest = root / MANIFEST
    with manifest.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        for needed in ("path", "label"):
            if needed not in columns:
                raise DatasetError(f"{manifest}: missing column {needed!r} (has {columns})")
        extra_cols = [c for c in columns if c not in ("path", "label", "group", "source", "parent")]
        samples = []
        for line, row in enumerate(reader, start=2):
            label = row["label"].strip()
            if label not in LABEL_TO_INDEX:
                raise DatasetError(
                    f"{manifest}:{line}: unknown class {label!r}; expected one of {', '.join(LABELS)}"
                )
            path = root / row["path"].strip()
            if not path.is_file():
                raise DatasetError(f"{manifest}:{line}: file {path} does not exist")
            group = (row.get("group") or "").strip() or row["path"].strip()
            extra = {c: (row.get(c) or "").strip() for c in extra_cols}
            samples.append(Sample(path=path, label=LABEL_TO_INDEX[label], group=group,
                                  source=(row.get("source") or "").strip(), parent=(row.get("parent") or "").strip(),
                                  extra=extra))
    listed = {s.path.resolve() for s in samples}
    unlisted = [p for d in root.iterdir() if d.is_dir() for p in d.iterdir() if _is_image(p)]
    unlisted = [p for p in unlisted if p.resolve() not in listed]
    if unlisted:
        log.warning("%d image(s) under %s are not in %s and are ignored, e.g. %s",
                    len(unlisted), root, MANIFEST, unlisted[0])
    return samples


def _scan_folders(root: Path) -> list[Sample]:
    samples = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if d.name not in LABEL_TO_INDEX:
            raise DatasetError(f"unknown class folder {d}; expected one of {', '.join(LABELS)}")
        images = sorted(p for p in d.iterdir() if _is_image(p))
        if not images:
            raise DatasetError(f"class folder {d} holds no images")
        for p in images:
            rel = str(p.relative_to(root))
            samples.append(Sample(path=p, label=LABEL_TO_INDEX[d.name], group=rel))
    if samples:
        log.warning("%s has no %s: every image is its own group, so near-duplicates of one photo "
                    "may land on both sides of a split", root, MANIFEST)
    return samples


def scan_dataset(
    root: str | Path, *, require_all_classes: bool = False, verify: bool = True
) -> list[Sample]:
    """List the labeled images under ``root``.

    ``require_all_classes`` is for training (every class needs examples); evaluation on an outside
    set may cover only some classes. ``verify`` decodes every image once so a corrupt file is named
    now, not mid-epoch.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data folder {root} does not exist")
    samples = _scan_manifest(root) if (root / MANIFEST).is_file() else _scan_folders(root)
    if not samples:
        raise DatasetError(f"no labeled images found under {root}")
    if require_all_classes:
        present = {s.label for s in samples}
        missing = [LABELS[i] for i in range(len(LABELS)) if i not in present]
        if missing:
            raise DatasetError(f"{root}: no images for class(es) {', '.join(missing)}")
    if verify:
        bad = []
        for s in samples:
            try:
                load_rgb(s.path)
            except DatasetError as e:
                bad.append(str(e))
        if bad:
            more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
            raise DatasetError("; ".join(bad[:5]) + more)
    return samples


def class_counts(samples: Sequence[Sample]) -> list[int]:
    counts = [0] * len(LABELS)
    for s in samples:
        counts[s.label] += 1
    return counts


class ImageDataset(Dataset):
    """Samples → (tensor, label) through ``transform`` (augment + preprocess, or preprocess only)."""

    def __init__(self, samples: Sequence[Sample], transform: Callable[[np.ndarray], torch.Tensor]):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        s = self.samples[index]
        return self.transform(load_rgb(s.path)), s.label
