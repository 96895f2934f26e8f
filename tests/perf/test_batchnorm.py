"""The fused BatchNorm (+ ReLU6) kernel agrees with MindSpore's nn.BatchNorm2d (+ nn.ReLU6).

Values, gradients for the input, gamma and beta, and the moving statistics, at every BatchNorm
shape MobileNetV2 has at widths 0.35 and 1.4 on odd image sizes, in training and evaluation.
"""

from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from layer_loss import LayerLoss  # noqa: E402
from mindspore import Tensor, nn, ops  # noqa: E402
from mnv2.model import FIRST_CHANNELS, INVERTED_RESIDUAL_SETTINGS, LAST_CHANNELS, make_divisible  # noqa: E402
from mnv2.ops.batchnorm import FusedBatchNorm2d, replace_batchnorm  # noqa: E402


def _out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1  # 3x3, padding 1


def mobilenetv2_batchnorms(width: float, image: int) -> set[tuple[int, int, bool]]:
    """(channels, spatial size, followed by ReLU6) of every BatchNorm in MobileNetV2 (paper's table)."""
    size = _out(image, 2)
    channels = make_divisible(FIRST_CHANNELS * width)
    shapes = {(channels, size, True)}
    for t, c, n, s in INVERTED_RESIDUAL_SETTINGS:
        out = make_divisible(c * width)
        for i in range(n):
            hidden = round(channels * t)
            if t != 1:
                shapes.add((hidden, size, True))  # expansion 1x1
            size = _out(size, s if i == 0 else 1)
            shapes.add((hidden, size, True))  # depthwise 3x3
            shapes.add((out, size, False))  # linear projection
            channels = out
    shapes.add((make_divisible(LAST_CHANNELS * max(1.0, width)), size, True))
    return shapes


SHAPES = sorted(set().union(*(mobilenetv2_batchnorms(w, s) for w in (0.35, 1.4) for s in (33, 97))))


def test_shape_table_matches_the_model():
    """The table above is the trainer's model: 52 BatchNorms, 35 of them followed by ReLU6."""
    from mnv2.model import MobileNetV2

    net = MobileNetV2(num_classes=10, width_mult=0.35)
    assert replace_batchnorm(net) == {"batchnorm_relu6": 35, "batchnorm": 17}
    fused = [c for _, c in net.cells_and_names() if isinstance(c, FusedBatchNorm2d)]
    table = {(c, r) for c, _, r in mobilenetv2_batchnorms(0.35, 33)}
    assert {(c.num_features, c.relu6) for c in fused} == table


def _run(layer: nn.Cell, bn, x: Tensor, g: Tensor, training: bool) -> dict[str, np.ndarray]:
    layer.set_train(training)
    loss = LayerLoss(layer)
    loss.set_train(training)
    grad = ops.GradOperation(get_all=True, get_by_list=True)(loss, [bn.gamma, bn.beta])
    (dx, _), (dgamma, dbeta) = grad(x, g)  # one forward: the moving statistics move once
    return {"y": layer(x).asnumpy(), "dx": dx.asnumpy(), "dgamma": dgamma.asnumpy(), "dbeta": dbeta.asnumpy(),
            "moving_mean": bn.moving_mean.asnumpy(), "moving_variance": bn.moving_variance.asnumpy()}


