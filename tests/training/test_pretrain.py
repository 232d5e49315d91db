"""`mpox-aism pretrain`: a tiny real run, resume, encoder.pt → train --init, no validation images, DDP."""

import csv
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mpox_aism.cli import main as cli
from mpox_aism.contracts.labels import LABELS
from mpox_aism.model.modeldir import load_init_checkpoint
from mpox_aism.model.zoo import build_model, classifier_head
from mpox_aism.training import pretrain
from mpox_aism.training.data import scan_dataset
from mpox_aism.training.pretrain import ENCODER_FORMAT, SourceImages, collect_images, source_size
from mpox_aism.training.split import group_split
from tests.conftest import REPO, make_subset

QUICK = ["--arch", "mobilenet_v2", "--image-size", "32", "--batch-size", "4", "--workers", "0", "--device", "cpu"]


def _write_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """Small random-colour pictures of different sizes (decodable JPEGs, no real data needed)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = rng.integers(36, 64, size=2)
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = folder / f"img{seed}_{i}.jpg"
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def unlabeled(tmp_path_factory) -> Path:
    """16 images in two nested subfolders, plus a corrupt one and a hidden one that must be skipped."""
    root = tmp_path_factory.mktemp("unlabeled")
    _write_images(root / "a", 8, seed=1)
    _write_images(root / "b" / "deeper", 8, seed=2)
    (root / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "b" / ".hidden.jpg").write_bytes(b"ignored")
    return root


@pytest.fixture(scope="module")
def pretrained(unlabeled, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("pretrain_run")
    assert cli(["pretrain", "--data", str(unlabeled), "--epochs", "1", "--out", str(run), *QUICK]) == 0
    return run


def _history(run: Path) -> list[dict]:
    with (run / "history.csv").open() as f:
        return list(csv.DictReader(f))


def test_run_writes_encoder_history_and_curve(pretrained):
    for name in ("encoder.pt", "checkpoint.pt", "history.csv", "loss.png"):
        assert (pretrained / name).is_file(), name
    rows = _history(pretrained)
    assert list(rows[0]) == ["epoch", "loss", "lr", "seconds", "images_per_s"]
    assert math.isfinite(float(rows[0]["loss"])) and float(rows[0]["images_per_s"]) > 0
    blob = torch.load(pretrained / "encoder.pt", map_location="cpu", weights_only=False)
    assert blob["format"] == ENCODER_FORMAT and blob["arch"] == "mobilenet_v2"
    assert blob["image_size"] == 32 and blob["feature_dim"] == 1280
    assert blob["recipe"]["n_images"] == 16 and blob["recipe"]["unreadable_skipped"] == 1
    assert "mpox-aism pretrain" in blob["recipe"]["command"]


def test_encoder_initialises_a_classifier_backbone_and_leaves_the_head_fresh(pretrained):
    model = build_model("mobilenet_v2", image_size=32)
    head_before = classifier_head(model).weight.detach().clone()
    copied, skipped = load_init_checkpoint(model, pretrained / "encoder.pt")
    assert copied >= 100 and skipped == 0
    state = torch.load(pretrained / "encoder.pt", map_location="cpu", weights_only=False)["state_dict"]
    assert torch.equal(model.state_dict()["features.0.0.weight"], state["features.0.0.weight"])
    assert torch.equal(classifier_head(model).weight, head_before)


@pytest.mark.parametrize("views", ["device", "loader"])
def test_resume_continues_exactly_where_it_stopped(unlabeled, tmp_path, monkeypatch, views):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    quick = [*QUICK, "--views", views]
    assert cli(["pretrain", "--data", str(unlabeled), "--out", str(straight), "--epochs", "2", *quick]) == 0
    args = ["pretrain", "--data", str(unlabeled), "--out", str(resumed), "--epochs", "2", *quick]
    real_epoch, calls = pretrain.train_one_epoch, []

    def interrupted(*a, **k):  # the job is killed during its second epoch
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real_epoch(*a, **k)

    monkeypatch.setattr(pretrain, "train_one_epoch", interrupted)
    with pytest.raises(RuntimeError, match="killed"):
        cli(args)
    monkeypatch.undo()
    assert len(_history(resumed)) == 1
    assert cli([*args, "--resume"]) == 0
    rows = _history(resumed)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert [r["loss"] for r in rows] == [r["loss"] for r in _history(straight)]
    blob = torch.load(resumed / "encoder.pt", map_location="cpu", weights_only=False)
    assert blob["recipe"]["epochs_done"] == 2


def test_source_images_are_uint8_squares_for_device_views(unlabeled):
    paths = collect_images([unlabeled], verbose=False).paths
    assert source_size(224) == 258 and source_size(32) == 37
    dataset = SourceImages(paths, 37)
    shapes = {tuple(dataset[i].shape) for i in range(len(dataset))}
    assert shapes == {(3, 37, 37)} and dataset[0].dtype == torch.uint8


def test_device_views_run_on_real_photos(tiny_skin8, tmp_path):
    """`--views device` on the CPU: workers decode and resize, DeviceViews augments each batch."""
    run = tmp_path / "device"
    assert cli(["pretrain", "--data", str(tiny_skin8), "--out", str(run), "--epochs", "1", "--limit", "16",
                *QUICK, "--views", "device"]) == 0
    rows = _history(run)
    assert len(rows) == 1 and math.isfinite(float(rows[0]["loss"]))
    blob = torch.load(run / "encoder.pt", map_location="cpu", weights_only=False)
    assert blob["recipe"]["args"]["views"] == "device"
    assert "on cpu, batched" in blob["recipe"]["views"] and "37 px squares" in blob["recipe"]["views"]


def test_loader_views_still_run_and_a_switch_on_resume_is_warned(unlabeled, tmp_path, caplog):
    run = tmp_path / "loader"
    args = ["pretrain", "--data", str(unlabeled), "--out", str(run), *QUICK]
    assert cli([*args, "--epochs", "1", "--views", "loader"]) == 0
    ck = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ck["args"]["views"] == "loader"
    with caplog.at_level(logging.WARNING, logger="mpox_aism.training.pretrain"):
        assert cli([*args, "--epochs", "2", "--resume"]) == 0  # the default is device
    assert "--views loader" in caplog.text and "--views device" in caplog.text
    blob = torch.load(run / "encoder.pt", map_location="cpu", weights_only=False)
    assert blob["recipe"]["epochs_done"] == 2 and "in DataLoader workers" not in blob["recipe"]["views"]


def test_unreadable_images_are_skipped_with_a_warning(unlabeled, caplog):
    with caplog.at_level(logging.WARNING, logger="mpox_aism.training.pretrain"):
        found = collect_images([unlabeled])
    assert len(found.paths) == 16 and all(p.name != "broken.jpg" for p in found.paths)
    assert "broken.jpg" in caplog.text and "unreadable" in caplog.text
    assert not any(p.name.startswith(".") for p in found.paths)


def test_too_few_images_for_one_batch_is_a_clear_error(unlabeled, tmp_path, capsys):
    args = ["pretrain", "--data", str(unlabeled), "--out", str(tmp_path), "--epochs", "1", *QUICK]
    assert cli([*args, "--batch-size", "32"]) == 2
    assert "no full batch" in capsys.readouterr().err


def _real(paths) -> set[str]:
    return {os.path.realpath(p) for p in paths}


def test_only_the_training_side_of_a_labeled_folder_is_used(tmp_path, capsys):
    subset = make_subset(tmp_path / "skin8", per_class=6)
    for seed in (0, 1):
        train, val = group_split(scan_dataset(subset), val_fraction=0.2, seed=seed)
        found = collect_images([subset], val_fraction=0.2, seed=seed)
        assert _real(found.paths) == _real(s.path for s in train)
        assert not _real(found.paths) & _real(s.path for s in val)
        assert found.excluded_val == len(val) > 0
    assert "validation-side images excluded" in capsys.readouterr().out


def _synthetic_labeled(root: Path) -> Path:
    """A labeled folder with a manifest: two groups of two random images per class, one per source."""
    rows = []
    for c, label in enumerate(LABELS):
        for g in range(2):
            for p in _write_images(root / label, 2, seed=100 + 2 * c + g):
                rows.append({"path": f"{label}/{p.name}", "label": label, "group": f"{label}-{g}",
                             "source": "ab"[g]})
    with (root / "manifest.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "group", "source"])
        w.writeheader()
        w.writerows(rows)
    return root


def test_nested_labeled_folders_and_copies_of_validation_images_are_excluded(tmp_path):
    data = tmp_path / "data"
    labeled = _synthetic_labeled(data / "labeled")
    _write_images(data / "unlabeled", 4, seed=7)
    train, val = group_split(scan_dataset(labeled), val_fraction=0.2, seed=0)
    shutil.copy(val[0].path, data / "unlabeled" / "renamed_copy.jpg")
    found = collect_images([data])
    names = {p.name for p in found.paths}
    assert "renamed_copy.jpg" not in names
    assert _real(found.paths) == _real([*(s.path for s in train), *(data / "unlabeled").glob("img*.jpg")])
    assert found.excluded_val == len(val) + 1

    # a labeled folder elsewhere: its validation images are dropped from --data via --exclude-val-of
    outside = tmp_path / "plain"
    outside.mkdir()
    (outside / "v.jpg").symlink_to(val[1].path)
    (outside / "t.jpg").symlink_to(train[0].path)
    found = collect_images([outside], exclude_val_of=[labeled])
    assert [p.name for p in found.paths] == ["t.jpg"] and found.excluded_val == 1


def test_leave_source_out_keeps_that_folds_test_photos_out(tmp_path, capsys):
    """An encoder adapted for `cv --loso b` never sees b's photos: that fold stays fair."""
    labeled = _synthetic_labeled(tmp_path / "labeled")
    samples = scan_dataset(labeled)
    found = collect_images([labeled], leave_source_out="b")
    assert _real(found.paths) == _real(s.path for s in samples if s.source == "a")
    assert found.excluded_val == sum(s.source == "b" for s in samples)
    assert "test-side images excluded (cv --loso b)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no photo has source='c'"):
        collect_images([labeled], leave_source_out="c")


