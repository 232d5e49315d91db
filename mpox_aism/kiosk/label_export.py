"""``mpox-aism reviews export``: the crops staff labeled, as a training folder for a site head.

Writes ``OUT/<class>/<event_id>.jpg`` (the kept JPEG, byte for byte) and ``OUT/manifest.csv`` with
``path,label,source,group`` — the layout ``mpox_aism.training.data.scan_dataset`` reads. ``source`` is
the station; ``group`` is ``station:camera:run_id:track_id``, one traveller, so all their crops stay on
one side of any split (a track can give several events, often of near-identical crops).

What is left out, and why (each counted and printed):

- crops past ``labels.crop_retention_days`` (the config's): gone, even if the daemon has not deleted them yet;
- crops whose latest label is ``unusable``: no class to learn;
- face crops — a face region, or a crop in which the camera's face check saw a face — unless
  ``--include-faces``: the export is where kept crops first leave the box.

``OUT`` must be new or empty: two exports mixed in one folder would mix stations and retention windows
without a trace. The folder is written beside ``OUT`` and renamed into place, so a failure leaves no
half-export. Per-class counts are printed, naming classes with none: a site-head fitter must know what
it lacks. The export is recorded in the audit trail when the state directory has one.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mpox_aism.contracts.labels import LABELS
from mpox_aism.kiosk.labels import STORE, UNUSABLE, LabeledCrop, LabelStore

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("path", "label", "source", "group")


class ExportError(ValueError):
    """Nothing to export, or nowhere to put it; the CLI prints it and exits 2."""


@dataclass
class ExportReport:
    out: Path
    per_class: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LABELS, 0))
    faces_left_out: int = 0  # region kind face
    face_seen_left_out: int = 0  # hand / close-range crops in which the face check saw a face
    unusable_left_out: int = 0

    @property
    def total(self) -> int:
        return sum(self.per_class.values())

    @property
    def missing(self) -> list[str]:
        """Classes with no exported crop."""
        return [c for c, n in self.per_class.items() if n == 0]

    def lines(self) -> list[str]:
        out = [f"exported {self.total} labeled crop(s) to {self.out} ({MANIFEST}):"]
        out += [f"  {c:<11} {n}" for c, n in self.per_class.items()]
        if self.missing:
            out.append(f"no labeled crops of: {', '.join(self.missing)} (a site head learns nothing about these)")
        out += self.left_out()
        return out

    def left_out(self) -> list[str]:
        why = []
        if self.faces_left_out:
            why.append(f"{self.faces_left_out} face crop(s) (kept on the box; --include-faces exports them)")
        if self.face_seen_left_out:
            why.append(f"{self.face_seen_left_out} crop(s) in which the face check saw a face (--include-faces "
                       "exports them)")
        if self.unusable_left_out:
            why.append(f"{self.unusable_left_out} labeled 'not skin / unusable'")
        return [f"left out: {w}" for w in why]


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; give a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        raise ExportError(f"--out {out} is not empty: refusing to mix two exports; give a new or empty folder")


def select(crops: list[LabeledCrop], *, include_faces: bool, out: Path) -> tuple[list[LabeledCrop], ExportReport]:
    """The crops to write, and the counts of what was left out."""
    report = ExportReport(out)
    chosen = []
    for item in crops:
        if item.label.label == UNUSABLE:
            report.unusable_left_out += 1
        elif not include_faces and item.crop.kind == "face":
            report.faces_left_out += 1
        elif not include_faces and item.crop.shows_face:
            report.face_seen_left_out += 1
        else:
            chosen.append(item)
            report.per_class[item.label.label] += 1
    return chosen, report


def export_labels(store: LabelStore, out: str | Path, *, include_faces: bool = False) -> ExportReport:
    """Write the labeled, unexpired crops under ``out``; raises :class:`ExportError` when there is nothing to write."""
    out = Path(out)
    _check_out(out)
    chosen, report = select(store.labeled(), include_faces=include_faces, out=out)
    if not chosen:
        raise ExportError("nothing to export: no unexpired crop with a class label in "
                          f"{store.path}" + "".join(f"; {w}" for w in report.left_out()))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        written = 0
        with (staging / MANIFEST).open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(MANIFEST_COLUMNS)
            for item in chosen:
                jpeg = store.image(item.crop.event_id)
                if jpeg is None:  # expired between the listing and now: it goes, like any expired crop
                    report.per_class[item.label.label] -= 1
                    continue
                rel = f"{item.label.label}/{item.crop.event_id}.jpg"
                (staging / item.label.label).mkdir(exist_ok=True)
                (staging / rel).write_bytes(jpeg)
                w.writerow((rel, item.label.label, item.crop.station_id, item.crop.group))
                written += 1
        if not written:
            raise ExportError(f"nothing to export: every labeled crop in {store.path} expired meanwhile")
        _check_out(out)  # still new or empty
        if out.is_dir():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Export the crops staff labeled on the staff page as a training "
                                "folder (<class>/<event_id>.jpg + manifest.csv) for a site head.", add_help=add_help)
    p.add_argument("--config", required=True, help="the kiosk's YAML config (for labels.crop_retention_days)")
    p.add_argument("--out", required=True, help="a new or empty folder to write")
    p.add_argument("--state-dir", default=None, help=f"folder holding {STORE} (default: $STATE_DIRECTORY, else "
                   "runs/state, as the daemon)")
    p.add_argument("--include-faces", action="store_true",
                   help="also export face crops (they leave the box: only where the site's rules allow it)")
    return p


def main(args: argparse.Namespace) -> int:
    from mpox_aism.kiosk.config import load_config
    from mpox_aism.kiosk.host import state_dir

    config = load_config(args.config)  # a ConfigError is a ValueError: one line, exit 2
    folder = Path(args.state_dir) if args.state_dir else state_dir()
    path = folder / STORE
    if not path.is_file():
        raise ExportError(f"no label store at {path}: has the kiosk run here? (--state-dir names another folder)")
    report = export_labels(LabelStore(path, retention_days=config.labels.crop_retention_days), args.out,
                           include_faces=args.include_faces)
    print("\n".join(report.lines()))
    from mpox_aism.kiosk.users import STORE as STAFF_STORE

    audit = folder / STAFF_STORE
    if audit.is_file():
        from mpox_aism.kiosk.accounts import Accounts

        Accounts(audit).record("cli", "labels exported", detail=f"{report.total} crops to {Path(args.out).resolve()}"
                               + (" (faces included)" if args.include_faces else ""))
    return 0
