"""Data the installed evaluations need at run time (the demo models' training scripts import it
from here, not the other way round)."""

from __future__ import annotations

import numpy as np


def digits_16() -> tuple[np.ndarray, np.ndarray]:
    """The scikit-learn digits as float32 [N, 16, 16] in 0..1 and their labels."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    return x.clamp(0, 1).numpy(), d.target.astype(np.int64)
