"""The BatchNorm + ReLU6 before a depthwise convolution, applied while the convolution reads its input.

In MobileNetV2 each expansion 1x1 convolution, and the stem, is followed by BatchNorm + ReLU6 and
then by the block's depthwise 3x3 convolution. That BatchNorm's output is the network's largest
kind of tensor (6x the block's channels, at the block's input resolution): written once, read back
by the depthwise kernel, and kept until the backward pass because the depthwise weight gradient
needs it. Here it is never made:

- ``BatchNormForDepthwise`` (in the BatchNorm's place) computes only the batch statistics and the
  moving-average update (``mnv2_bn_train_coef``) and passes on its input with the per-channel
  affine map;
- ``DepthwiseAfterBatchNorm`` (in the depthwise convolution's place) runs the depthwise kernels
  with ``Act`` (csrc/depthwise.cc), which apply ``min(max(x * scale + bias, 0), 6)`` to each
  plane as they read it. Its backward gives the gradient of the BatchNorm's output, from which the
  BatchNorm's own backward kernel (csrc/batchnorm.cc) computes the gradients of x, gamma and beta;
  in training it also gives that kernel's two sums per channel, taken from each plane of the
  gradient while it is in cache (``mnv2_dw3x3_actbwd_sums``), so the BatchNorm's backward reads the
  two tensors once instead of twice (``mnv2_bn_train_bwd_apply_r1``; the same sums in the same
  order, so the same bits).

In evaluation the same happens with the moving statistics (``mnv2_bn_infer_coef``), and the
BatchNorm + ReLU6 *after* the depthwise convolution is applied too, to each block of output planes
while it is still in cache (``BatchNormAfterDepthwise``, in that BatchNorm's place, runs the
kernel). An inverted residual's expanded tensors then cross memory once in an evaluation pass,
where the BatchNorms read and wrote them four times more. In training that second BatchNorm takes
its batch statistics from the depthwise kernel, which sums them from its output while it is in
registers (``mnv2_dw3x3_actfwd_moments``), so it reads that output once instead of twice; in its
backward only its reduction runs as a pass of its own (``mnv2_bn_train_bwd_reduce_r1``), and the
depthwise backward computes the gradient through it from that reduction as it reads the incoming
gradient (``mnv2_dw3x3_actbwd_outbn``), so that gradient is never written and read back. The three
then run in one cell (``_TrainBlock``), as the two do in evaluation (``_EvalBlock``). The cells pass
tuples between them.
Parameter objects stay in their cells and slots, so names (checkpoint keys), values and optimizer
bindings are unchanged. The results are those of ``FusedBatchNorm2d(relu6=True)`` and
``DepthwiseConv2d`` up to float rounding (one fused multiply-add instead of a multiply and an add;
tests/perf/test_act_depthwise.py).

Use through ``fuse_batchnorm_into_depthwise(network)``, which ``replace_slow_convolutions`` calls
after swapping in the BatchNorm and depthwise kernels.
"""

from __future__ import annotations

from functools import cache

from mindspore import nn, ops

from mnv2.ops._build import build
from mnv2.ops.batchnorm import (
    FusedBatchNorm2d,
    _Fused,
    infer_backward,
    train_backward_from_sums,
    train_backward_reduce,
    train_from_moments,
    updating_moving_averages,
)
from mnv2.ops.depthwise import DepthwiseConv2d, _out_size


@cache
def _coefficients() -> ops.Custom:
    """The op computing the BatchNorm's batch statistics and per-channel affine map (training)."""
    lib = build("batchnorm")
    zeros = ops.ZerosLike()

    # No gradient of its own: DepthwiseAfterBatchNorm's backward accounts for the statistics.
    def bprop(x, gamma, beta, mmean, mvar, hp, out, dout):
        return zeros(x), zeros(gamma), zeros(beta), zeros(mmean), zeros(mvar), zeros(hp)

    return updating_moving_averages(
        f"{lib}:mnv2_bn_train_coef",
        out_shape=lambda x, g, b, m, v, hp: (g, g, g, g),
        out_dtype=lambda x, g, b, m, v, hp: (g, g, g, g),
        bprop=bprop,
    )


@cache
def _inference_coefficients() -> ops.Custom:
    """The op computing the BatchNorm's per-channel affine map from the moving statistics."""
    zeros = ops.ZerosLike()

    # No gradient of its own: DepthwiseAfterBatchNorm's backward accounts for gamma and beta.
    def bprop(gamma, beta, mmean, mvar, hp, out, dout):
        return zeros(gamma), zeros(beta), zeros(mmean), zeros(mvar), zeros(hp)

    return ops.Custom(
        f"{build('batchnorm')}:mnv2_bn_infer_coef",
        out_shape=lambda g, b, m, v, hp: (g, g),
        out_dtype=lambda g, b, m, v, hp: (g, g),
        func_type="aot",
        bprop=bprop,
    )