def _compare(
    batch: int, channels: int, size: int, relu6: bool, training: bool, seed: int
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = {
        "gamma": rng.uniform(0.5, 1.5, channels), "beta": rng.normal(0.5, 1.0, channels),
        "moving_mean": rng.normal(0, 1, channels), "moving_variance": rng.uniform(0.5, 2, channels),
    }
    ref_bn, fast_bn = nn.BatchNorm2d(channels), nn.BatchNorm2d(channels)
    for bn in (ref_bn, fast_bn):
        for name, value in params.items():
            getattr(bn, name).set_data(Tensor(value.astype(np.float32)))
    ref = nn.SequentialCell([ref_bn, nn.ReLU6()]) if relu6 else ref_bn
    fast = FusedBatchNorm2d(fast_bn, relu6=relu6)
    # A mean far from zero and a spread of ~2 (conv outputs), so ReLU6 clips on both sides.
    x = Tensor((rng.normal(1.0, 2.0, (batch, channels, size, size)) + rng.normal(0, 3, (1, channels, 1, 1)))
               .astype(np.float32))
    g = Tensor(rng.standard_normal((batch, channels, size, size)).astype(np.float32))
    want, got = _run(ref, ref_bn, x, g, training), _run(fast, fast, x, g, training)
    for key, expected in want.items():
        if key == "moving_variance" and training and batch * size * size == 1:
            # One value per channel has no unbiased variance: MindSpore stores NaN, which would poison
            # every later evaluation; the kernel takes the biased one (0). Checked by the caller.
            assert np.isnan(expected).all()
            continue
        # Sums over up to 2 x 49 x 49 values: float32 rounding differs with the order of summation.
        scale = float(np.abs(expected).max()) or 1.0
        where = f"{key} {batch}x{channels}x{size}x{size} relu6={relu6} train={training}"
        np.testing.assert_allclose(got[key], expected, rtol=1e-4, atol=2e-5 * scale, err_msg=where)
    return got


def test_every_mobilenetv2_shape(pynative):
    """Training (batch statistics) at every shape; evaluation (moving statistics) at every fourth."""
    assert len(SHAPES) > 60
    for i, (channels, size, relu6) in enumerate(SHAPES):
        _compare(2, channels, size, relu6, training=True, seed=i)
        if i % 4 == 0:
            _compare(2, channels, size, relu6, training=False, seed=i)


@pytest.mark.parametrize("relu6", [False, True])
def test_graph_mode_and_edge_shapes(graph_mode, relu6):
    """GRAPH_MODE (the trainer's), one value per channel (batch 1 of 1x1), and a large plane.

    65x65 is above the kernel's plane-wise limit (64x64), so it takes the channel-wise path that
    MobileNetV2's 112x112 layers take; every shape of test_every_mobilenetv2_shape is plane-wise.
    """
    single = _compare(1, 3, 1, relu6, training=True, seed=1)
    assert np.isfinite(single["moving_variance"]).all()
    for batch, channels, size in ((3, 5, 1), (4, 7, 65)):
        _compare(batch, channels, size, relu6, training=True, seed=batch)
    _compare(4, 7, 65, relu6, training=False, seed=9)


def _levels_batch(rng, batch: int, channels: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, gamma, beta) whose normalised values keep 0.15 away from ReLU6's edges 0 and 6.

    x takes integer levels plus a little noise; gamma and beta put both edges half-way between two
    levels' outputs. On millions of values, plain random data would land within float32 rounding of
    an edge somewhere, and the two kernels' gradient masks would then differ there.
    """
    shape = (batch, channels, size, size)
    x = rng.integers(-4, 5, shape) + rng.uniform(-0.01, 0.01, shape)
    mean, std = x.mean(axis=(0, 2, 3)), np.sqrt(x.var(axis=(0, 2, 3)) + 1e-5)
    step = 6.0 / rng.integers(3, 8, channels)  # output distance between adjacent levels
    gamma = step * std
    offset = step * (rng.integers(-3, 3, channels) + 0.5)  # output of the level at the mean, off the grid
    beta = offset + step * mean
    y = gamma[:, None, None] * (x - mean[:, None, None]) / std[:, None, None] + beta[:, None, None]
    assert min(np.abs(y).min(), np.abs(y - 6).min()) > 0.15
    return x.astype(np.float32), gamma.astype(np.float32), beta.astype(np.float32)


@pytest.mark.parametrize(
    ("batch", "channels", "size"), [(32, 96, 56), (16, 16, 184)], ids=["plane-wise", "channel-wise"]
)
def test_large_tensors_streaming_stores(pynative, batch, channels, size):
    """Outputs of 32 MiB and more (both cases; 16 with AVX-512) are written with streaming stores, in
    both sweep orders."""
    rng = np.random.default_rng(size)
    x, gamma, beta = _levels_batch(rng, batch, channels, size)
    g = Tensor(rng.standard_normal(x.shape).astype(np.float32))
    for relu6 in (False, True):
        ref_bn, fast_bn = nn.BatchNorm2d(channels), nn.BatchNorm2d(channels)
        for bn in (ref_bn, fast_bn):
            bn.gamma.set_data(Tensor(gamma))
            bn.beta.set_data(Tensor(beta))
        ref = nn.SequentialCell([ref_bn, nn.ReLU6()]) if relu6 else ref_bn
        fast = FusedBatchNorm2d(fast_bn, relu6=relu6)
        want, got = _run(ref, ref_bn, Tensor(x), g, True), _run(fast, fast, Tensor(x), g, True)
        if relu6:
            assert 0.05 < (want["y"] == 0).mean() < 0.95 and (want["y"] == 6).any()  # clips on both sides
        for key, expected in want.items():
            scale = float(np.abs(expected).max()) or 1.0
            np.testing.assert_allclose(got[key], expected, rtol=1e-4, atol=2e-5 * scale,
                                       err_msg=f"{key} {x.shape} relu6={relu6}")


def test_rejects_what_it_does_not_compute():
    with pytest.raises(ValueError, match="use_batch_statistics"):
        FusedBatchNorm2d(nn.BatchNorm2d(4, use_batch_statistics=True))
    net = nn.SequentialCell([nn.BatchNorm2d(4, use_batch_statistics=False), nn.ReLU6()])
    assert replace_batchnorm(net) == {"batchnorm_relu6": 0, "batchnorm": 0}  # left to MindSpore
