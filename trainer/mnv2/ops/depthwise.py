"""Fast 3x3 depthwise convolution for MindSpore on CPU.

MindSpore 2.10's own CPU depthwise convolution is the bottleneck of MobileNetV2 training
(REFERENCE.md section 5). ``DepthwiseConv2d`` is a drop-in for
``nn.Conv2d(c, c, 3, stride, pad_mode="pad", padding=1, group=c, has_bias=False)``: same
parameter name (``weight``), shape ``(c, 1, 3, 3)`` and initialisation, so model-zoo checkpoints
load unchanged, with forward and backward running through ``ops.Custom(func_type="aot")`` kernels
from ``csrc/depthwise.cc``.
"""

from __future__ import annotations

import math
from functools import cache

import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import Normal, initializer

from mnv2.ops._build import build

KERNEL = 3
_SUPPORTED_STRIDES = (1, 2)
_SUPPORTED_PADDING = (0, 1)


def _out_size(size: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - KERNEL) // stride + 1


@cache
def _kernels(stride: int, padding: int) -> tuple[ops.Custom, ops.Custom]:
    """The forward Custom op (its bprop wired to the backward op) for one stride and padding.

    Cached so every cell with the same geometry shares one primitive pair.
    """
    lib = build("depthwise")
    suffix = f"s{stride}_p{padding}"

    def bwd_shape(dy, x, w):
        return x, w

    def bwd_dtype(dy, x, w):
        return x, w

    backward = ops.Custom(
        f"{lib}:mnv2_dw3x3_bwd_{suffix}", out_shape=bwd_shape, out_dtype=bwd_dtype, func_type="aot"
    )

    def fwd_shape(x, w):
        return [x[0], x[1], _out_size(x[2], stride, padding), _out_size(x[3], stride, padding)]

    def fwd_dtype(x, w):
        return x

    def bprop(x, w, out, dout):
        dx, dw = backward(dout, x, w)
        return dx, dw

    forward = ops.Custom(
        f"{lib}:mnv2_dw3x3_fwd_{suffix}",
        out_shape=fwd_shape,
        out_dtype=fwd_dtype,
        func_type="aot",
        bprop=bprop,
    )
    return forward, backward


class DepthwiseConv2d(nn.Cell):
    """3x3 depthwise convolution (NCHW, float32) through the custom C++ kernels.

    Args:
        channels: input and output channels (one filter per channel).
        kernel_size: must be 3 (the only size MobileNetV2 uses).
        stride: 1 or 2.
        padding: 0 or 1 (zero padding on every side).
    """

    def __init__(self, channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        if kernel_size != KERNEL:
            raise ValueError(f"DepthwiseConv2d: kernel_size must be {KERNEL}, got {kernel_size}")
        if stride not in _SUPPORTED_STRIDES:
            raise ValueError(f"DepthwiseConv2d: stride must be one of {_SUPPORTED_STRIDES}, got {stride}")
        if padding not in _SUPPORTED_PADDING:
            raise ValueError(f"DepthwiseConv2d: padding must be one of {_SUPPORTED_PADDING}, got {padding}")
        if channels < 1:
            raise ValueError(f"DepthwiseConv2d: channels must be positive, got {channels}")
        self.channels = channels
        # nn.Conv2d's attribute names, so code that inspects convolutions (initialisers) keeps working.
        self.in_channels = self.out_channels = self.group = channels
        self.kernel_size = (KERNEL, KERNEL)
        self.stride = stride
        self.padding = padding
        # The model zoo's conv init: N(0, sqrt(2 / (k * k * out_channels))).
        std = math.sqrt(2.0 / (KERNEL * KERNEL * channels))
        self.weight = Parameter(
            initializer(Normal(sigma=std), [channels, 1, KERNEL, KERNEL], ms.float32), name="weight"
        )
        self._op, _ = _kernels(stride, padding)

    def construct(self, x):
        return self._op(x, self.weight)

    def extend_repr(self) -> str:
        return f"channels={self.channels}, kernel_size=3, stride={self.stride}, padding={self.padding}"


def reference_depthwise(channels: int, stride: int, padding: int = 1) -> nn.Conv2d:
    """MindSpore's own depthwise convolution with the same parameter layout (the slow reference)."""
    std = math.sqrt(2.0 / (KERNEL * KERNEL * channels))
    return nn.Conv2d(
        channels,
        channels,
        KERNEL,
        stride=stride,
        pad_mode="pad",
        padding=padding,
        group=channels,
        has_bias=False,
        weight_init=Normal(sigma=std),
    )


def depthwise_conv2d(channels: int, stride: int, fast: bool = True, padding: int = 1) -> nn.Cell:
    """The depthwise 3x3 convolution to use: the custom kernel on CPU when ``fast``, else nn.Conv2d.

    Off CPU (GPU, Ascend) the vendor kernels are fast already, so nn.Conv2d is returned regardless.
    """
    if fast and ms.get_context("device_target") == "CPU":
        return DepthwiseConv2d(channels, KERNEL, stride, padding)
    return reference_depthwise(channels, stride, padding)


def is_replaceable_depthwise(cell: nn.Cell) -> bool:
    """True for an nn.Conv2d that DepthwiseConv2d computes exactly (3x3, group = channels, no bias)."""
    if not isinstance(cell, nn.Conv2d):
        return False
    stride = cell.stride[-1] if isinstance(cell.stride, tuple) else cell.stride
    padding = cell.padding if isinstance(cell.padding, int) else None
    if isinstance(cell.padding, tuple) and len(set(cell.padding)) == 1:
        padding = cell.padding[0]
    square_stride = not isinstance(cell.stride, tuple) or len(set(cell.stride[-2:])) == 1
    dilation = cell.dilation if isinstance(cell.dilation, tuple) else (cell.dilation,)
    return (
        cell.group == cell.in_channels == cell.out_channels
        and tuple(cell.kernel_size) == (KERNEL, KERNEL)
        and cell.pad_mode == "pad"
        and padding in _SUPPORTED_PADDING
        and square_stride
        and stride in _SUPPORTED_STRIDES
        and set(dilation) == {1}
        and not cell.has_bias
        and cell.data_format == "NCHW"
    )


def replace_depthwise(network: nn.Cell) -> int:
    """Swap every replaceable depthwise nn.Conv2d in ``network`` for DepthwiseConv2d, in place.

    The existing ``weight`` Parameter object moves into the new cell, so parameter names (and
    checkpoint keys), values and optimizer bindings are unchanged. Call it before building the
    optimizer or compiling. Returns the number of cells replaced.
    """
    replaced = 0
    for _, parent in list(network.cells_and_names()):
        for child_name, child in list(parent.name_cells().items()):
            if not is_replaceable_depthwise(child):
                continue
            stride = child.stride[-1] if isinstance(child.stride, tuple) else child.stride
            padding = child.padding if isinstance(child.padding, int) else child.padding[0]
            fast = DepthwiseConv2d(child.in_channels, KERNEL, stride, padding)
            fast.weight = child.weight
            if isinstance(parent, nn.SequentialCell):
                parent[int(child_name)] = fast
            else:
                setattr(parent, child_name, fast)
            replaced += 1
    return replaced
