"""Label-smoothed cross-entropy with the zoo's off-value s/(C-1) (not s/C)."""

from __future__ import annotations

import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.common import dtype as mstype


def smoothed_targets(labels: np.ndarray, num_classes: int, smoothing: float) -> np.ndarray:
    """The target distribution the loss uses, as numpy (for tests and documentation)."""
    off = smoothing / (num_classes - 1)
    targets = np.full((len(labels), num_classes), off, dtype=np.float32)
    targets[np.arange(len(labels)), labels] = 1.0 - smoothing
    return targets


class LabelSmoothingCrossEntropy(nn.Cell):
    """Mean cross-entropy against one-hot targets of on-value 1-s and off-value s/(C-1)."""

    def __init__(self, num_classes: int, smoothing: float = 0.1):
        super().__init__()
        self.num_classes = num_classes
        self.on_value = Tensor(1.0 - smoothing, mstype.float32)
        self.off_value = Tensor(smoothing / (num_classes - 1), mstype.float32)
        self.onehot = ops.OneHot()
        self.ce = nn.SoftmaxCrossEntropyWithLogits(sparse=False, reduction="mean")
        self.cast = ops.Cast()

    def construct(self, logits, labels):
        targets = self.onehot(labels, self.num_classes, self.on_value, self.off_value)
        return self.ce(self.cast(logits, mstype.float32), targets)
