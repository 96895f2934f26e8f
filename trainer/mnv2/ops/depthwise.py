"""Fast 3x3 convolutions for MindSpore on CPU: depthwise, and dense with few input channels.

MindSpore 2.10's own CPU depthwise convolution is the bottleneck of MobileNetV2 training
(REFERENCE.md section 5), and once it is fixed the next is its dense Conv2D on the 3-channel stem
(seconds per step). ``DepthwiseConv2d`` is a drop-in for
``nn.Conv2d(c, c, 3, stride, pad_mode="pad", padding=1, group=c, has_bias=False)`` and
``Conv3x3`` for the stem's ``nn.Conv2d(3, 32, 3, 2, pad_mode="pad", padding=1, has_bias=False)``:
same parameter name (``weight``), shape and initialisation, so model-zoo checkpoints load
unchanged, with forward and backward running through ``ops.Custom(func_type="aot")`` kernels from
``csrc/depthwise.cc``.

Use in a model: build cells with ``depthwise_conv2d(c, stride, fast)``, or build the model with
nn.Conv2d and call ``replace_slow_convolutions(net, dense_input_grad=False)`` once on CPU before
making the optimizer (the trainer does the latter: ``mnv2.train.use_fast_cpu_kernels``).
"""

from __future__ import annotations

import math
from functools import cache

import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import Normal, initializer

from mnv2.model import GlobalAvgPool, WindowAvgPool
from mnv2.ops._build import build

KERNEL = 3
_SUPPORTED_STRIDES = (1, 2)
_SUPPORTED_PADDING = (0, 1)


def _out_size(size: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - KERNEL) // stride + 1


def both_gradients(backward_kernel: str):
    """The bprop of a convolution op(x, w) whose backward kernel (dy, x, w) -> (dx, dw) computes both."""
    backward = ops.Custom(
        backward_kernel,
        out_shape=lambda dy, x, w: (x, w),
        out_dtype=lambda dy, x, w: (x, w),
        func_type="aot",
    )

    def bprop(x, w, out, dout):
        dx, dw = backward(dout, x, w)
        return dx, dw

    return bprop


@cache
def _kernels(stride: int, padding: int, kind: str = "dw3x3", input_grad: bool = True) -> ops.Custom:
    """The forward Custom op, its bprop wired to the backward kernel, for one geometry.

    kind: ``dw3x3`` (depthwise) or ``conv3x3`` (dense, few input channels). With ``input_grad``
    False (dense only) the backward computes the weight gradient alone and returns zeros for the
    input, which is right only where the input needs no gradient (a network's image batch).
    Cached so every cell with the same geometry shares one primitive.
    """
    lib = build("depthwise")
    suffix = f"s{stride}_p{padding}"

    if input_grad:
        bprop = both_gradients(f"{lib}:mnv2_{kind}_bwd_{suffix}")
    else:
        if kind != "conv3x3":
            raise ValueError("input_grad=False is only offered for the dense kernel")
        wgrad = ops.Custom(
            f"{lib}:mnv2_{kind}_wgrad_{suffix}",
            out_shape=lambda dy, x, w: w,
            out_dtype=lambda dy, x, w: w,
            func_type="aot",
        )
        zeros_like = ops.ZerosLike()

        def bprop(x, w, out, dout):
            return zeros_like(x), wgrad(dout, x, w)

    def fwd_shape(x, w):
        return [x[0], w[0], _out_size(x[2], stride, padding), _out_size(x[3], stride, padding)]

    return ops.Custom(
        f"{lib}:mnv2_{kind}_fwd_{suffix}",
        out_shape=fwd_shape,
        out_dtype=lambda x, w: x,
        func_type="aot",
        bprop=bprop,
    )


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
        self._op = _kernels(stride, padding)

    def construct(self, x):
        return self._op(x, self.weight)

    def extend_repr(self) -> str:
        return f"channels={self.channels}, kernel_size=3, stride={self.stride}, padding={self.padding}"


#: Dense 3x3 convolutions with at most this many input channels go to the custom kernel (its cost
#: grows with in x out channels; MobileNetV2's stem has 3).
MAX_DENSE_IN_CHANNELS = 8


