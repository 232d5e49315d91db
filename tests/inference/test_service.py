"""The inference service: order per client, fairness, a failing batch, shutdown, and parity with the model.

The rules are tested on a recording backend (``_Recorder``: its logits say which request each crop came
from, and a gate holds the worker so requests pile up deterministically); parity on the shipped model.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from mpox_aism.contracts.decision import softmax
from mpox_aism.contracts.model import ModelMeta
from mpox_aism.inference.classifier import Classifier
from mpox_aism.inference.service import BatchRecord, InferenceService, ServiceClosed

SIZE = 8
POISON = -1.0


class _Recorder(Classifier):
    """Each crop's logits are ``[tag / 100, 0, …]`` where ``tag`` is its first pixel: a request's answer names it.
    The first forward pass waits for ``gate``; a crop tagged ``POISON`` makes the pass raise."""

    backend = "recorder"
    thread_safe = True

    def __init__(self) -> None:
        super().__init__(ModelMeta(image_size=SIZE), max_batch=64)
        self.gate = threading.Event()
        self.passes: list[list[float]] = []

    def logits(self, batch: np.ndarray) -> np.ndarray:
        self.gate.wait()
        tags = [float(x) for x in batch[:, 0, 0, 0]]
        self.passes.append(tags)
        if POISON in tags:
            raise RuntimeError("a crop the runtime cannot take")
        out = np.zeros((len(batch), 8), np.float32)
        out[:, 0] = np.asarray(tags) / 100  # small enough that every tag gives its own probabilities
        return out


def tagged(*tags: float) -> np.ndarray:
    batch = np.zeros((len(tags), 3, SIZE, SIZE), np.float32)
    batch[:, 0, 0, 0] = tags
    return batch


def expected(*tags: float) -> np.ndarray:
    logits = np.zeros((len(tags), 8), np.float32)
    logits[:, 0] = np.asarray(tags) / 100
    return softmax(logits, 1.0)


def test_each_client_is_answered_in_order_with_its_own_crops():
    clf = _Recorder()
    with InferenceService(clf, max_wait_ms=0) as service:
        futures = {cam: [service.submit_batch(cam, tagged(100 * c + i, 100 * c + i + 0.5)) for i in range(20)]
                   for c, cam in enumerate(["cam1", "cam2", "cam3"], start=1)}
        clf.gate.set()
        for c, cam in enumerate(["cam1", "cam2", "cam3"], start=1):
            for i, f in enumerate(futures[cam]):
                np.testing.assert_allclose(f.result(5).probabilities, expected(100 * c + i, 100 * c + i + 0.5),
                                           rtol=1e-6)
    for c in (1, 2, 3):  # the order the runtime saw each client's crops in
        seen = [t for p in clf.passes for t in p if 100 * c <= t < 100 * c + 100 and t == int(t)]
        assert seen == sorted(seen) and len(seen) == 20
    assert sum(len(p) for p in clf.passes) == 120
    assert len(clf.passes) < 60, "requests that queued together should share forward passes"


def test_a_flooding_client_does_not_starve_a_camera():
    """Round robin: the API's 50 queued photos and a camera's 3 frames alternate batch by batch."""
    clf = _Recorder()
    with InferenceService(clf, max_wait_ms=0, max_batch=2) as service:
        first = service.submit_batch("api", tagged(999))  # the worker may take it alone and wait at the gate
        flood = [service.submit_batch("api", tagged(1000 + i)) for i in range(50)]
        camera = [service.submit_batch("cam1", tagged(i)) for i in range(3)]
        clf.gate.set()
        for f in [first, *flood, *camera]:
            f.result(5)
    order = [t for p in clf.passes for t in p]
    last_camera = max(order.index(t) for t in (0, 1, 2))
    assert last_camera <= 7, f"the camera's crops waited behind the flood: {order[:12]}"


def test_a_failing_batch_costs_only_the_failing_request():
    clf = _Recorder()
    records: list[BatchRecord] = []
    with InferenceService(clf, max_wait_ms=0, on_batch=records.append) as service:
        hold = service.submit_batch("cam0", tagged(7))
        good = [service.submit_batch(f"cam{i}", tagged(i)) for i in (1, 2, 3)]
        bad = service.submit_batch("cam4", tagged(POISON))
        clf.gate.set()
        hold.result(5)
        for i, f in zip((1, 2, 3), good, strict=True):
            np.testing.assert_allclose(f.result(5).probabilities, expected(i), rtol=1e-6)
        with pytest.raises(RuntimeError, match="cannot take"):
            bad.result(5)
        after = service.submit_batch("cam4", tagged(5))  # the camera and the service go on
        np.testing.assert_allclose(after.result(5).probabilities, expected(5), rtol=1e-6)
        stats = service.stats()
    assert stats.failed == {"cam4": 1}
    assert sum(r.failed for r in records) == 1


def test_close_answers_what_is_queued_then_refuses():
    clf = _Recorder()
    service = InferenceService(clf, max_wait_ms=0)
    queued = [service.submit_batch("cam1", tagged(i)) for i in range(5)]
    closer = threading.Thread(target=service.close)
    closer.start()
    clf.gate.set()
    closer.join(10)
    assert not closer.is_alive() and not service._thread.is_alive()
    for i, f in enumerate(queued):
        np.testing.assert_allclose(f.result(0).probabilities, expected(i), rtol=1e-6)
    with pytest.raises(ServiceClosed):
        service.submit_batch("cam1", tagged(1))


def test_a_lone_client_never_waits_for_the_batch_window():
    """A one-minute window would time the answer out if a lone camera waited for company."""
    clf = _Recorder()
    clf.gate.set()
    with InferenceService(clf, max_wait_ms=60_000) as service:
        client = service.client("cam1")
        crops = [np.full((SIZE, SIZE, 3), 10, np.uint8)]
        for _ in range(3):
            assert client.classify(crops).probabilities.shape == (1, 8)


def test_no_crops_need_no_forward_pass():
    clf = _Recorder()
    with InferenceService(clf) as service:
        assert service.client("cam1").classify([]).probabilities.shape == (0, 8)
    assert clf.passes == []


def test_concurrent_cameras_get_what_the_model_gives_each_alone(default_model):
    """Batched with other cameras' crops, each camera's answer equals the classifier's on its crops alone."""
    from mpox_aism.inference.backends import load_classifier

    rng = np.random.default_rng(0)
    frames = {f"cam{i}": [[rng.integers(0, 255, (64 + 8 * j, 80, 3), dtype=np.uint8) for j in range(1 + i % 3)]
                          for _ in range(4)] for i in range(4)}
    with load_classifier("onnxruntime", default_model) as clf, InferenceService(clf, max_wait_ms=20) as service:
        alone = {cam: [clf.classify(crops) for crops in seq] for cam, seq in frames.items()}
        got: dict[str, list] = {}

        def camera(cam: str) -> None:
            client = service.client(cam)
            got[cam] = [client.classify(crops) for crops in frames[cam]]

        threads = [threading.Thread(target=camera, args=(cam,)) for cam in frames]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        explained = service.client("api").explain(frames["cam0"][0][0])
        direct = clf.explain(frames["cam0"][0][0])
        assert service.stats().crops_per_batch >= 1
    for cam in frames:
        for a, b in zip(alone[cam], got[cam], strict=True):
            np.testing.assert_allclose(b.probabilities, a.probabilities, atol=1e-5)
            if a.unfamiliarity is not None:
                np.testing.assert_allclose(b.unfamiliarity, a.unfamiliarity, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(explained.probabilities, direct.probabilities, atol=1e-6)
    np.testing.assert_allclose(explained.heatmap, direct.heatmap, atol=1e-6)


def test_a_client_that_says_when_it_works_is_waited_for_only_then():
    """A camera waiting for its turn cannot ask: the worker waits for it only inside ``working()``."""
    clf = _Recorder()
    clf.gate.set()
    with InferenceService(clf, max_wait_ms=60_000) as service:
        cam1, cam2 = service.client("cam1"), service.client("cam2")
        crops = [np.full((SIZE, SIZE, 3), 10, np.uint8)]
        with cam2.working():  # cam2 asked once (so the worker knows it) and ends its frame
            cam2.classify(crops)
        # cam2 asked a moment ago, but it says it is not working: cam1 is answered without a one-minute wait
        assert cam1.classify(crops).probabilities.shape == (1, 8)
        done = threading.Event()
        with cam2.working():  # now cam2 works: cam1's request waits for its crops …
            t = threading.Thread(target=lambda: (cam1.classify(crops), done.set()))
            t.start()
            assert not done.wait(0.3)
        # … and goes as soon as cam2's frame ends without asking
        assert done.wait(10)
        t.join()
