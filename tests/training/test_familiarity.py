"""``mpox-aism familiarity``: fits the score beside a model, its threshold out of fold, its figures in metrics.json."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mpox_aism.cli import main as cli
from mpox_aism.contracts.familiarity import FAMILIARITY_FILE, Familiarity
from mpox_aism.model.modeldir import load_model


def test_fit_writes_the_score_for_this_network(default_model, tiny_skin8, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.pt").symlink_to((default_model / "model.pt").resolve())
    shutil.copy(default_model / "metrics.json", model_dir / "metrics.json")
    assert cli(["familiarity", "--model", str(model_dir), "--data", str(tiny_skin8), "--folds", "2",
                "--pass", "0.9", "--cache", str(tmp_path / "cache"), "--workers", "0"]) == 0
    score = Familiarity.load(model_dir / FAMILIARITY_FILE)
    assert score.model_version == load_model(model_dir)[1].model_version and score.pass_share == 0.9
    assert np.isfinite(score.threshold) and score.knn_ref[1] > 0 and score.energy_ref[1] > 0
    fit = json.loads((model_dir / "metrics.json").read_text())["familiarity"]
    assert fit["threshold"] == pytest.approx(score.threshold) and fit["n_dev"] > 0
    assert fit["dev_unfamiliar_out_of_fold"] <= 0.1 + 1e-9  # at most 1 − pass of the dev photos, out of fold


def test_a_pass_share_out_of_range_is_refused(default_model, tiny_skin8):
    assert cli(["familiarity", "--model", str(default_model), "--data", str(tiny_skin8), "--pass", "1.5"]) == 2
