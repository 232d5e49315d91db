"""Temperature scaling (Guo et al. 2017): one scalar, fitted on held-out logits.

A softmax of an over-confident network does not mean "probability"; the 0.6 review threshold
only means something if it does. Dividing logits by a fitted T > 0 leaves the argmax unchanged, so
accuracy and F1 do not move, while the confidence values become honest.
"""

from __future__ import annotations

import numpy as np
import torch


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, max_iter: int = 200) -> float:
    """The T minimising the negative log-likelihood of ``softmax(logits / T)`` on ``labels``."""
    if len(logits) == 0:
        raise ValueError("cannot fit a temperature on zero samples")
    z = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))

