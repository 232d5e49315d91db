import numpy as np
import pytest

from mpox_aism.contracts.decision import softmax
from mpox_aism.training.calibration import fit_temperature


def test_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2.0, (4000, 8))
    probs = softmax(true_logits)
    labels = np.array([rng.choice(8, p=p) for p in probs])
    # a network twice as confident as it should be
    t = fit_temperature(true_logits * 2.0, labels)
    assert t == pytest.approx(2.0, rel=0.1)


def test_softmax_keeps_argmax():
    z = np.array([[1.0, 3.0, 2.0]])
    assert softmax(z, 5.0).argmax() == softmax(z, 0.5).argmax() == 1
    np.testing.assert_allclose(softmax(z, 2.0).sum(), 1.0)