def test_imagenet_init_starts_from_the_checked_imagenet_weights():
    """--init imagenet: domain-adaptive pretraining continues from ImageNet, head left out."""
    from mpox_aism.model.zoo import load_imagenet_weights
    from mpox_aism.training.ssl import Encoder

    reference = build_model("mobilenet_v2")
    load_imagenet_weights(reference, "mobilenet_v2")
    adapted = Encoder.build("mobilenet_v2", imagenet=True).backbone.state_dict()
    own = {k: v for k, v in reference.state_dict().items() if not k.startswith("classifier.")}
    assert adapted.keys() == own.keys() and all(torch.equal(adapted[k], own[k]) for k in own)
    fresh = Encoder.build("mobilenet_v2").backbone.state_dict()
    assert not torch.equal(fresh["features.0.0.weight"], own["features.0.0.weight"])


def test_two_process_ddp_run_with_gloo(unlabeled, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mpox_aism.cli", "pretrain", "--data", str(unlabeled), "--out", str(run), "--epochs", "1", *QUICK]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (run / "encoder.pt").is_file()
    rows = _history(run)
    assert len(rows) == 1 and math.isfinite(float(rows[0]["loss"]))
    blob = torch.load(run / "encoder.pt", map_location="cpu", weights_only=False)
    assert blob["recipe"]["world_size"] == 2 and blob["recipe"]["global_batch"] == 8
    assert proc.stdout.count("epoch=1") == 1  # only rank 0 reports


def test_pretraining_needs_no_albumentations():
    """The GPU machine has torch/torchvision but not albumentations (used by supervised training)."""
    code = ("import sys; sys.modules['albumentations'] = None\n"
            "import mpox_aism.training.pretrain, mpox_aism.training.ssl\n"
            "from mpox_aism.cli import build_parser\n"
            "build_parser().parse_args(['pretrain', '--data', '.', '--out', 'x'])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
