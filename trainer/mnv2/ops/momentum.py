"""Momentum SGD for all of a network's parameters in one custom CPU kernel per step.

``nn.Momentum`` launches an ApplyMomentum per parameter, and a Mul and an AddN per decayed one: for
MobileNetV2 about 270 small kernels, 10 ms of a 210 ms training step at batch 8 on 2 cores (MindSpore
profiler), most of it launch overhead and single-threaded loops. ``FusedMomentum`` is an
``nn.Momentum`` (same Parameters, so the same checkpoint keys, learning-rate schedule and global
step) whose update is ``csrc/momentum.cc``: the same float32 operations, so the same values bit
for bit, in one call over 16K-value segments on the kernel thread pool.

The kernel writes the parameters and momenta in place, so the operator is declared as ApplyMomentum
is: those inputs written (RW_WRITE), and a memory side effect. Without the side effect MindSpore
handed the kernel copies of some parameters (those the custom convolution kernels also read), and
their updates were lost (tests/perf/test_momentum.py fails that way).
"""

from __future__ import annotations

from functools import cache

import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.common import dtype as mstype
from mindspore.ops import signature as sig

from mnv2.ops._build import build


@cache
def _update(count: int) -> ops.Custom:
    """The kernel as an operator for `count` parameters: (lr, momentum, weight_decay, decayed,
    *gradients, *parameters, *momenta) -> a float32[1] zero, parameters and momenta written."""
    signature = (
        *(sig.make_sig(name) for name in ("lr", "momentum", "weight_decay", "decayed")),
        *(sig.make_sig(f"gradient{i}") for i in range(count)),
        *(sig.make_sig(f"parameter{i}", sig.sig_rw.RW_WRITE) for i in range(count)),
        *(sig.make_sig(f"moment{i}", sig.sig_rw.RW_WRITE) for i in range(count)),
    )
    writing = type("FusedMomentumUpdate", (ops.Custom,), {"__mindspore_signature__": signature})
    op = writing(
        f"{build('momentum')}:mnv2_momentum",
        out_shape=lambda *shapes: [1],
        out_dtype=lambda *dtypes: mstype.float32,
        func_type="aot",
    )
    op.add_prim_attr("side_effect_mem", True)
    return op


class FusedMomentum(nn.Momentum):
    """``nn.Momentum(params, learning_rate, momentum, weight_decay)`` with per-parameter decay flags
    (``decay_flags``, as the trainer sets on ``nn.Momentum``), without loss scale or Nesterov."""

    def __init__(self, params, learning_rate, momentum: float, weight_decay: float,
                 decay_flags: tuple[bool, ...]) -> None:
        super().__init__(params, learning_rate, momentum, weight_decay=weight_decay)
        if len(decay_flags) != len(self.parameters):
            raise ValueError(f"decay_flags: {len(decay_flags)} flags for {len(self.parameters)} parameters")
        self.decay_flags = tuple(decay_flags)
        self.decayed = Tensor(np.array(decay_flags, np.float32))
        self.decay_value = Tensor(np.array([weight_decay], np.float32))
        self.update = _update(len(self.parameters))

    def construct(self, gradients):
        lr = self.get_lr()
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        return self.update(lr, self.momentum, self.decay_value, self.decayed,
                           *gradients, *self._parameters, *self.moments)
