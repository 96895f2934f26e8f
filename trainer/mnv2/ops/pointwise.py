"""Pointwise (1x1) convolutions with bf16 products and fp32 sums on CPUs with AVX512-BF16.

With the project's depthwise, stem and BatchNorm kernels in, MindSpore's float32 1x1 convolutions
are half of a MobileNetV2 training step on CPU, and MindSpore 2.10's CPU Conv2D takes float32 only.
``BF16Pointwise`` is a drop-in for ``nn.Conv2d(cin, cout, 1, has_bias=False)`` (same ``weight``
parameter, shape and initialisation, so checkpoints load unchanged) whose forward and both
gradients round their operands to bf16 and sum in float32 (``csrc/pointwise.cc``): mixed precision
as PyTorch's CPU autocast does it for convolutions. Parameters, activations and every other layer
stay float32.

Opt-in (``bf16_pointwise``): results differ from float32 by bf16's rounding (8 bits of mantissa),
so the trainer keeps float32 unless asked; ``bf16_supported()`` says whether this CPU can. The
GEMM uses AMX tiles where the CPU has them and Linux grants them, AVX512-BF16 dot products
elsewhere (``bf16_isa()``); both sum each output in the same fixed order per thread count.
"""

from __future__ import annotations

import ctypes
import math
from functools import cache

import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import Normal, initializer

from mnv2.ops._build import build
from mnv2.ops.depthwise import both_gradients, swap_cells


@cache
def bf16_supported() -> bool:
    """True when this CPU has AVX512-BF16 (asked of the built library, so it is the CPU it runs on)."""
    return bool(ctypes.CDLL(build("pointwise")).mnv2_pw_supported())


#: The instructions the bf16 GEMM can use, by the level ``bf16_isa`` returns.
ISA_NAMES = ("none", "AVX512-BF16", "AMX")


def bf16_isa(limit: int = 0) -> int:
    """The bf16 GEMM's instructions as an index of ISA_NAMES. ``limit`` 1 or 2 caps them from now on,
    for the whole process (tests and A/B benchmarks); by default the best this CPU and Linux allow."""
    lib = ctypes.CDLL(build("pointwise"))
    lib.mnv2_pw_isa.argtypes = [ctypes.c_int]
    return int(lib.mnv2_pw_isa(limit))


@cache
def _kernel() -> ops.Custom:
    """The forward Custom op, its bprop wired to the backward kernel (input and weight gradients)."""
    lib = build("pointwise")
    return ops.Custom(
        f"{lib}:mnv2_pw_fwd",
        out_shape=lambda x, w: [x[0], w[0], x[2], x[3]],
        out_dtype=lambda x, w: x,
        func_type="aot",
        bprop=both_gradients(f"{lib}:mnv2_pw_bwd"),
    )


class BF16Pointwise(nn.Cell):
    """1x1 convolution, stride 1, no bias (NCHW float32 in and out), computed with bf16 products."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"BF16Pointwise: channels must be positive, got {in_channels} -> {out_channels}")
        self.in_channels, self.out_channels, self.group = in_channels, out_channels, 1
        self.kernel_size = (1, 1)
        # The model zoo's conv init: N(0, sqrt(2 / (k * k * out_channels))).
        std = math.sqrt(2.0 / out_channels)
        self.weight = Parameter(
            initializer(Normal(sigma=std), [out_channels, in_channels, 1, 1], ms.float32), name="weight"
        )
        self._op = _kernel()

    def construct(self, x):
        return self._op(x, self.weight)

    def extend_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, kernel_size=1, bf16"


def is_replaceable_pointwise(cell: nn.Cell) -> bool:
    """True for a dense 1x1 nn.Conv2d that BF16Pointwise computes (stride 1, no padding, no bias, NCHW)."""
    if not isinstance(cell, nn.Conv2d) or cell.group != 1 or cell.has_bias or cell.data_format != "NCHW":
        return False
    flat = lambda v: set(v) if isinstance(v, tuple) else {v}  # noqa: E731
    return (
        tuple(cell.kernel_size) == (1, 1)
        and flat(cell.stride) == {1}
        and flat(cell.dilation) == {1}
        and flat(cell.padding) == {0}
    )


def replace_pointwise(network: nn.Cell) -> int:
    """Swap every replaceable 1x1 nn.Conv2d in ``network`` for BF16Pointwise, in place; how many.

    The ``weight`` Parameter object moves into the new cell (names, values and optimizer bindings
    kept). Call it before building the optimizer or compiling, on a CPU where ``bf16_supported()``.
    """
    return swap_cells(
        network, is_replaceable_pointwise, lambda c: BF16Pointwise(c.in_channels, c.out_channels)
    )
