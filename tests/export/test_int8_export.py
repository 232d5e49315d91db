"""``mpox-aism export int8`` and the ``onnxruntime-int8`` backend: same outputs, same metadata, same familiarity.

Quantized once per module on the two built-in sample photos (seconds): these tests check the plumbing,
not int8's quality (research/int8_quality.py measures that on the dev photos).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from mpox_aism.cli import main as cli
from mpox_aism.contracts.images import list_images, load_rgb
from mpox_aism.contracts.model import FEATURES_NAME, MAPS_NAME, OUTPUT_NAME
from mpox_aism.contracts.sample import builtin_sample_dir
from mpox_aism.export.int8 import INT8_NAME, split_photos
from mpox_aism.inference.backends import load_classifier
from mpox_aism.inference.metadata import read_onnx_meta

BESIDE = ("model.onnx", "familiarity.npz", "labels.json", "calibration.json")


@pytest.fixture(scope="module")
def int8_dir(default_model, tmp_path_factory) -> Path:
    """A model directory linking the shipped fp32 files, plus its model.int8.onnx made by the command."""
    if not (default_model / "model.onnx").is_file():
        pytest.skip(f"no model.onnx in {default_model}")
    d = tmp_path_factory.mktemp("int8")
    for name in BESIDE:
        if (default_model / name).is_file():
            (d / name).symlink_to(default_model / name)
    assert cli(["export", "int8", "--model", str(d), "--calib-images", "2"]) in (0, None)
    return d


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [load_rgb(p) for p in list_images(builtin_sample_dir())]


def test_the_file_keeps_the_three_outputs_and_the_metadata(int8_dir):
    import onnxruntime as ort

    path = int8_dir / INT8_NAME
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == [OUTPUT_NAME, FEATURES_NAME, MAPS_NAME]
    assert read_onnx_meta(path) == read_onnx_meta(int8_dir / "model.onnx")  # labels, temperature, model_version
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    assert path.stat().st_size < (int8_dir / "model.onnx").stat().st_size / 2


def test_the_parity_report_is_written_beside_it(int8_dir):
    report = json.loads((int8_dir / f"{INT8_NAME}.parity.json").read_text())
    for key in ("images", "max_abs_diff", "argmax_agree", "heatmap_corr_mean", "heatmap_corr_min",
                "heatmap_max_abs_diff", "features_max_rel_diff", "calibration_photos", "calibration_photos_in_parity"):
        assert key in report
    assert report["calibration_photos_in_parity"] is True  # the built-in sample is too small to keep apart
    assert 0.0 <= report["max_abs_diff"] < 1.0 and -1.0 <= report["heatmap_corr_mean"] <= 1.0


def test_the_int8_backend_classifies_explains_and_scores_familiarity(int8_dir, photos):
    with load_classifier("onnxruntime-int8", int8_dir) as clf, load_classifier("onnxruntime", int8_dir) as fp32:
        assert clf.backend == "onnxruntime-int8" and clf.describe()["precision"] == "int8"
        assert clf.can_explain and clf.has_features and clf.labels == fp32.labels
        assert clf.familiarity is not None  # fitted for this model_version: int8 keeps it
        out = clf.classify(photos)
        np.testing.assert_allclose(out.probabilities.sum(1), 1.0, atol=1e-5)
        assert out.probabilities.shape == (len(photos), len(clf.labels))
        assert out.unfamiliarity is not None and np.isfinite(out.unfamiliarity).all() and out.familiar is not None
        ref = fp32.classify(photos)  # loose: int8 differs a little, not in kind
        np.testing.assert_allclose(out.unfamiliarity, ref.unfamiliarity, rtol=0.25)
        heat = clf.explain(photos[0]).heatmap
        assert heat.shape == photos[0].shape[:2] and heat.min() >= 0 and heat.max() <= 1


def test_a_missing_int8_file_names_the_command(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="mpox-aism export int8"):
        load_classifier("onnxruntime-int8", tmp_path)


def test_the_config_and_the_benchmark_take_the_int8_backend():
    from mpox_aism.bench.classifier import parse_variant
    from mpox_aism.kiosk.config import ClassifierConfig

    assert ClassifierConfig(backend="onnxruntime-int8").backend == "onnxruntime-int8"
    assert ClassifierConfig().backend == "auto"  # the default is unchanged (docs/RESULTS.md: the int8 rule)
    assert parse_variant("onnxruntime-int8") == ("onnxruntime-int8", {})


def test_calibration_and_parity_photos_are_disjoint_and_spread():
    files = [Path(f"{c}/{i:03d}.jpg") for c in "abcd" for i in range(50)]
    calib, parity = split_photos(files, 20, 10)
    assert len(calib) == 20 and len(parity) == 10 and not set(calib) & set(parity)
    assert {f.parent.name for f in calib} == {f.parent.name for f in parity} == set("abcd")
