"""research/site_adapt.py's site weighting: the variant measured against the product's one-more-source balance."""

from __future__ import annotations

import numpy as np
import pytest

from research.site_adapt import site_weights


def test_site_weights_keep_classes_equal_and_give_the_site_its_share() -> None:
    y = np.array([0] * 6 + [7] * 4)
    src = ["a", "a", "a", "b", "site", "site", "a", "b", "b", "site"]
    for w in (1.0, 3.0):
        wt = site_weights(y, src, site="site", site_weight=w)
        assert wt.mean() == pytest.approx(1.0)
        assert wt[y == 0].sum() == pytest.approx(wt[y == 7].sum())  # every class the same total
        mpox = wt[y == 0]
        site_share = mpox[[4, 5]].sum() / mpox.sum()
        assert site_share == pytest.approx(w / (2 + w))  # two dev sources of mpox beside the site
