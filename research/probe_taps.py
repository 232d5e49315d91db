"""The fused probe with earlier stages' outputs added to its feature map: ``mpox-aism cv`` on that network.

Why: lesion texture (vesicles, wheals, bullae) lives in mid-level features, and the last 1×1 head
conv of an ImageNet network is its most ImageNet-specific layer. The network stays "last feature
map → GAP → one linear head": each tapped stage output is average-pooled to the last map's 7×7
grid and concatenated along channels, and the GAP of a pooled map is the GAP of the map, so the head
sees each stage's mean activation, and class maps and Grad-CAM (read at ``fuse``) stay exact.

Measured in docs/RESULTS.md (session 7); not kept, so not a ``--arch`` of its own. A variant is
``deep`` (MobileNetV2 blocks 16, 17; Lite2 blocks 19, 20) or ``mid_deep`` (also MobileNetV2 13 and
Lite2 14, both 14×14). The rest of the command line is ``mpox-aism cv``'s, for
``--arch mobilenet_v2+efficientnet_lite2``. The session-7 figures were made with a ``--cache`` of each
variant's own; the cache key now holds the network's class (one per variant) and feature width, so a
shared one is safe. A ``--ship`` directory here is for the shipped head's figures only: it records the
plain fused arch but carries a wider head, so ``load_model`` (kiosk, evaluate) refuses it, loudly.

    python -m research.probe_taps mid_deep --data ../shared/data/skin8 \\
        --arch mobilenet_v2+efficientnet_lite2 --image-size 224 --balance class_source \\
        --negatives runs/healthy_crops/people --healthy-test runs/healthy_crops/video \\
        --loso msid monkeypox2022 msld_v1 --out runs/cv/taps_mid --cache runs/cv/cache_mid --ship runs/taps_mid
    python -m research.probe_taps bench    # forward cost per crop, plain fused vs each variant
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

from mpox_aism.model.fused import FusedBackbones
from mpox_aism.training import cv

VARIANTS: dict[str, tuple[frozenset[int], frozenset[int]]] = {  # (MobileNetV2 blocks, Lite2 blocks)
    "deep": (frozenset({16, 17}), frozenset({19, 20})),
    "mid_deep": (frozenset({13, 16, 17}), frozenset({14, 19, 20})),
}


def _stage_maps(branch: nn.Module, blocks: nn.Module, taps: frozenset[int], x: torch.Tensor) -> list[torch.Tensor]:
    """The branch's own ``features(x)``, with the outputs of ``blocks[i]`` for i in ``taps`` before it."""
    maps: list[torch.Tensor] = []
    hooks = [blocks[i].register_forward_hook(lambda _m, _in, out: maps.append(out)) for i in sorted(taps)]
    try:
        last = branch.features(x)
    finally:
        for h in hooks:
            h.remove()
    return [*maps, last]


class TappedFused(FusedBackbones):
    """MobileNetV2 + Lite2 with tapped stage outputs, pooled to the last grid, in the fused map."""

    taps: tuple[frozenset[int], frozenset[int]] = VARIANTS["deep"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        size = kwargs["image_size"]
        with torch.no_grad():
            width = self.eval().features(torch.zeros(1, 3, size, size)).shape[1]
        self.fc = nn.Linear(width, self.fc.out_features)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        mnv2, lite = self.branches  # MobileNetV2's blocks are its ``features``; Lite's its ``_blocks``
        maps = _stage_maps(mnv2, mnv2.features, self.taps[0], x) + _stage_maps(lite, lite._blocks, self.taps[1], x)
        grid = maps[-1].shape[-1]
        maps = [m if m.shape[-1] == grid else F.avg_pool2d(m, m.shape[-1] // grid) for m in maps]
        return self.fuse(torch.cat(maps, dim=1))


def variant_class(name: str) -> type[FusedBackbones]:
    """The tapped network of one variant, a class of its own (its name is in the feature cache key)."""
    return type(f"TappedFused_{name}", (TappedFused,), {"taps": VARIANTS[name]})


def bench(argv: list[str]) -> None:
    """``bench [--threads N] [--runs R]``: the classifier's forward cost per crop, plain fused vs each variant.

    Random weights (the cost does not depend on them), torch CPU, batch 1, 224 px; median of R runs.
    """
    import argparse
    import time

    from mpox_aism.model.zoo import build_model

    p = argparse.ArgumentParser(prog="probe_taps.py bench")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=50)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    def branches() -> dict[str, nn.Module]:
        return {a: build_model(a, image_size=224) for a in ("mobilenet_v2", "efficientnet_lite2")}

    nets = {"fused": FusedBackbones(branches(), num_classes=8, image_size=224)}
    for name in VARIANTS:
        nets[name] = variant_class(name)(branches(), num_classes=8, image_size=224)
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        for name, net in nets.items():
            net.eval()
            for _ in range(5):
                net(x)
            times = []
            for _ in range(args.runs):
                t = time.perf_counter()
                net(x)
                times.append(time.perf_counter() - t)
            print(f"{name}: {1000 * sorted(times)[len(times) // 2]:.1f} ms per crop (median of {args.runs}, "
                  f"{args.threads} threads, {net.fc.in_features} features)", flush=True)


def main(argv: list[str]) -> None:
    if argv[:1] == ["bench"]:
        return bench(argv[1:])
    variant, rest = argv[0], argv[1:]
    tapped = variant_class(variant)
    args = cv.get_args_parser().parse_args(rest)
    if args.arch != "mobilenet_v2+efficientnet_lite2":
        raise SystemExit("probe_taps: taps are defined for --arch mobilenet_v2+efficientnet_lite2 only")
    import mpox_aism.model.zoo as models

    models.FusedBackbones = tapped  # build_model constructs (and isinstance-checks) the fused network by this name
    cv.main(args)


if __name__ == "__main__":
    main(sys.argv[1:])
