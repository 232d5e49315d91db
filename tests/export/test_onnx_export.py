import json

import numpy as np
import onnx
import pytest

from mpox_aism.cli import main as cli
from mpox_aism.contracts.model import ONNX_META_KEY
from mpox_aism.export.onnx import ParityError, check_parity, export_onnx
from mpox_aism.inference.backends import load_classifier
from mpox_aism.inference.metadata import read_onnx_meta
from mpox_aism.model.modeldir import load_model


@pytest.fixture(scope="module")
def exported(default_model, tmp_path_factory):
    return export_onnx(default_model, tmp_path_factory.mktemp("onnx") / "model.onnx")


def test_metadata_travels_with_the_file(exported, default_model):
    _, info = load_model(default_model)
    meta = read_onnx_meta(exported)
    assert list(meta.labels) == info.labels and meta.image_size == info.image_size
    assert meta.temperature == pytest.approx(info.temperature) and meta.model_version == info.model_version
    proto = onnx.load(str(exported))
    assert proto.opset_import[0].version >= 17
    assert [i.name for i in proto.graph.input] == ["input"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert json.loads({p.key: p.value for p in proto.metadata_props}[ONNX_META_KEY])["labels"][0] == "mpox"


def test_dynamic_batch_and_parity_on_real_photos(exported, default_model, real_crops):
    report = check_parity(default_model, exported, real_crops, tolerance=1e-3)
    assert report["passed"] and report["images"] == len(real_crops) and report["argmax_agree"] == 1.0
    with load_classifier("onnxruntime", exported, max_batch=32) as ort:
        one = ort.predict(real_crops[:1])
        many = ort.predict(real_crops)
    np.testing.assert_allclose(one[0], many[0], atol=1e-5)


def test_a_broken_graph_fails_parity(exported, default_model, real_crops, tmp_path):
    proto = onnx.load(str(exported))
    init = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
    arr = onnx.numpy_helper.to_array(init).copy()
    arr *= -1.0
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    with pytest.raises(ParityError, match="differs from PyTorch"):
        check_parity(default_model, bad, real_crops, tolerance=1e-3)


def test_cli_export_writes_parity_report(default_model, skin8, tmp_path):
    out = tmp_path / "m.onnx"
    assert cli(["export", "onnx", "--model", str(default_model), "--out", str(out),
                "--parity-data", str(skin8 / "mpox"), "--parity-images", "8"]) == 0
    report = json.loads(out.with_name("m.onnx.parity.json").read_text())
    assert report["passed"] and report["images"] == 8


def test_pooled_features_are_an_output_and_match_torch(exported, default_model, real_crops):
    """The head's input comes out of the ONNX file, equal to torch's, so the familiarity score reads the same
    numbers on every backend; the logits are the head applied to them."""
    from mpox_aism.contracts.preprocess import preprocess_batch
    from mpox_aism.model.zoo import classifier_head

    report = check_parity(default_model, exported, real_crops, tolerance=1e-3)
    assert report["features_max_rel_diff"] <= 1e-3
    batch = preprocess_batch(real_crops[:4], 224)
    with load_classifier("onnxruntime", exported) as ort, load_classifier("torch", default_model) as pt:
        assert ort.has_features and pt.has_features
        logits, feats = ort.logits_and_features(batch)
        t_logits, t_feats = pt.logits_and_features(batch)
    np.testing.assert_allclose(feats, t_feats, rtol=1e-3, atol=1e-3 * float(np.abs(t_feats).max()))
    head = classifier_head(load_model(default_model)[0])
    w, b = head.weight.detach().numpy(), head.bias.detach().numpy()
    np.testing.assert_allclose(feats @ w.T + b, logits, atol=1e-3)
    np.testing.assert_allclose(t_logits, logits, atol=1e-3)
