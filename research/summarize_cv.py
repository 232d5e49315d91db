"""Markdown tables from several ``mpox-aism cv`` runs: the recipe comparison in docs/RESULTS.md.

    python -m research.summarize_cv runs/cv/mnv2_probe runs/cv/lite0_probe ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mpox_aism.contracts.labels import LABELS


def _ci(h: dict) -> str:
    c = h["ci95"]["macro_f1"]
    return f"{h['macro_f1']:.3f} ({c['low']:.2f}–{c['high']:.2f})"


def main(runs: list[str]) -> None:
    docs = [(Path(r).name, json.loads((Path(r) / "cv.json").read_text())) for r in runs]
    print("| recipe | k-fold macro-F1 (95 % CI) | accuracy | mpox recall | mpox precision | ECE | "
          + " | ".join(f"F1 {c}" for c in LABELS) + " |")
    print("|---" * (6 + len(LABELS)) + "|")
    for name, d in docs:
        k = d["reports"]["kfold"]
        f1 = " | ".join(f"{k['per_class_f1'].get(c, float('nan')):.2f}" for c in LABELS)
        print(f"| {name} | {_ci(k)} | {k['accuracy']:.3f} | {k['mpox_recall']:.3f} | {k['mpox_precision']:.3f} "
              f"| {k['ece']:.3f} | {f1} |")
    sources = sorted({s for _, d in docs for s in d["reports"]["kfold"]["per_source_accuracy"]})
    print()
    print("| recipe (out-of-fold accuracy per source) | " + " | ".join(sources) + " |")
    print("|---" * (1 + len(sources)) + "|")
    for name, d in docs:
        acc = d["reports"]["kfold"]["per_source_accuracy"]
        print(f"| {name} | " + " | ".join(f"{acc.get(s, float('nan')):.3f}" for s in sources) + " |")
    others = sorted({k for _, d in docs for k in d["reports"] if k != "kfold"})
    print()
    print("| recipe | " + " | ".join(f"{o}: macro-F1 (CI) / mpox recall" for o in others) + " |")
    print("|---" * (1 + len(others)) + "|")
    for name, d in docs:
        cells = []
        for o in others:
            h = d["reports"].get(o)
            cells.append(f"{_ci(h)} / {h['mpox_recall']:.3f}" if h else "—")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
