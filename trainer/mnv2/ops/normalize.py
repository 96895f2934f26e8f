"""The input normalization of the zoo's pipeline, as a custom CPU kernel applied to uint8 batches.

The trainer's CPU loop reads batches that its pipeline left as uint8 (``data.create_train_dataset``
with ``normalized=False``) and normalizes them with ``csrc/normalize.cc``: the same float32 values
as ``vision.Normalize(MEAN, STD)`` then ``HWC2CHW``, with less pipeline CPU and a quarter of the
memory for the batches decoded ahead.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from mindspore import Tensor, ops
from mindspore.common import dtype as mstype

from mnv2.data import MEAN, STD
from mnv2.ops._build import build


@cache
def _kernel() -> tuple[ops.Custom, Tensor, Tensor]:
    op = ops.Custom(
        f"{build('normalize')}:mnv2_normalize_u8",
        out_shape=lambda x, mean, std: x,
        out_dtype=lambda x, mean, std: mstype.float32,
        func_type="aot",
    )
    return op, Tensor(np.array(MEAN, np.float32)), Tensor(np.array(STD, np.float32))


def normalize_images(images: Tensor) -> Tensor:
    """uint8 (N, 3, H, W) images -> float32 (x - MEAN) / STD per channel."""
    op, mean, std = _kernel()
    return op(images, mean, std)
