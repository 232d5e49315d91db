import numpy as np
import pytest

from mpox_aism.training.metrics import (
    ClassFigures,
    compute_metrics,
    confusion_matrix,
    expected_calibration_error,
    per_class,
    threshold_sweep,
)


def _onehot(pred, conf, k=8):
    p = np.full((len(pred), k), (1 - conf) / (k - 1))
    p[np.arange(len(pred)), pred] = conf
    return p


def test_per_class_by_hand():
    y = np.array([0, 0, 0, 1, 1, 2])
    yp = np.array([0, 0, 1, 1, 0, 2])
    cm = confusion_matrix(y, yp)
    assert cm[0, 0] == 2 and cm[0, 1] == 1 and cm[1, 0] == 1
    pc = per_class(cm)
    assert pc["mpox"].precision == pytest.approx(2 / 3)
    assert pc["mpox"].recall == pytest.approx(2 / 3)
    assert pc["mpox"].specificity == pytest.approx(2 / 3)  # TN=2 (the 1→1 and 2→2), FP=1
    assert pc["measles"].f1 == 1.0 and pc["measles"].specificity == 1.0
    assert pc["normal"] == ClassFigures(precision=0.0, recall=0.0, specificity=1.0, f1=0.0, support=0)


def test_metrics_document_and_threshold():
    y = np.array([0, 0, 1, 1])
    probs = _onehot(np.array([0, 1, 1, 1]), 0.9)
    probs[1] = _onehot(np.array([1]), 0.5)[0]  # the wrong one is unsure
    m = compute_metrics(probs, y, threshold=0.6)
    doc = m.to_json()  # the head of metrics.json, as the README documents it
    assert set(doc) == {"labels", "n", "accuracy", "macro_f1", "per_class", "confusion_matrix", "threshold", "ece"}
    assert doc["threshold"]["per_class"]["mpox"] == {"precision": 1.0, "recall": 1.0}
    assert doc["per_class"]["normal"] == {"precision": 0.0, "recall": 0.0, "specificity": 1.0, "f1": 0.0, "support": 0}
    assert m.n == 4 and m.accuracy == 0.75
    assert m.threshold.coverage == 0.75
    assert m.threshold.accuracy_answered == 1.0
    assert np.array(m.confusion_matrix).shape == (8, 8)
    # macro-F1 over the classes present in the ground truth (mpox 2/3, chickenpox 0.8)
    assert m.macro_f1 == pytest.approx((2 / 3 + 0.8) / 2)


def test_ece():
    y = np.zeros(10, int)
    assert expected_calibration_error(_onehot(np.zeros(10, int), 1.0), y) == pytest.approx(0.0)
    assert expected_calibration_error(_onehot(np.ones(10, int), 0.9), y) == pytest.approx(0.9)


def test_sweep_counts_reviewed_mpox_as_caught():
    y = np.array([0, 0])
    probs = np.vstack([_onehot(np.array([0]), 0.9), _onehot(np.array([1]), 0.3)])
    rows = {r["threshold"]: r for r in threshold_sweep(probs, y, [0.0, 0.6])}
    assert rows[0.0]["coverage"] == 1.0 and rows[0.0]["mpox_caught_or_reviewed"] == 0.5
    assert rows[0.6]["coverage"] == 0.5 and rows[0.6]["mpox_caught_or_reviewed"] == 1.0


def test_group_bootstrap_resamples_groups_and_brackets_the_point_figure():
    from mpox_aism.training.metrics import group_bootstrap

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(8), 12)
    groups = [f"g{i // 3}" for i in range(len(y))]  # 3 photos per group
    probs = np.eye(8)[y] * 0.9 + 0.1 / 8
    wrong = rng.choice(len(y), 20, replace=False)
    probs[wrong] = np.roll(probs[wrong], 1, axis=1)
    ci = group_bootstrap(probs, y, groups, n=300)
    point = float((probs.argmax(1) == y).mean())
    assert ci["accuracy"]["low"] < point < ci["accuracy"]["high"]
    assert 0 <= ci["mpox_recall"]["low"] <= ci["mpox_recall"]["high"] <= 1
    assert ci["resamples"] == {"n": 300, "unit": "group", "groups": 32, "seed": 0}
    perfect = group_bootstrap(np.eye(8)[y], y, groups, n=50)
    assert perfect["macro_f1"] == {"low": 1.0, "high": 1.0}
