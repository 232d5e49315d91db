"""Train/validation split by group, stratified by class.

Photos of one patient, one source topic or near-identical copies share a ``group``; a split that
puts one group on both sides lets the model recognise the photo instead of the disease and
inflates every metric. So groups, never images, are assigned, and the result is checked.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from mpox_aism.training.data import Sample


class LeakageError(ValueError):
    """A group sits on both sides of a split."""


def check_disjoint(train: Sequence[Sample], val: Sequence[Sample]) -> None:
    both = {s.group for s in train} & {s.group for s in val}
    if both:
        shown = ", ".join(sorted(both)[:5])
        raise LeakageError(f"{len(both)} group(s) on both sides of the split, e.g. {shown}")


def group_split(
    samples: Sequence[Sample], *, val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Assign whole groups to validation until each class holds about ``val_fraction`` of its images.

    A group is stratified by its most common label. Per class, groups are visited in a seeded
    random order and one is added when it brings that class's validation count closer to the
    target; a class with two or more groups always gets at least one group on each side.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    members: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        members[s.group].append(s)
    by_class: dict[int, list[str]] = defaultdict(list)
    for group, items in sorted(members.items()):
        label = Counter(s.label for s in items).most_common(1)[0][0]
        by_class[label].append(group)

    rng = random.Random(seed)
    val_groups: set[str] = set()
    for label in sorted(by_class):
        groups = by_class[label]
        if len(groups) < 2:
            continue
        rng.shuffle(groups)
        target = val_fraction * sum(len(members[g]) for g in groups)
        chosen: list[str] = []
        count = 0
        for g in groups:
            size = len(members[g])
            if abs(count + size - target) < abs(count - target) and len(chosen) < len(groups) - 1:
                chosen.append(g)
                count += size
        if not chosen:
            chosen.append(min(groups, key=lambda g: abs(len(members[g]) - target)))
        val_groups.update(chosen)
    return split_by_groups(samples, val_groups)


def split_by_groups(
    samples: Sequence[Sample], val_groups: Iterable[str]
) -> tuple[list[Sample], list[Sample]]:
    """Re-create a stored split: samples whose group is in ``val_groups`` go to validation."""
    val_set = set(val_groups)
    train = [s for s in samples if s.group not in val_set]
    val = [s for s in samples if s.group in val_set]
    check_disjoint(train, val)
    return train, val
