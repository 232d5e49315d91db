"""The shipped default model: loadable, self-describing, and runnable on the built-in sample."""

import json

import pytest

from mpox_aism.cli import main as cli
from mpox_aism.contracts.model import default_model_dir
from mpox_aism.model.modeldir import load_model


def _need_default():
    if not (default_model_dir() / "model.pt").is_file():
        pytest.fail(f"the default model is missing from {default_model_dir()}")


def test_default_model_directory_contract():
    _need_default()
    d = default_model_dir()
    for name in ("model.pt", "labels.json", "calibration.json", "model_card.md", "metrics.json"):
        assert (d / name).is_file(), name
    assert (d / "model.pt").stat().st_size <= 25 * 1024 * 1024
    _, info = load_model(d)
    calib = json.loads((d / "calibration.json").read_text())
    assert calib["temperature"] == pytest.approx(info.temperature)
    assert calib["model_version"] == info.model_version
    card = (d / "model_card.md").read_text().lower()
    assert "research use only" in card and "not a diagnostic device" in card


def test_builtin_sample_runs_without_shared_data(tmp_path):
    _need_default()
    assert cli(["evaluate", "--sample", "--out", str(tmp_path)]) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["n"] == 2 and m["per_class"]["normal"]["support"] == 2
    if (default_model_dir() / "familiarity.npz").is_file():  # the share a kiosk would hold as unfamiliar
        assert 0.0 <= m["unfamiliar_rate"] <= 1.0 and m["unfamiliar_threshold"] > 0


def test_default_model_figures_are_out_of_fold(skin8, tmp_path):
    """The shipped model trained on every dev photo: its figures are cross-validation's, and asking for a
    held-out side it does not have is a clear refusal, not a silent evaluation on training photos."""
    _need_default()
    _, info = load_model(default_model_dir())
    shipped = json.loads((default_model_dir() / "metrics.json").read_text())
    if info.val_groups:  # a model from `train` keeps its validation side: re-measure it
        assert cli(["evaluate", "--data", str(skin8), "--split", "val", "--out", str(tmp_path)]) == 0
        m = json.loads((tmp_path / "metrics.json").read_text())
        assert m["n"] == shipped["n"] and m["macro_f1"] == pytest.approx(shipped["macro_f1"], abs=0.02)
        return
    assert "out-of-fold" in shipped["split"]
    assert shipped["n"] == info.split["n_train"] - info.split.get("n_negatives", 0) - info.split.get("n_derived", 0)
    assert set(shipped["ci95"]) >= {"accuracy", "macro_f1", "mpox_recall"}
    assert all("ci95" in m for m in shipped["by_column"]["source"].values())
    with pytest.raises(SystemExit, match="no validation groups"):
        cli(["evaluate", "--data", str(skin8), "--split", "val", "--out", str(tmp_path)])
    card = (default_model_dir() / "model_card.md").read_text()
    assert "## Classes not to be trusted" in card and "Leave one source out" in card