@cache
def _depthwise(stride: int, padding: int) -> tuple[ops.Custom, ops.Custom]:
    """(forward, backward) depthwise ops that read act(x) for one geometry."""
    lib = build("depthwise")
    suffix = f"s{stride}_p{padding}"
    forward = ops.Custom(
        f"{lib}:mnv2_dw3x3_actfwd_{suffix}",
        out_shape=lambda x, w, s, b: [x[0], x[1], _out_size(x[2], stride, padding),
                                      _out_size(x[3], stride, padding)],
        out_dtype=lambda x, w, s, b: x,
        func_type="aot",
    )
    backward = ops.Custom(
        f"{lib}:mnv2_dw3x3_actbwd_{suffix}",
        out_shape=lambda dy, x, w, s, b: (x, w),
        out_dtype=lambda dy, x, w, s, b: (x, w),
        func_type="aot",
    )
    return forward, backward


@cache
def _depthwise_backward_with_sums(stride: int, padding: int) -> ops.Custom:
    """The backward op of the depthwise convolution reading act(x), (dy, x, w, scale, bias, gamma,
    beta, save_mean, save_invstd) -> dx, dw, sums[4C]: also the sums the training BatchNorm's backward
    needs (``train_backward_from_sums``), taken from each plane of dx while it is in cache."""
    return ops.Custom(
        f"{build('depthwise')}:mnv2_dw3x3_actbwd_sums_s{stride}_p{padding}",
        out_shape=lambda dy, x, w, s, b, g, bt, m, v: (x, w, [4 * x[1]]),
        out_dtype=lambda dy, x, w, s, b, g, bt, m, v: (x, w, x),
        func_type="aot",
    )


@cache
def _depthwise_backward_through_batchnorm(stride: int, padding: int) -> ops.Custom:
    """As ``_depthwise_backward_with_sums`` where dy is the gradient of the training BatchNorm + ReLU6
    after the convolution: (dy, x, w, scale, bias, gamma, beta, save_mean, save_invstd, conv, gamma2,
    beta2, save_mean2, save_invstd2, means2[2C]) -> dx, dw, sums[4C], conv being that BatchNorm's input
    and means2 its backward's reduction (``train_backward_reduce``)."""
    return ops.Custom(
        f"{build('depthwise')}:mnv2_dw3x3_actbwd_outbn_s{stride}_p{padding}",
        out_shape=lambda dy, x, w, s, b, g, bt, m, v, conv, g2, bt2, m2, v2, means2: (x, w, [4 * x[1]]),
        out_dtype=lambda dy, x, w, s, b, g, bt, m, v, conv, g2, bt2, m2, v2, means2: (x, w, x),
        func_type="aot",
    )


@cache
def _depthwise_with_moments(stride: int, padding: int) -> ops.Custom:
    """The forward op reading act(x) that also gives its output's batch mean and variance per channel
    (moments[2C]), the statistics of the training BatchNorm after it, taken while the output is in
    registers."""
    def out(x):
        return [x[0], x[1], _out_size(x[2], stride, padding), _out_size(x[3], stride, padding)]

    return ops.Custom(
        f"{build('depthwise')}:mnv2_dw3x3_actfwd_moments_s{stride}_p{padding}",
        out_shape=lambda x, w, s, b: (out(x), [2 * x[1]]),
        out_dtype=lambda x, w, s, b: (x, x),
        func_type="aot",
    )


@cache
def _depthwise_then_batchnorm(stride: int, padding: int) -> ops.Custom:
    """The forward op reading act(x) and giving the inference BatchNorm + ReLU6 of its output."""
    return ops.Custom(
        f"{build('depthwise')}:mnv2_dw3x3_actfwd_bn_s{stride}_p{padding}",
        out_shape=lambda x, w, s, b, os, ob: [x[0], x[1], _out_size(x[2], stride, padding),
                                              _out_size(x[3], stride, padding)],
        out_dtype=lambda x, w, s, b, os, ob: x,
        func_type="aot",
    )


