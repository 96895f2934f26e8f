"""The custom depthwise kernels agree with MindSpore's nn.Conv2d(group=c) in value and gradients."""

from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from layer_loss import LayerLoss  # noqa: E402
from mindspore import Tensor, nn, ops  # noqa: E402
from mnv2.ops.depthwise import (  # noqa: E402
    Conv3x3,
    DepthwiseConv2d,
    depthwise_conv2d,
    reference_depthwise,
    replace_slow_convolutions,
)

ATOL = 1e-4

# (batch, channels, height, width, stride, padding): odd and even sizes, non-square, tiny planes.
SHAPES = [
    (1, 1, 1, 1, 1, 1),
    (1, 3, 2, 2, 2, 1),
    (2, 5, 7, 9, 1, 1),
    (3, 4, 8, 11, 2, 1),
    (4, 3, 9, 9, 2, 1),
    (1, 3, 9, 10, 2, 0),
    (2, 2, 6, 5, 1, 0),
    (4, 8, 16, 16, 2, 1),
    (2, 16, 15, 17, 1, 1),
    # Output 48 wide and more: the forward kernels' row-by-row path (narrower outputs go flat).
    (1, 2, 50, 51, 1, 1),
    (2, 2, 97, 99, 2, 1),
    (1, 2, 52, 50, 1, 0),
    (1, 3, 98, 97, 2, 0),
    # The backward goes in blocks of 16 channels: several blocks, the last one partial.
    (2, 37, 7, 7, 1, 1),
    (2, 21, 15, 14, 2, 1),
    (1, 19, 26, 25, 2, 0),
    (1, 21, 14, 13, 1, 0),
    (1, 18, 56, 56, 1, 1),
]


