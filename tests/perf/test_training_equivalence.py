"""A short training run gives the same loss curve with the custom kernel as with nn.Conv2d."""

from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from mindspore import Tensor, nn, ops  # noqa: E402
from mnv2.ops.depthwise import depthwise_conv2d  # noqa: E402

STEPS = 8


class _TinyMobileNet(nn.Cell):
    """Stem, two depthwise-separable blocks (stride 1 and 2), global pool and a dense head."""

    def __init__(self, fast: bool, classes: int = 4) -> None:
        super().__init__()

        def dw(channels: int, stride: int) -> list[nn.Cell]:
            return [depthwise_conv2d(channels, stride, fast), nn.BatchNorm2d(channels), nn.ReLU6()]

        self.features = nn.SequentialCell(
            nn.Conv2d(3, 8, 3, stride=2, pad_mode="pad", padding=1, has_bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU6(),
            *dw(8, 1),
            nn.Conv2d(8, 16, 1, has_bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU6(),
            *dw(16, 2),
            nn.Conv2d(16, 16, 1, has_bias=False),
            nn.BatchNorm2d(16),
        )
        self.dense = nn.Dense(16, classes)

    def construct(self, x):
        return self.dense(ops.mean(self.features(x), (2, 3)))


def _train(fast: bool, init: dict[str, np.ndarray] | None, data) -> tuple[list[float], dict[str, np.ndarray]]:
    ms.set_seed(0)
    net = _TinyMobileNet(fast)
    if init is not None:
        for p in net.get_parameters():
            p.set_data(Tensor(init[p.name]))
    start = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    opt = nn.Momentum(net.trainable_params(), learning_rate=0.1, momentum=0.9, weight_decay=4e-5)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss_fn), opt)
    step.set_train()
    losses = [float(step(x, y).asnumpy()) for x, y in data]
    return losses, start


@pytest.mark.slow
def test_same_loss_curve(graph_mode):
    rng = np.random.default_rng(0)
    data = [
        (Tensor(rng.standard_normal((4, 3, 32, 32)).astype(np.float32)),
         Tensor(rng.integers(0, 4, 4).astype(np.int32)))
        for _ in range(2)
    ] * (STEPS // 2)  # repeat two batches so the loss must fall
    ref_losses, init = _train(False, None, data)
    fast_losses, _ = _train(True, init, data)
    np.testing.assert_allclose(fast_losses, ref_losses, rtol=1e-4, atol=1e-5)
    assert ref_losses[-1] < ref_losses[0]  # it trained, so equal curves mean equal gradients