class BatchNormForDepthwise(nn.Cell):
    """A FusedBatchNorm2d (with ReLU6) whose output a DepthwiseAfterBatchNorm computes as it reads.

    Returns ``(x, scale, bias, gamma, beta, mean, invstd)`` in training (batch statistics, moving
    averages updated) and ``(x, scale, bias, gamma, beta, moving_mean, moving_variance, hp)`` in
    evaluation, where the BatchNorm's output is ``min(max(x * scale + bias, 0), 6)``; the rest is
    what its backward needs.
    """

    def __init__(self, bn: FusedBatchNorm2d) -> None:
        super().__init__()
        if not bn.relu6:
            raise ValueError("BatchNormForDepthwise: the BatchNorm must be fused with its ReLU6")
        self.num_features, self.eps, self.momentum = bn.num_features, bn.eps, bn.momentum
        self.gamma = bn.gamma  # the same Parameter objects: names, values, optimizer bindings kept
        self.beta = bn.beta
        self.moving_mean = bn.moving_mean
        self.moving_variance = bn.moving_variance
        self._hp = bn._hp
        self._train = _coefficients()
        self._infer = _inference_coefficients()

    def construct(self, x):
        if self.training:
            scale, bias, mean, invstd = self._train(
                x, self.gamma, self.beta, self.moving_mean, self.moving_variance, self._hp)
            return x, scale, bias, self.gamma, self.beta, mean, invstd
        scale, bias = self._infer(self.gamma, self.beta, self.moving_mean, self.moving_variance, self._hp)
        return x, scale, bias, self.gamma, self.beta, self.moving_mean, self.moving_variance, self._hp

    def extend_repr(self) -> str:
        return f"num_features={self.num_features}, eps={self.eps}, momentum={self.momentum}, into_depthwise"


class _TrainStep(nn.Cell):
    """act(x) -> depthwise, with the backward of both (a cell bprop: the statistics get no gradient
    of their own, BatchNorm's backward kernel accounts for them; the depthwise backward kernel gives
    that kernel its sums)."""

    def __init__(self, stride: int, padding: int) -> None:
        super().__init__()
        self._fwd = _depthwise(stride, padding)[0]
        self._bwd = _depthwise_backward_with_sums(stride, padding)
        self._bn_bwd = train_backward_from_sums()
        self._zeros = ops.ZerosLike()

    def construct(self, x, w, scale, bias, gamma, beta, mean, invstd):
        return self._fwd(x, w, scale, bias)

    def bprop(self, x, w, scale, bias, gamma, beta, mean, invstd, out, dout):
        grad_act, dw, sums = self._bwd(dout, x, w, scale, bias, gamma, beta, mean, invstd)
        dx, dgamma, dbeta = self._bn_bwd(grad_act, x, gamma, beta, mean, invstd, sums)
        z = self._zeros
        return dx, dw, z(scale), z(bias), dgamma, dbeta, z(mean), z(invstd)


class _TrainBlock(nn.Cell):
    """act(x) -> depthwise -> training BatchNorm + ReLU6, with the backward of all three. The second
    BatchNorm takes its batch statistics from the depthwise kernel; its backward is a reduction
    (``train_backward_reduce``) from which the depthwise backward kernel computes the convolution's
    output gradient as it reads dy (``mnv2_dw3x3_actbwd_outbn``), so that gradient is never written.

    Returns ``(y, conv, mean2, invstd2)``: the last three, what the backward needs, get no gradient."""

    def __init__(self, stride: int, padding: int) -> None:
        super().__init__()
        self._fwd = _depthwise_with_moments(stride, padding)
        self._bn_fwd = train_from_moments()
        self._bn_reduce = train_backward_reduce()
        self._bwd = _depthwise_backward_through_batchnorm(stride, padding)
        self._bn_bwd = train_backward_from_sums()
        self._zeros = ops.ZerosLike()

    def construct(self, x, w, scale, bias, gamma, beta, mean, invstd, gamma2, beta2, mmean2, mvar2, hp2):
        conv, moments = self._fwd(x, w, scale, bias)
        y, mean2, invstd2 = self._bn_fwd(conv, moments, gamma2, beta2, mmean2, mvar2, hp2)
        return y, conv, mean2, invstd2

    def bprop(self, x, w, scale, bias, gamma, beta, mean, invstd, gamma2, beta2, mmean2, mvar2, hp2,
              out, dout):
        _, conv, mean2, invstd2 = out
        dgamma2, dbeta2, means2 = self._bn_reduce(dout[0], conv, gamma2, beta2, mean2, invstd2)
        grad_act, dw, sums = self._bwd(dout[0], x, w, scale, bias, gamma, beta, mean, invstd,
                                       conv, gamma2, beta2, mean2, invstd2, means2)
        dx, dgamma, dbeta = self._bn_bwd(grad_act, x, gamma, beta, mean, invstd, sums)
        z = self._zeros
        return (dx, dw, z(scale), z(bias), dgamma, dbeta, z(mean), z(invstd),
                dgamma2, dbeta2, z(mmean2), z(mvar2), z(hp2))


