"""BatchNorm (+ ReLU6) fused into one custom CPU kernel, forward and backward.

MindSpore 2.10's CPU BatchNorm, BatchNormGrad, ReLU6 and ReLU6Grad take over half of a
MobileNetV2 training step (bench/RESULTS.md profile), all of it memory traffic over the same
activations. ``FusedBatchNorm2d`` computes what ``nn.BatchNorm2d`` (optionally followed by
``nn.ReLU6``) computes through ``csrc/batchnorm.cc``: batch statistics and the moving-average
update in training, the moving statistics in evaluation, and gradients for the input, gamma and
beta. It holds the same four Parameter objects as the BatchNorm it replaces, so names (checkpoint
keys), values and optimizer bindings are unchanged.

Use through ``replace_batchnorm(network)`` (called by ``mnv2.ops.depthwise.replace_slow_convolutions``,
the trainer's one swap point) before building the optimizer or compiling.
"""

from __future__ import annotations

from functools import cache

import mindspore as ms
from mindspore import Tensor, nn, ops
from mindspore.ops import signature as sig

from mnv2.ops._build import build

#: (x, gamma, beta, moving_mean, moving_variance, hp): the training kernels update the moving averages
#: in place, declared as MindSpore 2.10's own BatchNorm declares it in training (ops_def.py: mean and
#: variance RW_WRITE, side_effect_mem). Before, two Assigns followed each kernel: 104 launches per
#: MobileNetV2 step, about 3 ms of MindSpore's per-op cost on 2 cores.
_MOVING_WRITTEN = (
    sig.make_sig("x"), sig.make_sig("gamma"), sig.make_sig("beta"),
    sig.make_sig("moving_mean", sig.sig_rw.RW_WRITE), sig.make_sig("moving_variance", sig.sig_rw.RW_WRITE),
    sig.make_sig("hp"),
)


def updating_moving_averages(func: str, out_shape, out_dtype, bprop, signature=_MOVING_WRITTEN) -> ops.Custom:
    """An aot ops.Custom over (x, gamma, beta, moving_mean, moving_variance, hp) that writes the two
    moving averages in place (or over another signature that marks them)."""
    writing = type("UpdatesMovingAverages", (ops.Custom,), {"__mindspore_signature__": signature})
    op = writing(func, out_shape=out_shape, out_dtype=out_dtype, func_type="aot", bprop=bprop)
    op.add_prim_attr("side_effect_mem", True)
    return op


@cache
def train_backward(relu6: bool) -> ops.Custom:
    """The training backward (dy, x, gamma, beta, save_mean, save_invstd) -> dx, dgamma, dbeta, where
    dy is the gradient of the (clipped, with relu6) output."""
    return ops.Custom(
        f"{build('batchnorm')}:mnv2_bn_train_bwd_r{int(relu6)}",
        out_shape=lambda dy, x, g, b, m, v: (x, g, g),
        out_dtype=lambda dy, x, g, b, m, v: (x, g, g),
        func_type="aot",
    )


@cache
def train_backward_from_sums() -> ops.Custom:
    """The training backward of BatchNorm + ReLU6 given its gradient sums, (dy, x, gamma, beta,
    save_mean, save_invstd, sums[4C]) -> dx, dgamma, dbeta: one pass over dy and x, where
    ``train_backward`` makes two. The depthwise kernel that computes dy gives the sums
    (``mnv2.ops.act_depthwise``)."""
    return ops.Custom(
        f"{build('batchnorm')}:mnv2_bn_train_bwd_apply_r1",
        out_shape=lambda dy, x, g, b, m, v, sums: (x, g, g),
        out_dtype=lambda dy, x, g, b, m, v, sums: (x, g, g),
        func_type="aot",
    )


@cache
def train_backward_reduce() -> ops.Custom:
    """The training backward of BatchNorm + ReLU6 without dx: (dy, x, gamma, beta, save_mean,
    save_invstd) -> dgamma, dbeta, means[2C] (mean(g), mean(g * xhat)), from which the depthwise
    kernel before the BatchNorm computes dx as it reads dy (``mnv2.ops.act_depthwise``)."""
    return ops.Custom(
        f"{build('batchnorm')}:mnv2_bn_train_bwd_reduce_r1",
        out_shape=lambda dy, x, g, b, m, v: (g, g, [2 * g[0]]),
        out_dtype=lambda dy, x, g, b, m, v: (g, g, g),
        func_type="aot",
    )


@cache
def infer_backward(relu6: bool) -> ops.Custom:
    """The inference backward (dy, x, gamma, beta, mmean, mvar, hp) -> dx, dgamma, dbeta, where dy is
    the gradient of the (clipped, with relu6) output."""
    return ops.Custom(
        f"{build('batchnorm')}:mnv2_bn_infer_bwd_r{int(relu6)}",
        out_shape=lambda dy, x, g, b, m, v, hp: (x, g, g),
        out_dtype=lambda dy, x, g, b, m, v, hp: (x, g, g),
        func_type="aot",
    )


