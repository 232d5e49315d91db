import csv
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from mpox_aism.contracts.images import DatasetError, load_rgb
from mpox_aism.contracts.labels import LABELS
from mpox_aism.training.data import class_counts, scan_dataset


def _img(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((20, 30, 3), value, np.uint8))


def test_folder_layout_without_manifest(tmp_path, caplog):
    for label in ("mpox", "normal"):
        _img(tmp_path / label / "a.jpg")
        _img(tmp_path / label / "b.png")
    (tmp_path / "normal" / "notes.txt").write_text("ignored")
    samples = scan_dataset(tmp_path)
    assert len(samples) == 4
    assert {s.label_name for s in samples} == {"mpox", "normal"}
    assert len({s.group for s in samples}) == 4  # every image its own group
    assert "no manifest.csv" in caplog.text


def test_unknown_class_folder_is_named(tmp_path):
    _img(tmp_path / "monkeypox" / "a.jpg")
    with pytest.raises(DatasetError, match=r"unknown class folder .*monkeypox"):
        scan_dataset(tmp_path)


def test_empty_class_is_named(tmp_path):
    _img(tmp_path / "mpox" / "a.jpg")
    (tmp_path / "measles").mkdir()
    with pytest.raises(DatasetError, match="measles holds no images"):
        scan_dataset(tmp_path)


def test_corrupt_image_is_named(tmp_path):
    _img(tmp_path / "mpox" / "good.jpg")
    good = (tmp_path / "mpox" / "good.jpg").read_bytes()
    (tmp_path / "mpox" / "truncated.jpg").write_bytes(good[:40])
    (tmp_path / "mpox" / "text.jpg").write_text("not an image")
    with pytest.raises(DatasetError, match=r"truncated\.jpg|text\.jpg"):
        scan_dataset(tmp_path)
    with pytest.raises(DatasetError, match=r"text\.jpg"):
        load_rgb(tmp_path / "mpox" / "text.jpg")


def test_training_requires_every_class(tmp_path):
    _img(tmp_path / "mpox" / "a.jpg")
    with pytest.raises(DatasetError, match="no images for class"):
        scan_dataset(tmp_path, require_all_classes=True)


def _manifest(root: Path, rows: list[dict]) -> None:
    with (root / "manifest.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_manifest_groups_and_extra_columns(tmp_path):
    _img(tmp_path / "mpox" / "a.jpg")
    _img(tmp_path / "mpox" / "b.jpg")
    _img(tmp_path / "normal" / "c.jpg")
    _manifest(tmp_path, [
        {"path": "mpox/a.jpg", "label": "mpox", "source": "s1", "group": "g1"},
        {"path": "mpox/b.jpg", "label": "mpox", "source": "s1", "group": "g1"},
        {"path": "normal/c.jpg", "label": "normal", "source": "s2", "group": "g2"},
    ])
    samples = scan_dataset(tmp_path)
    assert [s.group for s in samples] == ["g1", "g1", "g2"]
    assert samples[2].source == "s2" and samples[2].columns() == {"source": "s2"}


def test_manifest_errors_name_the_line(tmp_path):
    _img(tmp_path / "mpox" / "a.jpg")
    _manifest(tmp_path, [{"path": "mpox/a.jpg", "label": "smallpox", "group": "g"}])
    with pytest.raises(DatasetError, match=r"manifest.csv:2: unknown class 'smallpox'"):
        scan_dataset(tmp_path)
    _manifest(tmp_path, [{"path": "mpox/missing.jpg", "label": "mpox", "group": "g"}])
    with pytest.raises(DatasetError, match=r"missing\.jpg does not exist"):
        scan_dataset(tmp_path)


def test_real_skin8_scans_completely(skin8):
    """Every manifest row becomes a sample with its label and source; the expected counts come from
    the manifest itself, so the shared data may grow without breaking the test."""
    with (skin8 / "manifest.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    expected = Counter(r["label"] for r in rows)
    samples = scan_dataset(skin8, require_all_classes=True, verify=False)
    counts = dict(zip(LABELS, class_counts(samples), strict=True))
    assert counts == {label: expected[label] for label in LABELS}
    assert [s.source for s in samples] == [r["source"] for r in rows]
    assert all(s.source for s in samples)