class _EvalStep(nn.Cell):
    """As _TrainStep with the moving statistics: BatchNorm's inference backward takes the gradient."""

    def __init__(self, stride: int, padding: int) -> None:
        super().__init__()
        self._fwd, self._bwd = _depthwise(stride, padding)
        self._bn_bwd = infer_backward(relu6=True)
        self._zeros = ops.ZerosLike()

    def construct(self, x, w, scale, bias, gamma, beta, mmean, mvar, hp):
        return self._fwd(x, w, scale, bias)

    def bprop(self, x, w, scale, bias, gamma, beta, mmean, mvar, hp, out, dout):
        grad_act, dw = self._bwd(dout, x, w, scale, bias)
        dx, dgamma, dbeta = self._bn_bwd(grad_act, x, gamma, beta, mmean, mvar, hp)
        z = self._zeros
        return dx, dw, z(scale), z(bias), dgamma, dbeta, z(mmean), z(mvar), z(hp)


class _EvalBlock(nn.Cell):
    """act(x) -> depthwise -> inference BatchNorm + ReLU6, one kernel; the backward recomputes the
    convolution's output and goes back through both BatchNorms' inference backward."""

    def __init__(self, stride: int, padding: int) -> None:
        super().__init__()
        self._fwd_bn = _depthwise_then_batchnorm(stride, padding)
        self._fwd, self._bwd = _depthwise(stride, padding)
        self._bn_bwd = infer_backward(relu6=True)
        self._zeros = ops.ZerosLike()

    def construct(self, x, w, scale, bias, gamma, beta, mmean, mvar, hp,
                  out_scale, out_bias, out_gamma, out_beta, out_mmean, out_mvar, out_hp):
        return self._fwd_bn(x, w, scale, bias, out_scale, out_bias)

    def bprop(self, x, w, scale, bias, gamma, beta, mmean, mvar, hp,
              out_scale, out_bias, out_gamma, out_beta, out_mmean, out_mvar, out_hp, out, dout):
        conv = self._fwd(x, w, scale, bias)
        dconv, dout_gamma, dout_beta = self._bn_bwd(dout, conv, out_gamma, out_beta, out_mmean, out_mvar,
                                                    out_hp)
        grad_act, dw = self._bwd(dconv, x, w, scale, bias)
        dx, dgamma, dbeta = self._bn_bwd(grad_act, x, gamma, beta, mmean, mvar, hp)
        z = self._zeros
        return (dx, dw, z(scale), z(bias), dgamma, dbeta, z(mmean), z(mvar), z(hp),
                z(out_scale), z(out_bias), dout_gamma, dout_beta, z(out_mmean), z(out_mvar), z(out_hp))


class DepthwiseAfterBatchNorm(nn.Cell):
    """A DepthwiseConv2d fed by a BatchNormForDepthwise: takes its tuple and applies the BatchNorm +
    ReLU6 while reading. With ``then_batchnorm`` it hands its inputs and weight on to the
    BatchNormAfterDepthwise that follows, which runs the kernels."""

    def __init__(self, conv: DepthwiseConv2d, then_batchnorm: bool = False) -> None:
        super().__init__()
        self.then_batchnorm = then_batchnorm
        self.channels, self.stride, self.padding = conv.channels, conv.stride, conv.padding
        self.in_channels = self.out_channels = self.group = conv.channels
        self.kernel_size = conv.kernel_size
        self.weight = conv.weight  # the same Parameter: name, value and optimizer binding kept
        self._train_step = _TrainStep(conv.stride, conv.padding)
        self._eval_step = _EvalStep(conv.stride, conv.padding)

    def construct(self, inputs):
        if self.training:
            x, scale, bias, gamma, beta, mean, invstd = inputs
            if self.then_batchnorm:
                return x, self.weight, scale, bias, gamma, beta, mean, invstd
            return self._train_step(x, self.weight, scale, bias, gamma, beta, mean, invstd)
        x, scale, bias, gamma, beta, mmean, mvar, hp = inputs
        if self.then_batchnorm:
            return x, self.weight, scale, bias, gamma, beta, mmean, mvar, hp
        return self._eval_step(x, self.weight, scale, bias, gamma, beta, mmean, mvar, hp)

    def extend_repr(self) -> str:
        return (f"channels={self.channels}, kernel_size=3, stride={self.stride}, padding={self.padding}, "
                "input=BatchNorm+ReLU6")


