"""The CPU head's WindowAvgPool (MindSpore's AvgPool) pools as the zoo's ReduceMean does, forward and back."""

from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from mindspore import Tensor, nn, ops  # noqa: E402
from mnv2.model import GlobalAvgPool, WindowAvgPool  # noqa: E402


class _WithGradient(nn.Cell):
    def __init__(self, pool: nn.Cell) -> None:
        super().__init__()
        self.pool = pool
        self.grad = ops.GradOperation(sens_param=True)

    def construct(self, x, dy):
        return self.pool(x), self.grad(self.pool)(x, dy)


@pytest.mark.parametrize("shape", [(4, 1280, 7, 7), (2, 24, 4, 5), (3, 8, 1, 1), (1, 16, 9, 3)])
def test_same_means_and_the_same_gradient_as_reduce_mean(graph_mode, shape):
    rng = np.random.default_rng(sum(shape))
    x = Tensor(rng.standard_normal(shape).astype(np.float32))
    dy = Tensor(rng.standard_normal(shape[:2]).astype(np.float32))
    (ours, ours_dx), (zoo, zoo_dx) = (
        [t.asnumpy() for t in _WithGradient(pool)(x, dy)] for pool in (WindowAvgPool(), GlobalAvgPool()))
    assert ours.shape == zoo.shape == shape[:2]
    np.testing.assert_allclose(ours, zoo, rtol=1e-5, atol=1e-6)  # another summation order
    np.testing.assert_array_equal(ours_dx, zoo_dx)  # dy / (H * W) at every position
