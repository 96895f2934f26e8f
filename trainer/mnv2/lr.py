"""The per-step learning rate: linear warmup, then cosine decay (REFERENCE §1). Pure numpy.

The optimizer receives the whole array and indexes it by its global step, so a resumed run that
restores the global step continues on exactly the same schedule.
"""

from __future__ import annotations

import math

import numpy as np


def warmup_cosine_lr(
    *, lr_init: float, lr_max: float, lr_end: float, warmup_epochs: int, epochs: int, steps_per_epoch: int
) -> np.ndarray:
    """lr[i] for every step i of the run (float32, length epochs*steps_per_epoch).

    i < warm: lr_init + (lr_max-lr_init)*i/warm;
    else:     lr_end + (lr_max-lr_end)*(1+cos(pi*(i-warm)/(total-warm)))/2.
    """
    if steps_per_epoch < 1 or epochs < 1:
        raise ValueError("steps_per_epoch and epochs must be at least 1")
    total = steps_per_epoch * epochs
    warm = steps_per_epoch * warmup_epochs
    lr = np.empty(total, dtype=np.float64)
    for i in range(total):
        if i < warm:
            lr[i] = lr_init + (lr_max - lr_init) * i / warm
        else:
            progress = (i - warm) / (total - warm) if total > warm else 0.0
            lr[i] = lr_end + (lr_max - lr_end) * (1.0 + math.cos(math.pi * progress)) / 2.0
    return lr.astype(np.float32)