class Conv3x3(nn.Cell):
    """Dense 3x3 convolution (no bias, NCHW float32) for few input channels: the network's stem.

    MindSpore 2.10's CPU Conv2D spends seconds per step on MobileNetV2's 3 -> 32 stride-2 stem
    (about 40x PyTorch). Same ``weight`` parameter (out, in, 3, 3) and init as nn.Conv2d.
    ``input_grad=False`` skips the input gradient (returns zeros): for a layer fed the images.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, padding: int = 1, input_grad: bool = True
    ) -> None:
        super().__init__()
        if not 1 <= in_channels <= MAX_DENSE_IN_CHANNELS:
            raise ValueError(
                f"Conv3x3: in_channels must be 1..{MAX_DENSE_IN_CHANNELS}, got {in_channels}"
            )
        if out_channels < 1:
            raise ValueError(f"Conv3x3: out_channels must be positive, got {out_channels}")
        if stride not in _SUPPORTED_STRIDES:
            raise ValueError(f"Conv3x3: stride must be one of {_SUPPORTED_STRIDES}, got {stride}")
        if padding not in _SUPPORTED_PADDING:
            raise ValueError(f"Conv3x3: padding must be one of {_SUPPORTED_PADDING}, got {padding}")
        self.in_channels, self.out_channels, self.group = in_channels, out_channels, 1
        self.kernel_size = (KERNEL, KERNEL)
        self.stride, self.padding, self.input_grad = stride, padding, input_grad
        std = math.sqrt(2.0 / (KERNEL * KERNEL * out_channels))
        self.weight = Parameter(
            initializer(Normal(sigma=std), [out_channels, in_channels, KERNEL, KERNEL], ms.float32),
            name="weight",
        )
        self._op = _kernels(stride, padding, "conv3x3", input_grad)

    def construct(self, x):
        return self._op(x, self.weight)

    def extend_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, kernel_size=3, "
                f"stride={self.stride}, padding={self.padding}, input_grad={self.input_grad}")


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
    return (
        isinstance(cell, nn.Conv2d)
        and cell.group == cell.in_channels == cell.out_channels
        and _geometry(cell) is not None
    )


def _geometry(cell: nn.Conv2d) -> tuple[int, int] | None:
    """(stride, padding) when ``cell`` is a 3x3, square, undilated, bias-free NCHW 'pad' conv we support."""
    strides = cell.stride[-2:] if isinstance(cell.stride, tuple) else (cell.stride,)
    pads = cell.padding if isinstance(cell.padding, tuple) else (cell.padding,)
    dilation = cell.dilation if isinstance(cell.dilation, tuple) else (cell.dilation,)
    if len(set(strides)) != 1 or len(set(pads)) != 1 or set(dilation) != {1}:
        return None
    if tuple(cell.kernel_size) != (KERNEL, KERNEL) or cell.pad_mode != "pad" or cell.has_bias:
        return None
    if cell.data_format != "NCHW" or strides[0] not in _SUPPORTED_STRIDES:
        return None
    if pads[0] not in _SUPPORTED_PADDING:
        return None
    return strides[0], pads[0]


def is_replaceable_dense(cell: nn.Cell) -> bool:
    """True for a dense (group 1) 3x3 nn.Conv2d with few input channels that Conv3x3 computes exactly."""
    return (
        isinstance(cell, nn.Conv2d)
        and cell.group == 1
        and cell.in_channels <= MAX_DENSE_IN_CHANNELS
        and _geometry(cell) is not None
    )


def swap_cells(network: nn.Cell, match, make) -> int:
    """Replace every child cell for which ``match(cell)`` with ``make(cell)``, moving its ``weight``
    Parameter (if it has one) into the new cell; how many were replaced."""
    replaced = 0
    for _, parent in list(network.cells_and_names()):
        for child_name, child in list(parent.name_cells().items()):
            if not match(child):
                continue
            fast = make(child)
            if isinstance(getattr(child, "weight", None), Parameter):
                fast.weight = child.weight  # the same Parameter: name, value and optimizer binding kept
            if isinstance(parent, nn.SequentialCell):
                parent[int(child_name)] = fast
            else:
                setattr(parent, child_name, fast)
            replaced += 1
    return replaced


def replace_slow_convolutions(
    network: nn.Cell, dense_input_grad: bool = True, fuse_batchnorm: bool = True
) -> dict[str, int]:
    """Swap MindSpore's slow CPU layers in ``network`` for the custom kernels, in place.

    Depthwise 3x3 convs become DepthwiseConv2d and dense 3x3 convs with few input channels (the
    stem) become Conv3x3; the head's GlobalAvgPool becomes a WindowAvgPool (MindSpore's AvgPool).
    With ``fuse_batchnorm`` (the default), every nn.BatchNorm2d becomes
    ``mnv2.ops.batchnorm.FusedBatchNorm2d``, absorbing the nn.ReLU6 that follows it, and in a
    MobileNetV2 the BatchNorm + ReLU6 before each depthwise convolution is then applied by the
    depthwise kernel as it reads (``mnv2.ops.act_depthwise``). This is the
    trainer's one swap point (``mnv2.train.use_fast_cpu_kernels``). Parameters are moved, not
    copied, so names (checkpoint keys), values and optimizer bindings are unchanged; call it before
    building the optimizer or compiling. Pass ``dense_input_grad=False`` when the dense convs only
    ever see the input images (MobileNetV2's stem): their input gradient, a third of the stem's
    backward cost, is then skipped. Returns how many of each were replaced.
    """

    def make(conv: nn.Conv2d) -> Conv3x3:
        return Conv3x3(conv.in_channels, conv.out_channels, *_geometry(conv), input_grad=dense_input_grad)

    counts = {
        "dense": swap_cells(network, is_replaceable_dense, make),
        "depthwise": replace_depthwise(network),
        "pool": swap_cells(network, lambda cell: type(cell) is GlobalAvgPool, lambda _: WindowAvgPool()),
    }
    if fuse_batchnorm:
        from mnv2.ops.act_depthwise import fuse_batchnorm_into_depthwise
        from mnv2.ops.batchnorm import replace_batchnorm

        counts.update(replace_batchnorm(network))
        counts["batchnorm_into_depthwise"] = fuse_batchnorm_into_depthwise(network)
    return counts


def replace_depthwise(network: nn.Cell) -> int:
    """Swap every replaceable depthwise nn.Conv2d in ``network`` for DepthwiseConv2d, in place.

    The existing ``weight`` Parameter object moves into the new cell, so parameter names (and
    checkpoint keys), values and optimizer bindings are unchanged. Call it before building the
    optimizer or compiling. Returns the number of cells replaced.
    """
    return swap_cells(network, is_replaceable_depthwise,
                 lambda c: DepthwiseConv2d(c.in_channels, KERNEL, *_geometry(c)))
