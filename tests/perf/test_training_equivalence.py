"""A short training run gives the same loss curve with the custom kernels as with MindSpore's own layers."""

from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from mindspore import Tensor, nn, ops  # noqa: E402
from mnv2.ops.batchnorm import replace_batchnorm  # noqa: E402
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


def _train(fast: bool, init: dict[str, np.ndarray] | None, data, bf16: bool = False):
    """Losses along the run, the initial parameters, and the trained net's evaluation-mode logits."""
    ms.set_seed(0)
    net = _TinyMobileNet(fast)
    if fast:
        assert replace_batchnorm(net) == {"batchnorm_relu6": 4, "batchnorm": 1}
    if bf16:
        from mnv2.ops.pointwise import replace_pointwise

        assert replace_pointwise(net) == 2
    if init is not None:
        for p in net.get_parameters():
            p.set_data(Tensor(init[p.name]))
    start = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    opt = nn.Momentum(net.trainable_params(), learning_rate=0.1, momentum=0.9, weight_decay=4e-5)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss_fn), opt)
    step.set_train()
    losses = [float(step(x, y).asnumpy()) for x, y in data]
    net.set_train(False)  # evaluation uses the moving statistics the training steps accumulated
    return losses, start, net(data[0][0]).asnumpy()


def _two_batches_repeated():
    rng = np.random.default_rng(0)
    return [
        (Tensor(rng.standard_normal((4, 3, 32, 32)).astype(np.float32)),
         Tensor(rng.integers(0, 4, 4).astype(np.int32)))
        for _ in range(2)
    ] * (STEPS // 2)  # repeat two batches so the loss must fall


@pytest.mark.slow
def test_same_loss_curve(graph_mode):
    data = _two_batches_repeated()
    ref_losses, init, ref_eval = _train(False, None, data)
    fast_losses, _, fast_eval = _train(True, init, data)
    np.testing.assert_allclose(fast_losses, ref_losses, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fast_eval, ref_eval, rtol=1e-4, atol=1e-4)
    assert ref_losses[-1] < ref_losses[0]  # it trained, so equal curves mean equal gradients


@pytest.mark.slow
def test_bf16_pointwise_follows_the_float32_loss_curve(graph_mode):
    """With the 1x1 convolutions in bf16 the curve stays within bf16's rounding of float32's: each
    product carries 8 significant bits, so a step's loss moves by a fraction of a percent, not more."""
    from mnv2.ops.pointwise import bf16_supported

    if not bf16_supported():
        pytest.skip("this CPU has no AVX512-BF16")
    data = _two_batches_repeated()
    fp32_losses, init, fp32_eval = _train(True, None, data)
    bf16_losses, _, bf16_eval = _train(True, init, data, bf16=True)
    assert bf16_losses != fp32_losses  # the bf16 kernel really ran
    np.testing.assert_allclose(bf16_losses, fp32_losses, rtol=5e-3)  # seen: 0.08 %
    np.testing.assert_allclose(bf16_eval, fp32_eval, atol=1e-2 * float(np.abs(fp32_eval).max()))  # 0.15 %
    assert bf16_losses[-1] < bf16_losses[0]


@pytest.mark.slow
def test_trainer_model_same_gradients_with_kernels_swapped(graph_mode):
    """The trainer's MobileNetV2 (width 0.35, 32 px): same loss and gradients with every kernel swapped.

    Compared at one step rather than along a curve: at 32 px the last BatchNorms normalise over a
    handful of values, gradients reach ~20, and a 1e-6 difference grows chaotically within a few
    steps whichever kernel is used (the tiny net above gives the curve check). Batch 8, not 4: with
    4 values per channel one ReLU6 whose input lies within float rounding of 0 flips its mask
    between any two correct implementations and moves a whole channel's gradient (seen with the
    depthwise kernel alone too); at batch 8 the worst parameter differs by under 0.1 %.
    """
    from mnv2.loss import LabelSmoothingCrossEntropy
    from mnv2.model import MobileNetV2
    from mnv2.ops.depthwise import replace_slow_convolutions

    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((8, 3, 32, 32)).astype(np.float32))
    y = Tensor(rng.integers(0, 5, 8).astype(np.int32))

    def run(fast: bool) -> tuple[float, dict[str, np.ndarray], dict[str, np.ndarray]]:
        net = MobileNetV2(num_classes=5, width_mult=0.35, seed=3)
        if fast:
            # 52 BatchNorms: 35 followed by ReLU6 (stem, expansions, depthwise, last 1x1), 17 projections;
            # 17 of the 35 (stem, 16 expansions) applied by the depthwise kernel after them.
            assert replace_slow_convolutions(net, dense_input_grad=False) == {
                "depthwise": 17, "dense": 1, "pool": 1, "batchnorm_relu6": 35, "batchnorm": 17,
                "batchnorm_into_depthwise": 17}
        with_loss = nn.WithLossCell(net, LabelSmoothingCrossEntropy(5, 0.1))
        with_loss.set_train()
        params = net.trainable_params()
        grads = ops.GradOperation(get_by_list=True)(with_loss, params)(x, y)
        loss = float(with_loss(x, y).asnumpy())  # the second training forward: moving stats updated twice
        moving = {p.name: p.asnumpy() for p in net.get_parameters() if not p.requires_grad}
        return loss, {p.name: g.asnumpy() for p, g in zip(params, grads, strict=True)}, moving

    ref_loss, ref_grads, ref_moving = run(False)
    fast_loss, fast_grads, fast_moving = run(True)
    assert fast_loss == pytest.approx(ref_loss, rel=1e-5)
    assert fast_moving.keys() == ref_moving.keys() and len(ref_moving) == 2 * 52  # each BN's mean, variance
    for name, ref in ref_moving.items():
        np.testing.assert_allclose(fast_moving[name], ref, rtol=1e-4, atol=1e-5, err_msg=name)
    assert fast_grads.keys() == ref_grads.keys()  # same parameters, same names (checkpoint keys)
    for name, ref in ref_grads.items():
        # 1 % of the tensor's largest gradient, floored for gradients that are zero in exact arithmetic
        # (the beta of a BatchNorm whose output feeds another BatchNorm through a 1x1 conv: float noise).
        np.testing.assert_allclose(fast_grads[name], ref, atol=1e-2 * float(np.abs(ref).max()) + 1e-4,
                                   err_msg=name)
