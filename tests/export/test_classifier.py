import numpy as np
import pytest
import torch

from export.backends import load_classifier
from export.classifier import ModelMeta
from training.calibration import softmax
from training.data import scan_dataset
from training.evaluate import predict_logits
from training.modeldir import load_model


def test_meta_refuses_another_label_order():
    meta = ModelMeta(image_size=224, labels=("normal", "mpox"))
    with pytest.raises(ValueError, match="labels"):
        meta.check_compatible("x.onnx")
    with pytest.raises(ValueError, match="normalisation"):
        ModelMeta(image_size=224, mean=(0.5, 0.5, 0.5)).check_compatible("x.onnx")


def test_chunking_and_shape_checks(default_model):
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (50 + 7 * i, 60, 3), dtype=np.uint8) for i in range(5)]
    with load_classifier("torch", default_model, max_batch=2) as small, \
            load_classifier("torch", default_model, max_batch=8) as big:
        a, b = small.predict(crops), big.predict(crops)
    assert a.shape == (5, 8)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-5)
    with load_classifier("torch", default_model) as clf, pytest.raises(ValueError, match="expected N×3"):
        clf.predict_preprocessed(np.zeros((1, 3, 10, 10), np.float32))
    assert load_classifier("torch", default_model).predict([]).shape == (0, 8)


def test_serving_equals_training_evaluation(default_model, skin8):
    """The classifier the kiosk uses returns what `evaluate` computed for the same photos."""
    samples = scan_dataset(skin8, verify=False)[::300]
    model, info = load_model(default_model)
    ref = softmax(predict_logits(model, samples, image_size=info.image_size), info.temperature)
    from training.data import load_rgb

    with load_classifier("torch", default_model) as clf:
        got = clf.predict([load_rgb(s.path) for s in samples])
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend"):
        load_classifier("openvino")


def test_fp16_on_cpu_is_refused(default_model):
    with pytest.raises(ValueError, match="GPU precision"):
        load_classifier("torch", default_model, precision="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA graphs need"):
            load_classifier("torch", default_model, cuda_graphs=True)