def _random_shapes(count: int, seed: int) -> list[tuple[int, int, int, int, int, int]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        stride, padding = int(rng.integers(1, 3)), int(rng.integers(0, 2))
        low = 3 - 2 * padding  # the kernel must fit in the padded input
        out.append((int(rng.integers(1, 5)), int(rng.integers(1, 9)), int(rng.integers(low, 20)),
                    int(rng.integers(low, 20)), stride, padding))
    return out


def _run(conv: nn.Cell, x: Tensor, g: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward output, input gradient and weight gradient for upstream gradient g."""
    y = conv(x).asnumpy()
    loss = LayerLoss(conv)
    grad = ops.GradOperation(get_all=True, get_by_list=True)(loss, conv.trainable_params())
    (dx, _), (dw,) = grad(x, g)
    return y, dx.asnumpy(), dw.asnumpy()


def _compare(shape: tuple[int, int, int, int, int, int], seed: int, out_channels: int | None = None) -> None:
    """Custom vs MindSpore kernel; depthwise unless out_channels is given (then dense Conv3x3)."""
    n, c, h, w, stride, padding = shape
    rng = np.random.default_rng(seed)
    if out_channels is None:
        fast, ref = DepthwiseConv2d(c, 3, stride, padding), reference_depthwise(c, stride, padding)
        weight = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    else:
        fast = Conv3x3(c, out_channels, stride, padding)
        ref = nn.Conv2d(c, out_channels, 3, stride, pad_mode="pad", padding=padding, has_bias=False)
        weight = rng.standard_normal((out_channels, c, 3, 3)).astype(np.float32)
    cout = c if out_channels is None else out_channels
    fast.weight.set_data(Tensor(weight))
    ref.weight.set_data(Tensor(weight))
    x = Tensor(rng.standard_normal((n, c, h, w)).astype(np.float32))
    oh, ow = (h + 2 * padding - 3) // stride + 1, (w + 2 * padding - 3) // stride + 1
    g = Tensor(rng.standard_normal((n, cout, oh, ow)).astype(np.float32))
    y_fast, dx_fast, dw_fast = _run(fast, x, g)
    y_ref, dx_ref, dw_ref = _run(ref, x, g)
    assert y_fast.shape == y_ref.shape == (n, cout, oh, ow)
    np.testing.assert_allclose(y_fast, y_ref, atol=ATOL, err_msg=f"forward {shape}")
    np.testing.assert_allclose(dx_fast, dx_ref, atol=ATOL, err_msg=f"input gradient {shape}")
    # The weight gradient sums n*oh*ow products: scale the tolerance with that count.
    np.testing.assert_allclose(dw_fast, dw_ref, atol=ATOL * max(1.0, n * oh * ow / 64), rtol=1e-5,
                               err_msg=f"weight gradient {shape}")
    assert np.abs(dx_ref).max() > 0 and np.abs(dw_ref).max() > 0  # the comparison is not vacuous


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_nn_conv2d(shape, graph_mode):
    _compare(shape, seed=sum(shape))


@pytest.mark.parametrize("shape", _random_shapes(6, seed=8), ids=lambda s: "x".join(map(str, s)))
def test_matches_nn_conv2d_random_shapes(shape, graph_mode):
    _compare(shape, seed=1)


@pytest.mark.parametrize(
    "shape", [(2, 5, 7, 9, 1, 1), (3, 4, 8, 11, 2, 1)], ids=lambda s: "x".join(map(str, s))
)
def test_matches_in_both_modes(shape, ms_mode):
    _compare(shape, seed=3)


@pytest.mark.parametrize(
    ("shape", "out_channels"),
    [((2, 3, 17, 16, 2, 1), 8), ((1, 1, 5, 7, 1, 1), 3), ((3, 4, 9, 9, 2, 0), 5), ((2, 2, 6, 8, 1, 0), 4)],
    ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v),
)
def test_dense_stem_kernel_matches_nn_conv2d(shape, out_channels, graph_mode):
    _compare(shape, seed=5, out_channels=out_channels)


def test_dense_kernel_without_input_gradient(graph_mode):
    """input_grad=False: same forward and weight gradient, zeros for the input."""
    rng = np.random.default_rng(2)
    weight = Tensor(rng.standard_normal((6, 3, 3, 3)).astype(np.float32))
    x = Tensor(rng.standard_normal((2, 3, 11, 12)).astype(np.float32))
    g = Tensor(rng.standard_normal((2, 6, 6, 6)).astype(np.float32))
    full, stem = Conv3x3(3, 6, 2, 1), Conv3x3(3, 6, 2, 1, input_grad=False)
    full.weight.set_data(weight)
    stem.weight.set_data(weight)
    y_full, dx_full, dw_full = _run(full, x, g)
    y_stem, dx_stem, dw_stem = _run(stem, x, g)
    np.testing.assert_array_equal(y_stem, y_full)
    np.testing.assert_allclose(dw_stem, dw_full, rtol=1e-6)
    assert not dx_stem.any() and dx_full.any()


def test_parameters_match_nn_conv2d_for_checkpoints():
    """Same parameter name, shape and initial scale as the zoo's nn.Conv2d, so checkpoints load."""
    fast, ref = DepthwiseConv2d(96, stride=2), reference_depthwise(96, 2)
    [pf], [pr] = fast.get_parameters(), ref.get_parameters()
    assert pf.name == pr.name == "weight"
    assert pf.shape == pr.shape == (96, 1, 3, 3)
    assert pf.dtype == pr.dtype
    expected = np.sqrt(2.0 / (9 * 96))
    assert abs(pf.asnumpy().std() - expected) < 0.15 * expected


def test_factory_chooses_kernel():
    assert isinstance(depthwise_conv2d(8, 1, fast=True), DepthwiseConv2d)
    slow = depthwise_conv2d(8, 2, fast=False)
    assert isinstance(slow, nn.Conv2d)
    assert slow.group == 8 and slow.stride == (2, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": 4, "kernel_size": 5}, "kernel_size"),
        ({"channels": 4, "stride": 3}, "stride"),
        ({"channels": 4, "padding": 2}, "padding"),
        ({"channels": 0}, "channels"),
    ],
)
def test_rejects_unsupported_geometry(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DepthwiseConv2d(**kwargs)


class _Block(nn.Cell):
    def __init__(self) -> None:
        super().__init__()
        self.seq = nn.SequentialCell([reference_depthwise(4, 2), nn.ReLU6()])
        self.dw = reference_depthwise(4, 1)
        self.grouped = nn.Conv2d(4, 8, 3, group=4, pad_mode="pad", padding=1, has_bias=False)  # not depthwise
        self.dilated = nn.Conv2d(4, 4, 3, group=4, pad_mode="pad", padding=1, dilation=2, has_bias=False)

    def construct(self, x):
        return self.grouped(self.dw(self.seq(x))) + self.dilated(self.seq(x))[:, :1].sum()


def test_replace_depthwise_keeps_parameters_and_output(graph_mode):
    from mnv2.ops.depthwise import replace_depthwise

    block = _Block()
    x = Tensor(np.random.default_rng(0).standard_normal((2, 4, 12, 12)).astype(np.float32))
    expected = block(x).asnumpy()
    before = {name: p.asnumpy().copy() for name, p in block.parameters_dict().items()}
    assert replace_depthwise(block) == 2
    assert isinstance(block.seq[0], DepthwiseConv2d) and isinstance(block.dw, DepthwiseConv2d)
    assert isinstance(block.grouped, nn.Conv2d) and isinstance(block.dilated, nn.Conv2d)
    after = {name: p.asnumpy() for name, p in block.parameters_dict().items()}
    assert after.keys() == before.keys()
    assert all(np.array_equal(after[k], before[k]) for k in before)
    fresh = nn.SequentialCell([block])  # a new top-level cell, so graph mode compiles the new kernels
    np.testing.assert_allclose(fresh(x).asnumpy(), expected, atol=ATOL)


def test_replace_slow_convolutions_swaps_stem_and_depthwise(graph_mode):
    stem = nn.Conv2d(3, 8, 3, 2, pad_mode="pad", padding=1, has_bias=False)
    wide = nn.Conv2d(16, 8, 3, 1, pad_mode="pad", padding=1, has_bias=False)  # too many inputs
    net = nn.SequentialCell([stem, reference_depthwise(8, 1), nn.Conv2d(8, 16, 1, has_bias=False), wide])
    x = Tensor(np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32))
    expected = net(x).asnumpy()
    counts = {"depthwise": 1, "dense": 1, "pool": 0, "batchnorm": 0, "batchnorm_relu6": 0,
              "batchnorm_into_depthwise": 0}
    assert replace_slow_convolutions(net) == counts
    assert isinstance(net[0], Conv3x3) and isinstance(net[1], DepthwiseConv2d)
    assert isinstance(net[3], nn.Conv2d) and not isinstance(net[3], Conv3x3)
    assert replace_slow_convolutions(net) == dict.fromkeys(counts, 0)  # idempotent
    np.testing.assert_allclose(nn.SequentialCell([net])(x).asnumpy(), expected, atol=ATOL)
