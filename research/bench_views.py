"""Two SimCLR views for 64 real skin8 photos at 224 px: SimCLRViews per image vs DeviceViews on the CPU.

Run from the repo root:  .venv/bin/python -m research.bench_views   (reads ../shared/data/skin8 in place)
Decoding is done once, outside the timings (both paths decode the same JPEGs in their workers).
"""
import glob
import os
import statistics
import time

import numpy as np
import torch

from mpox_aism.contracts.images import load_rgb
from mpox_aism.contracts.preprocess import resize_square
from mpox_aism.training.pretrain import SourceImages, source_size
from mpox_aism.training.ssl import DeviceViews, SimCLRViews

N, SIZE, REPS = 64, 224, 5
SKIN8 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "skin8")

def main() -> None:
    paths = sorted(glob.glob(os.path.join(SKIN8, "*", "*.jpg")))
    if not paths:
        raise SystemExit(f"no photos under {SKIN8} (../shared/data is needed)")
    paths = paths[:: len(paths) // N][:N]
    images = [load_rgb(p) for p in paths]
    shapes = {im.shape[:2] for im in images}
    side = source_size(SIZE)


    def timeit(fn, reps=REPS):
        fn()  # warm-up
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return ts


    def report(name, ts):
        med, best = statistics.median(ts), min(ts)
        print(f"{name:62s} median {med * 1e3:8.1f} ms/batch  {N / med:7.1f} img/s  "
              f"(best {N / best:7.1f} img/s, {1e3 * med / N:6.2f} ms/img)  reps {[round(t * 1e3) for t in ts]}")


    print(f"{N} images from {len(glob.glob(os.path.join(SKIN8, '*', '*.jpg')))} skin8 photos, "
          f"source shapes {sorted(shapes)[:6]}{'…' if len(shapes) > 6 else ''}; torch {torch.__version__}; "
          f"os.cpu_count {os.cpu_count()}; loadavg before {os.getloadavg()}")

    # (a) the loader path: SimCLRViews per image, one thread (as in a DataLoader worker, which torch sets to 1)
    torch.set_num_threads(1)
    sv = SimCLRViews(SIZE, seed=0)
    report("(a) SimCLRViews, per image, 1 thread", timeit(lambda: [sv(im) for im in images]))

    # (b) DeviceViews on the CPU, batch of uint8 squares (what SourceImages yields)
    ds = SourceImages(paths, side)
    def squares():
        out = []
        for im in images:  # SourceImages.__getitem__ minus the decode
            im = resize_square(im, side)
            out.append(torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))))
        return torch.stack(out)
    batch = squares()
    assert batch.shape == (N, 3, side, side) and torch.equal(batch[0], ds[0])
    report(f"    worker side of (b): resize to {side}² + stack, 1 thread", timeit(squares))
    dv = DeviceViews(SIZE)
    g = torch.Generator().manual_seed(0)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        report(f"(b) DeviceViews on CPU, batch of {N}, {threads} thread(s)", timeit(lambda: dv(batch, g)))
    torch.set_num_threads(1)
    report("    for reference: decode (load_rgb) of the 64 JPEGs, 1 thread",
           timeit(lambda: [load_rgb(p) for p in paths]))
    print(f"loadavg after {os.getloadavg()}")


if __name__ == "__main__":
    main()
