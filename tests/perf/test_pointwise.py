"""The bf16 pointwise kernel agrees with MindSpore's float32 nn.Conv2d(cin, cout, 1) in value and both
gradients, at every 1x1 shape MobileNetV2 has at widths 0.35 and 1.4 on odd image sizes.

The reference is given operands already rounded to bf16: a product of two bf16 values is exact in
float32, so the kernel and MindSpore then differ only in the order of their float32 sums, and the
tolerance can be tight. A second check against the unrounded float32 convolution bounds what bf16
costs on one layer. Where the CPU has AMX, each check runs with AMX tiles and again with AVX512-BF16
dot products only (the kernel's two instruction sets).
"""

from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from layer_loss import LayerLoss  # noqa: E402
from mindspore import Tensor, nn, ops  # noqa: E402
from mnv2.model import FIRST_CHANNELS, INVERTED_RESIDUAL_SETTINGS, LAST_CHANNELS, make_divisible  # noqa: E402
from mnv2.ops.pointwise import (  # noqa: E402
    ISA_NAMES,
    BF16Pointwise,
    bf16_isa,
    bf16_supported,
    is_replaceable_pointwise,
    replace_pointwise,
)

pytestmark = pytest.mark.skipif(not bf16_supported(), reason="this CPU has no AVX512-BF16")
BEST_ISA = bf16_isa() if bf16_supported() else 0


@pytest.fixture(params=range(1, BEST_ISA + 1), ids=lambda level: ISA_NAMES[level])
def isa(request):
    """The GEMM capped to each instruction set this CPU has, then back to the best."""
    assert bf16_isa(request.param) == request.param
    yield request.param
    bf16_isa(BEST_ISA)


def _out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1  # 3x3, padding 1


def mobilenetv2_pointwise(width: float, image: int) -> list[tuple[int, int, int]]:
    """(in channels, out channels, spatial size) of every 1x1 convolution in MobileNetV2, in order."""
    size = _out(image, 2)
    channels = make_divisible(FIRST_CHANNELS * width)
    shapes = []
    for t, c, n, s in INVERTED_RESIDUAL_SETTINGS:
        out = make_divisible(c * width)
        for i in range(n):
            hidden = round(channels * t)
            if t != 1:
                shapes.append((channels, hidden, size))  # expansion
            size = _out(size, s if i == 0 else 1)
            shapes.append((hidden, out, size))  # linear projection
            channels = out
    shapes.append((channels, make_divisible(LAST_CHANNELS * max(1.0, width)), size))
    return shapes


SHAPES = sorted(set().union(*(mobilenetv2_pointwise(w, s) for w in (0.35, 1.4) for s in (33, 97))))


def bf16(a: np.ndarray) -> np.ndarray:
    """Round float32 to bf16 (nearest, ties to even), kept as float32."""
    bits = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return bits.astype(np.uint32).view(np.float32)


def _run(conv: nn.Cell, x: np.ndarray, g: np.ndarray, weight: np.ndarray) -> list[np.ndarray]:
    """Forward output, input gradient and weight gradient for upstream gradient g."""
    conv.weight.set_data(Tensor(weight))
    grad = ops.GradOperation(get_all=True, get_by_list=True)(LayerLoss(conv), conv.trainable_params())
    (dx, _), (dw,) = grad(Tensor(x), Tensor(g))
    return [conv(Tensor(x)).asnumpy(), dx.asnumpy(), dw.asnumpy()]


def _compare(n: int, cin: int, cout: int, h: int, w: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
    weight = (rng.standard_normal((cout, cin, 1, 1)) / np.sqrt(cin)).astype(np.float32)
    g = rng.standard_normal((n, cout, h, w)).astype(np.float32)
    ours = _run(BF16Pointwise(cin, cout), x, g, weight)
    reference = nn.Conv2d(cin, cout, 1, has_bias=False)
    rounded = _run(reference, bf16(x), bf16(g), bf16(weight))
    exact = _run(reference, x, g, weight)
    names = ("forward", "input gradient", "weight gradient")
    for name, got, want, full in zip(names, ours, rounded, exact, strict=True):
        scale = np.abs(want).max()
        assert scale > 0, name  # the comparison is not vacuous
        # same products, float32 sums in another order
        np.testing.assert_allclose(got, want, atol=2e-6 * scale, err_msg=f"{name} {(n, cin, cout, h, w)}")
        # bf16's cost on one layer: operands carry 8 significant bits, errors average out in the sums
        assert np.abs(got - full).max() <= 2e-2 * np.abs(full).max(), f"{name}: bf16 far from float32"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_nn_conv2d_at_every_mobilenetv2_shape(shape, isa):
    cin, cout, size = shape
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    try:
        _compare(2, cin, cout, size, size, seed=cin + cout + size)
    finally:
        ms.set_context(mode=previous)


@pytest.mark.parametrize(
    "shape",
    [(3, 7, 5, 9, 11), (1, 1, 1, 1, 1), (4, 33, 70, 1, 1), (2, 17, 130, 5, 7), (5, 24, 16, 8, 8)],
    ids=lambda s: "x".join(map(str, s)),
)
def test_odd_channels_and_planes(shape, ms_mode, isa):
    """Odd channel counts (a zero-padded bf16 pair), planes not a multiple of 16 or 64, in both modes."""
    _compare(*shape, seed=sum(shape))


def test_shape_table_matches_the_model():
    """The table above is the trainer's model, and every one of its 1x1 convolutions is swapped."""
    from mnv2.model import MobileNetV2

    net = MobileNetV2(num_classes=10, width_mult=0.35)
    convs = [c for _, c in net.cells_and_names() if is_replaceable_pointwise(c)]
    table = [(i, o) for i, o, _ in mobilenetv2_pointwise(0.35, 33)]
    assert [(c.in_channels, c.out_channels) for c in convs] == table
    weights = {id(c.weight) for c in convs}
    assert replace_pointwise(net) == len(convs) == 34
    swapped = [c for _, c in net.cells_and_names() if isinstance(c, BF16Pointwise)]
    assert {id(c.weight) for c in swapped} == weights  # the same Parameters: names, values, optimizer
    assert not any(is_replaceable_pointwise(c) for _, c in net.cells_and_names())


def test_other_convolutions_are_not_pointwise():
    assert not is_replaceable_pointwise(nn.Conv2d(8, 8, 3, has_bias=False))
    assert not is_replaceable_pointwise(nn.Conv2d(8, 8, 1, stride=2, has_bias=False))
    assert not is_replaceable_pointwise(nn.Conv2d(8, 8, 1, has_bias=True))
    assert not is_replaceable_pointwise(nn.Conv2d(8, 8, 1, group=8, has_bias=False))
    assert not is_replaceable_pointwise(nn.Conv2d(8, 8, 1, pad_mode="pad", padding=1, has_bias=False))
