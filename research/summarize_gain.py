"""Mean ± sd of validation macro-F1 and mpox recall per initialisation, from `research/ssl_gain.sh` runs."""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main(root: str) -> None:
    groups: dict[str, list[dict]] = defaultdict(list)
    for m in sorted(Path(root).glob("*_s*/metrics.json")):
        groups[m.parent.name.rsplit("_s", 1)[0]].append(json.loads(m.read_text()))
    print("| init | runs | macro-F1 mean ± sd | mpox recall mean ± sd | accuracy mean |")
    print("|---|---|---|---|---|")
    for init in ("scratch", "simclr", "imagenet"):
        runs = groups.get(init, [])
        if not runs:
            continue
        f1 = [r["macro_f1"] for r in runs]
        rec = [r["per_class"]["mpox"]["recall"] for r in runs]
        acc = [r["accuracy"] for r in runs]
        print(f"| {init} | {len(runs)} | {statistics.mean(f1):.3f} ± {sd(f1):.3f} | "
              f"{statistics.mean(rec):.3f} ± {sd(rec):.3f} | {statistics.mean(acc):.3f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/gain")
