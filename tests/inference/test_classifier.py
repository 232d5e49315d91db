import threading
import time

import numpy as np
import pytest
import torch

from mpox_aism.contracts.decision import softmax
from mpox_aism.contracts.model import ModelMeta
from mpox_aism.inference.backends import load_classifier
from mpox_aism.inference.classifier import Classifier
from mpox_aism.model.modeldir import load_model
from mpox_aism.training.data import scan_dataset
from mpox_aism.training.evaluate import predict_logits


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
    from mpox_aism.contracts.images import load_rgb

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


class _Probe(Classifier):
    """A backend that records how many threads are inside ``logits`` at once."""

    backend = "probe"

    def __init__(self, thread_safe: bool, meet: threading.Barrier | None = None):
        self.thread_safe = thread_safe
        super().__init__(ModelMeta(image_size=8))
        self.inside = self.most = 0
        self._count = threading.Lock()
        self._meet = meet

    def logits(self, batch: np.ndarray) -> np.ndarray:
        with self._count:
            self.inside += 1
            self.most = max(self.most, self.inside)
        if self._meet is not None:
            self._meet.wait()  # returns only when two calls are inside together
        else:
            time.sleep(0.01)  # room for another thread to arrive, if nothing stopped it
        with self._count:
            self.inside -= 1
        return np.zeros((len(batch), 8), np.float32)


def _hammer(clf: Classifier, threads: int, calls: int) -> None:
    crop = np.zeros((8, 8, 3), np.uint8)
    workers = [threading.Thread(target=lambda: [clf.predict([crop]) for _ in range(calls)]) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()


def test_a_backend_that_is_not_thread_safe_gets_one_call_at_a_time():
    """Every camera thread and the HTTP thread share one classifier; a TensorRT context is not re-entrant."""
    clf = _Probe(thread_safe=False)
    _hammer(clf, threads=4, calls=5)
    assert clf.most == 1


def test_a_thread_safe_backend_is_not_serialised():
    clf = _Probe(thread_safe=True, meet=threading.Barrier(2, timeout=10))
    _hammer(clf, threads=2, calls=1)  # a lock would leave the first call waiting at the barrier: BrokenBarrierError
    assert clf.most == 2


def test_backends_declare_their_thread_safety():
    from mpox_aism.inference.backends.onnxruntime import OnnxRuntimeClassifier
    from mpox_aism.inference.backends.tensorrt import TensorRTClassifier
    from mpox_aism.inference.backends.torch import TorchClassifier

    assert OnnxRuntimeClassifier.thread_safe and not TensorRTClassifier.thread_safe
    assert not TorchClassifier.thread_safe
