"""A real (tiny) training run on real photos: files, resume, determinism, evaluate round trip."""

import csv
import json

import pytest
import torch

from mpox_aism.cli import main as cli
from mpox_aism.contracts.labels import LABELS
from mpox_aism.model.modeldir import load_model

QUICK = ["--arch", "mobilenet_v2", "--image-size", "64", "--batch-size", "8", "--workers", "0",
         "--val-fraction", "0.4", "--pretrained", "none"]


def _history(run):
    with (run / "history.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained(tiny_skin8, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    assert cli(["train", "--data", str(tiny_skin8), "--epochs", "2", "--out", str(run), *QUICK]) == 0
    return run


def test_run_directory_contents(trained):
    for name in ("model.pt", "labels.json", "calibration.json", "checkpoint.pt", "history.csv", "curves.png",
                 "metrics.json", "metrics.md", "model_card.md", "confusion_matrix.png", "reliability.png",
                 "threshold_sweep.png"):
        assert (trained / name).is_file(), name
    rows = _history(trained)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"train_loss", "val_accuracy", "val_macro_f1"} <= set(rows[0])
    assert json.loads((trained / "labels.json").read_text()) == list(LABELS)


def test_model_is_self_describing(trained):
    model, info = load_model(trained)
    assert info.arch == "mobilenet_v2" and info.image_size == 64
    assert info.temperature > 0 and info.threshold == 0.6
    assert len(info.model_version) == 12 and info.val_groups
    assert "mpox-aism train" in info.recipe["command"]
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 8)


def test_resume_continues_from_checkpoint(tiny_skin8, tmp_path):
    args = ["train", "--data", str(tiny_skin8), "--out", str(tmp_path), *QUICK]
    assert cli([*args, "--epochs", "1"]) == 0
    assert len(_history(tmp_path)) == 1
    assert cli([*args, "--epochs", "2", "--resume"]) == 0
    assert [r["epoch"] for r in _history(tmp_path)] == ["1", "2"]


def test_deterministic_mode_repeats_exactly(tiny_skin8, tmp_path):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert cli(["train", "--data", str(tiny_skin8), "--out", str(out), "--epochs", "1",
                    "--deterministic", "--seed", "3", *QUICK]) == 0
        runs.append(_history(out)[0]["train_loss"])
    assert runs[0] == runs[1]


def test_evaluate_writes_the_documented_metrics(trained, tiny_skin8, tmp_path):
    out = tmp_path / "eval"
    assert cli(["evaluate", "--data", str(tiny_skin8), "--model", str(trained), "--out", str(out),
                "--split", "val"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["labels"] == list(LABELS)
    assert set(m["per_class"]["mpox"]) == {"precision", "recall", "specificity", "f1", "support"}
    assert m["threshold"]["value"] == 0.6 and 0 <= m["threshold"]["coverage"] <= 1
    assert set(m["threshold"]) == {"value", "coverage", "accuracy_answered", "per_class"}
    assert 0 <= m["ece"] <= 1 and len(m["confusion_matrix"]) == 8
    assert sum(map(sum, m["confusion_matrix"])) == m["n"]
    assert "source" in m["by_column"]  # the manifest's extra column, reported per value
    assert m["threshold_sweep"][0]["threshold"] == 0.0
    for name in ("metrics.md", "confusion_matrix.png", "reliability.png", "threshold_sweep.png", "predictions.csv"):
        assert (out / name).is_file()
    # the val split is the model's own held-out side
    _, info = load_model(trained)
    assert m["n"] == info.split["n_val"]


def test_bad_data_is_a_clear_cli_error(tmp_path, capsys):
    (tmp_path / "smallpox").mkdir()
    (tmp_path / "smallpox" / "x.jpg").write_bytes(b"junk")
    assert cli(["train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--epochs", "1"]) == 2
    assert "unknown class folder" in capsys.readouterr().err


def test_class_weights_parse_and_refuse_typos():
    from mpox_aism.training.train import parse_class_weights

    assert parse_class_weights([]) is None
    w = parse_class_weights(["mpox=2", "normal=0.5"])
    assert w.tolist() == [2.0 if k == "mpox" else 0.5 if k == "normal" else 1.0 for k in LABELS]
    for bad in (["monkeypox=2"], ["mpox"], ["mpox=two"], ["mpox=0"], ["mpox=-1"]):
        with pytest.raises(SystemExit, match="class-weight"):
            parse_class_weights(bad)


def test_ema_weights_are_the_ones_validated_saved_and_resumed(tiny_skin8, tmp_path):
    """With --ema-decay the shipped model is the averaged copy; resume restores that copy too."""
    args = ["train", "--data", str(tiny_skin8), "--out", str(tmp_path), *QUICK, "--ema-decay", "0.9",
            "--class-weight", "mpox=2"]
    assert cli([*args, "--epochs", "2"]) == 0  # ≥ 2 steps: the first EMA update is a plain copy
    ck = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=False)
    ema = {k.removeprefix("module."): v for k, v in ck["ema"].items() if k.startswith("module.")}
    raw = ck["model"]
    assert set(ema) == set(raw)
    assert any(not torch.equal(ema[k], raw[k]) for k in raw if raw[k].is_floating_point())
    best = max(_history(tmp_path), key=lambda r: float(r["val_macro_f1"]))["epoch"]
    if best == "2":  # the EMA is what was validated and kept
        assert all(torch.equal(ck["best_state"][k], ema[k]) for k in raw)
    assert cli([*args, "--epochs", "3", "--resume"]) == 0
    assert [r["epoch"] for r in _history(tmp_path)] == ["1", "2", "3"]
    _, info = load_model(tmp_path)
    assert info.recipe["args"]["ema_decay"] == 0.9 and info.recipe["args"]["class_weight"] == ["mpox=2"]