class BatchNormAfterDepthwise(FusedBatchNorm2d):
    """The FusedBatchNorm2d (with ReLU6) after a DepthwiseAfterBatchNorm(then_batchnorm=True), running
    the depthwise kernels with itself: in training it takes the batch statistics the depthwise kernel
    computed with its output, and the depthwise backward the gradient through it (``_TrainBlock``);
    in evaluation the depthwise kernel applies it as an epilogue (``_EvalBlock``)."""

    def __init__(self, bn: FusedBatchNorm2d, conv: DepthwiseAfterBatchNorm) -> None:
        nn.Cell.__init__(self)  # FusedBatchNorm2d's own __init__ builds from an nn.BatchNorm2d
        if not bn.relu6:
            raise ValueError("BatchNormAfterDepthwise: the BatchNorm must be fused with its ReLU6")
        self.num_features, self.eps, self.momentum, self.relu6 = bn.num_features, bn.eps, bn.momentum, True
        self.gamma = bn.gamma  # the same Parameter objects: names, values, optimizer bindings kept
        self.beta = bn.beta
        self.moving_mean = bn.moving_mean
        self.moving_variance = bn.moving_variance
        self._hp = bn._hp
        self._train_block = _TrainBlock(conv.stride, conv.padding)
        self._coefficients = _inference_coefficients()
        self._block = _EvalBlock(conv.stride, conv.padding)

    def construct(self, x):
        if self.training:
            x, w, scale, bias, gamma, beta, mean, invstd = x
            return self._train_block(x, w, scale, bias, gamma, beta, mean, invstd, self.gamma, self.beta,
                                     self.moving_mean, self.moving_variance, self._hp)[0]
        x, w, scale, bias, gamma, beta, mmean, mvar, hp = x
        out_scale, out_bias = self._coefficients(self.gamma, self.beta, self.moving_mean,
                                                 self.moving_variance, self._hp)
        return self._block(x, w, scale, bias, gamma, beta, mmean, mvar, hp, out_scale, out_bias,
                           self.gamma, self.beta, self.moving_mean, self.moving_variance, self._hp)

    def extend_repr(self) -> str:
        return super().extend_repr() + ", after_depthwise"


def _ends_in_fused_relu6(cell: nn.Cell) -> bool:
    """A ConvBNReLU whose BatchNorm is a FusedBatchNorm2d that absorbed its ReLU6."""
    layers = getattr(cell, "features", None)
    return (
        isinstance(layers, nn.SequentialCell) and len(layers) == 3
        and isinstance(layers[1], FusedBatchNorm2d) and layers[1].relu6 and isinstance(layers[2], _Fused)
    )


def _starts_with_depthwise(cell: nn.Cell) -> bool:
    layers = getattr(cell, "features", None)
    return isinstance(layers, nn.SequentialCell) and isinstance(layers[0], DepthwiseConv2d)


def _pairs(network: nn.Cell) -> list[tuple[nn.Cell, nn.Cell]]:
    """(ConvBNReLU, depthwise ConvBNReLU) pairs where the first's output is only the second's input:
    an inverted residual's expansion and depthwise layers, and the stem with a first block that
    has no expansion and no residual connection (there the stem's output goes nowhere else)."""
    from mnv2.model import InvertedResidual, MobileNetV2Backbone

    pairs = []
    for _, cell in network.cells_and_names():
        if isinstance(cell, InvertedResidual) and len(cell.conv) >= 2:
            pairs.append((cell.conv[0], cell.conv[1]))
        elif isinstance(cell, MobileNetV2Backbone) and len(cell.features) >= 2:
            first = cell.features[1]
            if isinstance(first, InvertedResidual) and not first.use_res_connect:
                pairs.append((cell.features[0], first.conv[0]))
    return [(a, b) for a, b in pairs if _ends_in_fused_relu6(a) and _starts_with_depthwise(b)]


def fuse_batchnorm_into_depthwise(network: nn.Cell) -> int:
    """Let each depthwise convolution of ``network`` apply the BatchNorm + ReLU6 before it; how many.

    Needs the swapped-in kernels (FusedBatchNorm2d with its ReLU6, DepthwiseConv2d); layers that
    are not in that form are left alone. In place, before building the optimizer or compiling.
    """
    pairs = _pairs(network)
    for producer, consumer in pairs:
        producer.features[1] = BatchNormForDepthwise(producer.features[1])
        then_batchnorm = _ends_in_fused_relu6(consumer)
        consumer.features[0] = DepthwiseAfterBatchNorm(consumer.features[0], then_batchnorm)
        if then_batchnorm:
            consumer.features[1] = BatchNormAfterDepthwise(consumer.features[1], consumer.features[0])
    return len(pairs)