@cache
def _kernels(relu6: bool) -> tuple[ops.Custom, ops.Custom]:
    """(training op, inference op) with their bprops, shared by every cell of one kind."""
    lib = build("batchnorm")
    r = int(relu6)
    zeros_like = ops.ZerosLike()
    train_bwd = train_backward(relu6)

    def train_bprop(x, gamma, beta, mmean, mvar, hp, out, dout):
        dx, dgamma, dbeta = train_bwd(dout[0], x, gamma, beta, out[1], out[2])
        return dx, dgamma, dbeta, zeros_like(mmean), zeros_like(mvar), zeros_like(hp)

    train = updating_moving_averages(
        f"{lib}:mnv2_bn_train_fwd_r{r}",
        out_shape=lambda x, g, b, m, v, hp: (x, g, g),
        out_dtype=lambda x, g, b, m, v, hp: (x, g, g),
        bprop=train_bprop,
    )

    infer_bwd = infer_backward(relu6)

    def infer_bprop(x, gamma, beta, mmean, mvar, hp, out, dout):
        dx, dgamma, dbeta = infer_bwd(dout, x, gamma, beta, mmean, mvar, hp)
        return dx, dgamma, dbeta, zeros_like(mmean), zeros_like(mvar), zeros_like(hp)

    infer = ops.Custom(
        f"{lib}:mnv2_bn_infer_fwd_r{r}",
        out_shape=lambda x, g, b, m, v, hp: x,
        out_dtype=lambda x, g, b, m, v, hp: x,
        func_type="aot",
        bprop=infer_bprop,
    )
    return train, infer


@cache
def train_from_moments() -> ops.Custom:
    """The training forward (BatchNorm + ReLU6) given the batch mean and biased variance (moments[2C],
    from the depthwise kernel that made x): (x, moments, gamma, beta, moving_mean, moving_variance, hp)
    -> y, save_mean, save_invstd, the moving averages written. No backward of its own: it runs inside
    the cell of ``mnv2.ops.act_depthwise`` whose backward covers the depthwise convolution and it."""
    signature = (_MOVING_WRITTEN[0], sig.make_sig("moments"), *_MOVING_WRITTEN[1:])
    return updating_moving_averages(
        f"{build('batchnorm')}:mnv2_bn_train_fwd_moments_r1",
        out_shape=lambda x, mo, g, b, m, v, hp: (x, g, g),
        out_dtype=lambda x, mo, g, b, m, v, hp: (x, g, g),
        bprop=None,
        signature=signature,
    )


class FusedBatchNorm2d(nn.Cell):
    """nn.BatchNorm2d (NCHW, float32), optionally followed by ReLU6, in one custom kernel.

    Built from an existing ``nn.BatchNorm2d`` with ``from_batchnorm`` so that its Parameters move
    over; ``momentum`` has nn.BatchNorm2d's meaning (moving = momentum * moving + (1 - momentum) * batch).
    """

    def __init__(self, bn: nn.BatchNorm2d, relu6: bool = False) -> None:
        super().__init__()
        if bn.use_batch_statistics is not None:
            raise ValueError("FusedBatchNorm2d: use_batch_statistics must be None (follow the training flag)")
        self.num_features = bn.num_features
        self.eps = float(bn.eps)
        self.momentum = 1.0 - float(bn.momentum)  # nn.BatchNorm2d stores the op's 1 - momentum
        self.relu6 = relu6
        # The same Parameter objects: names, values and optimizer bindings are kept.
        self.gamma = bn.gamma
        self.beta = bn.beta
        self.moving_mean = bn.moving_mean
        self.moving_variance = bn.moving_variance
        self._hp = Tensor([self.eps, self.momentum], ms.float32)
        self._train, self._infer = _kernels(relu6)

    def construct(self, x):
        if self.training:  # the batch statistics; the moving averages updated
            y, _, _ = self._train(x, self.gamma, self.beta, self.moving_mean, self.moving_variance, self._hp)
            return y
        return self._infer(x, self.gamma, self.beta, self.moving_mean, self.moving_variance, self._hp)

    def extend_repr(self) -> str:
        return (f"num_features={self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"relu6={self.relu6}")


class _Fused(nn.Cell):
    """Stands where the ReLU6 fused into the preceding FusedBatchNorm2d was: passes its input on."""

    def construct(self, x):
        return x


def is_replaceable_batchnorm(cell: nn.Cell) -> bool:
    """True for an nn.BatchNorm2d the fused kernel computes exactly (NCHW, follows the training flag)."""
    return (
        type(cell) is nn.BatchNorm2d
        and cell.format == "NCHW"
        and cell.use_batch_statistics is None
    )


def replace_batchnorm(network: nn.Cell) -> dict[str, int]:
    """Swap every nn.BatchNorm2d in ``network`` for FusedBatchNorm2d, in place; fuse a following ReLU6.

    A BatchNorm directly followed by nn.ReLU6 in the same SequentialCell absorbs it (the ReLU6's
    slot then holds a pass-through cell, so cell indices and parameter names do not move). Call it
    before building the optimizer or compiling. Returns how many of each kind were replaced.
    """
    counts = {"batchnorm_relu6": 0, "batchnorm": 0}
    for _, parent in list(network.cells_and_names()):
        children = list(parent.name_cells().items())
        for i, (child_name, child) in enumerate(children):
            if not is_replaceable_batchnorm(child):
                continue
            follower = children[i + 1] if i + 1 < len(children) else None
            relu6 = (
                isinstance(parent, nn.SequentialCell)
                and follower is not None
                and type(follower[1]) is nn.ReLU6
            )
            fused = FusedBatchNorm2d(child, relu6=relu6)
            if isinstance(parent, nn.SequentialCell):
                parent[int(child_name)] = fused
                if relu6:
                    parent[int(follower[0])] = _Fused()
            else:
                setattr(parent, child_name, fused)
            counts["batchnorm_relu6" if relu6 else "batchnorm"] += 1
    return counts
