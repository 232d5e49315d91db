"""A built-in sample so ``make run`` works on a fresh machine without ``../shared/data``.

It is two real photos of normal facial skin that ship inside dependencies (scikit-image's
``astronaut``, matplotlib's ``grace_hopper.jpg``), written as a one-class image folder. It proves
the path end to end; with two images it measures nothing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np


def _photos() -> dict[str, np.ndarray]:
    from matplotlib import cbook
    from skimage import data

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)
    return {
        "astronaut.jpg": cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR),
        "grace_hopper.jpg": hopper,
    }


def builtin_sample_dir(root: str | Path | None = None) -> Path:
    root = Path(root) if root else Path(tempfile.mkdtemp(prefix="mpox-aism-sample-"))
    d = root / "normal"
    d.mkdir(parents=True, exist_ok=True)
    rows = ["path,label,source,group"]
    for name, bgr in _photos().items():
        cv2.imwrite(str(d / name), bgr)
        rows.append(f"normal/{name},normal,builtin,{name}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root
