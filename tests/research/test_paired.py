"""The paired group bootstrap (research/paired.py): B − A with an interval of the difference."""

import numpy as np
import pytest

from research.paired import PairedSet, paired_group_bootstrap


def test_paired_difference_is_zero_for_one_model_and_signed_for_a_better_one():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(8), 30)
    groups = [str(i // 3) for i in range(len(y))]
    a = np.where(rng.random(len(y)) < 0.6, y, (y + 1) % 8)  # right 60 % of the time
    b = np.where(rng.random(len(y)) < 0.3, y, a)  # a, with some of its errors fixed
    same = {d.metric: d for d in paired_group_bootstrap([PairedSet(a, a, y, groups)], n=200)}
    assert all(d.diff == d.low == d.high == 0 for d in same.values())
    better = {d.metric: d for d in paired_group_bootstrap([PairedSet(a, b, y, groups)], n=200)}
    f1 = better["macro_f1"]
    assert f1.diff == pytest.approx(f1.b - f1.a, abs=1e-3) and 0 < f1.low <= f1.diff <= f1.high
    assert better["accuracy"].a == pytest.approx((a == y).mean(), abs=1e-4)


def test_paired_difference_over_sets_is_their_mean():
    y = np.repeat(np.arange(8), 4)
    groups = [str(i) for i in range(len(y))]
    wrong = (y + 1) % 8
    sets = [PairedSet(wrong, y, y, groups), PairedSet(y, y, y, groups)]  # +1 accuracy on one, 0 on the other
    acc = {d.metric: d for d in paired_group_bootstrap(sets, n=50)}["accuracy"]
    assert acc.a == 0.5 and acc.b == 1.0 and acc.diff == 0.5
