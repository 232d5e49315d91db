"""Which pixels are skin: the classic YCrCb rule, shared by the crop stage and the close-up tools.

Chai & Ngan 1999: 133 ≤ Cr ≤ 173, 77 ≤ Cb ≤ 127. Cheap, needs no model, and keeps reddened and
lesioned skin (high Cr) that HSV hue rules tend to drop. It lives on the floor because the camera
pipeline (skin share of a crop) and training's close-up patches must measure skin the same way.
"""

from __future__ import annotations

import cv2
import numpy as np

CR_RANGE = (133, 173)
CB_RANGE = (77, 127)


def skin_mask(rgb: np.ndarray) -> np.ndarray:
    """Boolean H×W mask of skin-coloured pixels."""
    ycrcb = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    cr, cb = ycrcb[..., 1], ycrcb[..., 2]
    return (cr >= CR_RANGE[0]) & (cr <= CR_RANGE[1]) & (cb >= CB_RANGE[0]) & (cb <= CB_RANGE[1])
