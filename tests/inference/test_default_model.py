"""The shipped model answers as it did before the session-10 restructure, on every backend here.

The reference probabilities were computed at git 6ef3126 (the layout before the package moved under
``mpox_aism/``) for the two built-in sample photos, with the ONNX Runtime and torch backends: a move
that changed preprocessing, loading or the head would change them.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mpox_aism.contracts.sample import _photos
from mpox_aism.inference.backends import load_classifier

MODEL_VERSION = "92dcf8798dd7"
REFERENCE = {  # (photo, backend) -> probabilities in label order, rounded to 6 decimals
    ("astronaut.jpg", "onnxruntime"): [0.001089, 7e-06, 6.9e-05, 0.037363, 0.016184, 0.091535, 0.000183, 0.85357],
    ("grace_hopper.jpg", "onnxruntime"): [7.3e-05, 3e-06, 0.00035, 0.000648, 0.001283, 0.001294, 0.001549, 0.9948],
    ("astronaut.jpg", "torch"): [0.001089, 7e-06, 6.9e-05, 0.037363, 0.016184, 0.091535, 0.000183, 0.853569],
    ("grace_hopper.jpg", "torch"): [7.3e-05, 3e-06, 0.00035, 0.000648, 0.001283, 0.001294, 0.001549, 0.9948],
}


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_default_model_gives_the_same_probabilities(default_model, backend: str) -> None:
    photos = {k: cv2.cvtColor(v, cv2.COLOR_BGR2RGB) for k, v in sorted(_photos().items())}
    with load_classifier(backend, default_model) as classifier:
        assert classifier.meta.model_version == MODEL_VERSION, (
            "models/default was replaced: recompute REFERENCE with the new model (a deliberate change)")
        probs = classifier.predict(list(photos.values()))
    for name, p in zip(photos, probs, strict=True):
        np.testing.assert_allclose(p, REFERENCE[(name, backend)], atol=2e-6, err_msg=f"{name} on {backend}")
