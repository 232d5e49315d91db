"""Classifier.classify: the familiarity score from the same forward pass, on every backend that has features."""

from __future__ import annotations

import dataclasses

import numpy as np

from mpox_aism.contracts.familiarity import fit_bank
from mpox_aism.contracts.preprocess import preprocess_batch
from mpox_aism.inference.backends import load_classifier


def test_classify_adds_the_score_and_agrees_with_predict(default_model, real_crops, tmp_path):
    with load_classifier("torch", default_model) as clf:
        assert clf.familiarity is None or clf.familiarity.model_version == clf.meta.model_version
        logits, feats = clf.logits_and_features(preprocess_batch(real_crops, clf.image_size))
        score = dataclasses.replace(fit_bank(feats, components=8, k=3), knn_ref=(0.5, 0.2), energy_ref=(-5.0, 2.0),
                                    model_version=clf.meta.model_version)
        clf.familiarity = dataclasses.replace(
            score, threshold=float(np.quantile(score.unfamiliarity(feats, logits), 0.95)))
        grey = np.full((224, 224, 3), 128, np.uint8)  # not skin, not a photo
        out = clf.classify([*real_crops, grey])
        np.testing.assert_allclose(out.probabilities[:-1], clf.predict(real_crops), atol=1e-5)
        assert out.unfamiliarity.shape == (len(real_crops) + 1,) and out.threshold == clf.familiarity.threshold
        grey_logits, grey_feats = clf.logits_and_features(preprocess_batch([grey], clf.image_size))
        np.testing.assert_allclose(out.unfamiliarity[-1], clf.familiarity.unfamiliarity(grey_feats, grey_logits)[0],
                                   rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(out.unfamiliarity[:-1], clf.familiarity.unfamiliarity(feats, logits),
                                   rtol=1e-3, atol=1e-3)
        np.testing.assert_array_equal(out.familiar, out.unfamiliarity <= out.threshold)
        assert len(clf.classify([]).probabilities) == 0
        # the file beside the model is found by load_classifier, for this network only
        model_dir = tmp_path / "m"
        model_dir.mkdir()
        (model_dir / "model.pt").symlink_to((default_model / "model.pt").resolve())
        clf.familiarity.save(model_dir)
    with load_classifier("torch", model_dir) as again:
        assert again.familiarity is not None and again.familiarity.threshold == clf.familiarity.threshold
    dataclasses.replace(clf.familiarity, model_version="another").save(model_dir)
    with load_classifier("torch", model_dir) as other:
        assert other.familiarity is None  # fitted for another network: refused, said once in the log


def test_without_a_score_classify_is_predict(default_model, real_crops):
    with load_classifier("torch", default_model) as clf:
        clf.familiarity = None
        out = clf.classify(real_crops[:2])
        assert out.unfamiliarity is None and out.familiar is None
        np.testing.assert_allclose(out.probabilities, clf.predict(real_crops[:2]), atol=1e-6)


def test_the_shipped_score_is_the_same_on_torch_and_onnx(default_model, real_crops):
    """models/default carries a familiarity score fitted for its network; both backends compute it alike."""
    with load_classifier("onnxruntime", default_model) as ort, load_classifier("torch", default_model) as pt:
        assert ort.familiarity is not None and pt.familiarity is not None
        assert ort.familiarity.model_version == ort.meta.model_version
        a, b = ort.classify(real_crops), pt.classify(real_crops)
    np.testing.assert_allclose(a.unfamiliarity, b.unfamiliarity, atol=1e-3)
    np.testing.assert_array_equal(a.familiar, b.familiar)
    assert a.familiar.mean() >= 0.75  # real dev photos (in-sample here): nearly all familiar


def test_the_explaining_pass_scores_familiarity_as_classify_does(default_model, real_crops):
    """The diagnosis API's one pass (class maps and features together) gives the same score as ``classify``."""
    for backend in ("onnxruntime", "torch"):
        with load_classifier(backend, default_model) as clf:
            expected = clf.classify(real_crops[:2]).unfamiliarity
            got = [clf.explain(c, max_side=128).unfamiliarity for c in real_crops[:2]]
        np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=backend)
