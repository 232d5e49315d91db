"""Paired comparison of ``mpox-aism cv`` runs: B − A on the same photos, with 95 % intervals.

The runs' own intervals (each report's ``ci95``) overlap for nearly every recipe change measured here,
which says little: both models err on the same hard photos. Resampling groups once for both
(``mpox_aism.training.metrics.paired_group_bootstrap``) gives the interval of the *difference*. Rows: the
k-fold report, each leave-one-source-out report both runs have, and their mean.

    python -m research.compare_cv --data ../shared/data/skin8 runs/cv/fused runs/cv/taps_mid runs/cv/fm
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from mpox_aism.contracts.labels import LABELS
from mpox_aism.training.data import scan_dataset
from research.paired import PairedDifference, PairedSet, paired_group_bootstrap


def _predictions(report: Path) -> dict[str, tuple[int, int]]:
    with (report / "predictions.csv").open() as f:
        return {r["path"]: (LABELS.index(r["label"]), LABELS.index(r["predicted"])) for r in csv.DictReader(f)}


def paired_set(a: Path, b: Path, group_of: dict[str, str]) -> PairedSet:
    pa, pb = _predictions(a), _predictions(b)
    if set(pa) != set(pb):
        raise SystemExit(f"{a} and {b} did not predict the same photos")
    paths = sorted(pa)
    groups = [group_of.get(str(Path(p).resolve())) for p in paths]
    if None in groups:
        raise SystemExit(f"{groups.count(None)} photos of {a} are not in --data: is it the runs' folder?")
    return PairedSet(pred_a=np.array([pa[p][1] for p in paths]), pred_b=np.array([pb[p][1] for p in paths]),
                     y_true=np.array([pa[p][0] for p in paths]), groups=groups)


def _cell(d: PairedDifference) -> str:
    return f"{d.a:.3f} → {d.b:.3f} ({d.diff:+.3f}, {d.low:+.3f} … {d.high:+.3f})"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="the image folder the runs used (for the groups)")
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("base", help="run A (a cv --out folder)")
    p.add_argument("others", nargs="+", help="runs B")
    args = p.parse_args(argv)
    group_of = {str(Path(s.path).resolve()): s.group for s in scan_dataset(args.data, verify=False)}
    base = Path(args.base)
    print("| run B vs A | evaluation | macro-F1 A → B (B − A, 95 % CI) | mpox recall A → B (B − A, 95 % CI) |")
    print("|---|---|---|---|")
    for other in map(Path, args.others):
        reports = sorted(d.name for d in base.iterdir() if (d / "predictions.csv").is_file()
                         and (other / d.name / "predictions.csv").is_file() and d.name != "unshifted")
        loso = [r for r in reports if r.startswith("without_")]
        rows = [(r, [r]) for r in reports] + ([("mean LOSO", loso)] if len(loso) > 1 else [])
        for name, members in rows:
            sets = [paired_set(base / r, other / r, group_of) for r in members]
            d = {x.metric: x for x in paired_group_bootstrap(sets, n=args.resamples)}
            print(f"| {other.name} vs {base.name} | {name} | {_cell(d['macro_f1'])} | {_cell(d['mpox_recall'])} |",
                  flush=True)


if __name__ == "__main__":
    main()
