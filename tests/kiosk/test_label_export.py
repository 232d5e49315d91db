"""``mpox-aism reviews export``: the labeled crops as a folder ``scan_dataset`` reads, faces and unusable left
out (counted), and the refusals (nothing to export, a non-empty or file --out, no store)."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
import yaml

from mpox_aism.cli import main as cli
from mpox_aism.kiosk.accounts import Accounts
from mpox_aism.kiosk.label_export import ExportError, export_labels
from mpox_aism.kiosk.labels import UNUSABLE, LabelStore
from tests.kiosk.test_labels import DAY, crop_record, noise


def _config(tmp_path: Path, retention_days: float = 30) -> Path:
    p = tmp_path / "kiosk.yaml"
    p.write_text(yaml.safe_dump({"station_id": "gate-7", "cameras": [{"name": "entrance", "source": "0"}],
                                 "labels": {"crop_retention_days": retention_days}}))
    return p


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state folder whose label store holds every case the export sorts."""
    d = tmp_path / "state"
    store = LabelStore(d / "labels.sqlite3")
    now = time.time()
    cases = [  # event id, region kind, face seen, label (None: not labeled), age in days, track
        ("ev-mpox-1", "hand", False, "mpox", 1, 1), ("ev-mpox-2", "hand", None, "mpox", 2, 1),
        ("ev-measles", "close", None, "measles", 3, 2), ("ev-normal", "hand", False, "normal", 4, 3),
        ("ev-face", "face", None, "eczema", 1, 4), ("ev-chin", "hand", True, "urticaria", 1, 5),
        ("ev-unusable", "hand", False, UNUSABLE, 1, 6), ("ev-unlabeled", "hand", False, None, 1, 7),
        ("ev-expired", "hand", False, "bullous", 10, 8),
    ]
    for i, (event_id, kind, face_seen, label, age, track) in enumerate(cases):
        store.put(crop_record(event_id, now - age * DAY, kind=kind, face_seen=face_seen, track_id=track),
                  noise(120 + i, 90, seed=i))
        if label:
            store.label(event_id, "vasculitis" if event_id == "ev-normal" else label, "officer.a")
            if event_id == "ev-normal":
                store.label(event_id, "normal", "officer.b")  # changed: the latest counts
    Accounts(d / "staff.sqlite3")
    return d


def _export(tmp_path: Path, state: Path, out: Path, *extra: str, retention_days: float = 7) -> int:
    return cli(["reviews", "export", "--config", str(_config(tmp_path, retention_days)), "--out", str(out),
                "--state-dir", str(state), *extra])


def test_export_is_a_dataset_scan_dataset_reads(tmp_path: Path, state: Path, capsys) -> None:
    from mpox_aism.training.data import scan_dataset

    out = tmp_path / "export"
    assert _export(tmp_path, state, out) == 0
    printed = capsys.readouterr().out
    with (out / "manifest.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "label", "source", "group"]
    assert {r["path"]: r["label"] for r in rows} == {"mpox/ev-mpox-1.jpg": "mpox", "mpox/ev-mpox-2.jpg": "mpox",
                                                     "measles/ev-measles.jpg": "measles",
                                                     "normal/ev-normal.jpg": "normal"}
    assert {r["source"] for r in rows} == {"gate-7"}
    groups = {r["path"]: r["group"] for r in rows}
    assert groups["mpox/ev-mpox-1.jpg"] == groups["mpox/ev-mpox-2.jpg"] == "gate-7:entrance:run1:1"  # one traveller
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg")) == sorted(groups)

    samples = scan_dataset(out)  # decodes every image, checks every class name and path
    assert sorted((s.path.relative_to(out).as_posix(), s.label_name, s.group, s.source) for s in samples) == sorted(
        (r["path"], r["label"], r["group"], r["source"]) for r in rows)
    store = LabelStore(state / "labels.sqlite3")
    assert (out / "mpox" / "ev-mpox-1.jpg").read_bytes() == store.image("ev-mpox-1")  # the kept JPEG, unchanged

    assert "exported 4 labeled crop(s)" in printed
    assert "  mpox        2" in printed and "  measles     1" in printed
    assert "no labeled crops of: chickenpox, bullous, eczema, urticaria, vasculitis" in printed
    assert "1 face crop(s)" in printed and "1 crop(s) in which the face check saw a face" in printed
    assert "1 labeled 'not skin / unusable'" in printed
    assert not list(tmp_path.glob(".export.*"))  # no staging folder left behind
    audit = Accounts(state / "staff.sqlite3").audit()
    assert audit[-1].action == "labels exported" and "4 crops" in audit[-1].detail


def test_faces_only_with_include_faces(tmp_path: Path, state: Path, capsys) -> None:
    out = tmp_path / "with-faces"
    out.mkdir()  # an empty folder is fine
    assert _export(tmp_path, state, out, "--include-faces") == 0
    assert {p.name for p in out.rglob("*.jpg")} >= {"ev-face.jpg", "ev-chin.jpg"}
    assert (out / "eczema" / "ev-face.jpg").is_file() and (out / "urticaria" / "ev-chin.jpg").is_file()
    printed = capsys.readouterr().out
    assert "exported 6 labeled crop(s)" in printed and "face crop" not in printed and "face check" not in printed
    assert "faces included" in Accounts(state / "staff.sqlite3").audit()[-1].detail


def test_the_configs_retention_decides_what_is_expired(tmp_path: Path, state: Path) -> None:
    report = export_labels(LabelStore(state / "labels.sqlite3", retention_days=30), tmp_path / "long")
    assert report.per_class["bullous"] == 1  # 10 days old: inside 30 days
    report = export_labels(LabelStore(state / "labels.sqlite3", retention_days=1.5), tmp_path / "short")
    assert report.total == 1 and report.per_class["mpox"] == 1  # only the 1-day-old, non-face, class-labeled crop


def test_refusals_exit_2_and_write_nothing(tmp_path: Path, state: Path, capsys) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "earlier.txt").write_text("an earlier export")
    assert _export(tmp_path, state, full) == 2
    assert "not empty" in capsys.readouterr().err and [p.name for p in full.iterdir()] == ["earlier.txt"]

    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert _export(tmp_path, state, a_file) == 2 and "is a file" in capsys.readouterr().err

    empty_state = tmp_path / "empty-state"
    LabelStore(empty_state / "labels.sqlite3").put(crop_record("ev-x", time.time()), noise())  # kept, never labeled
    assert _export(tmp_path, empty_state, tmp_path / "none") == 2
    err = capsys.readouterr().err
    assert "nothing to export" in err and not (tmp_path / "none").exists()

    faces_only = tmp_path / "faces-state"
    store = LabelStore(faces_only / "labels.sqlite3")
    store.put(crop_record("ev-f", time.time(), kind="face"), noise())
    store.label("ev-f", "mpox", "officer.a")
    assert _export(tmp_path, faces_only, tmp_path / "none") == 2
    assert "nothing to export" in (err := capsys.readouterr().err) and "1 face crop(s)" in err

    assert _export(tmp_path, tmp_path / "no-such-state", tmp_path / "none") == 2
    assert "no label store" in capsys.readouterr().err
    with pytest.raises(ExportError, match="nothing to export"):
        export_labels(LabelStore(state / "labels.sqlite3", retention_days=1e-6), tmp_path / "none")
    assert not (tmp_path / "none").exists() and not list(tmp_path.glob(".none.*"))
