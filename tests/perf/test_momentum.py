"""The one-kernel optimizer update (mnv2.ops.momentum) is MindSpore's Momentum, bit for bit.

The reference is what the model zoo's train.py builds: nn.Momentum with two parameter groups (weight
decay on convolution and dense weights, none on BatchNorm gamma/beta and biases), MindSpore's
ApplyMomentum, Mul and AddN kernels. The network runs on the project's convolution and BatchNorm
kernels in both, because those are the layers whose parameters MindSpore handed to a kernel as copies
when the update was not declared as writing them (their updates were lost, the values still looked
plausible). A learning rate that changes every step, a large decay and three steps make a wrong
index, flag or operation order show.
"""

from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from mindspore import Tensor, nn  # noqa: E402
from mnv2.config import build_config  # noqa: E402
from mnv2.hub import create_network  # noqa: E402
from mnv2.loss import LabelSmoothingCrossEntropy  # noqa: E402
from mnv2.ops.depthwise import replace_slow_convolutions  # noqa: E402
from mnv2.ops.momentum import FusedMomentum  # noqa: E402
from mnv2.train import build_train_cell  # noqa: E402

DECAY, MOMENTUM = 0.05, 0.9
LR = np.linspace(0.2, 0.05, 10).astype(np.float32)
NO_DECAY = ("gamma", "beta", "bias")


def _zoo_momentum(params):
    decayed = [p for p in params if not p.name.endswith(NO_DECAY)]
    rest = [p for p in params if p.name.endswith(NO_DECAY)]
    groups = [{"params": decayed, "weight_decay": DECAY}, {"params": rest}, {"order_params": params}]
    return nn.Momentum(groups, Tensor(LR), MOMENTUM)


def _trained(make_optimizer, steps: int = 3) -> dict[str, np.ndarray]:
    """Every optimizer parameter (network parameters, momenta, step, ...) after `steps` steps."""
    network = create_network("mobilenetv2", num_classes=4, width_mult=0.25, seed=0)
    replace_slow_convolutions(network, dense_input_grad=False)
    optimizer = make_optimizer(network.trainable_params())
    cell = nn.TrainOneStepCell(nn.WithLossCell(network, LabelSmoothingCrossEntropy(4, 0.1)), optimizer)
    cell.set_train()
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((4, 3, 32, 32)).astype(np.float32))
    y = Tensor(np.array([0, 1, 2, 3], np.int32))
    for _ in range(steps):
        cell(x, y).asnumpy()
    return {p.name: p.asnumpy() for p in optimizer.get_parameters()}


def test_updates_every_parameter_and_momentum_as_the_zoos_grouped_momentum(graph_mode):
    def fused(params):
        flags = tuple(not p.name.endswith(NO_DECAY) for p in params)
        return FusedMomentum(params, Tensor(LR), MOMENTUM, DECAY, flags)

    ours, zoo = _trained(fused), _trained(_zoo_momentum)
    assert ours.keys() == zoo.keys()  # the same checkpoint keys (moments.*, global_step, ...)
    assert int(ours["global_step"][0]) == 3
    assert [name for name in zoo if not np.array_equal(ours[name], zoo[name])] == []
    # and it did train: the weights moved from where the same seed starts them
    start = {p.name: p.asnumpy() for p in create_network("mobilenetv2", num_classes=4, width_mult=0.25,
                                                           seed=0).trainable_params()}
    assert [name for name in start if np.array_equal(start[name], ours[name])] == []


def test_the_trainer_uses_it_with_its_kernels_and_not_with_a_loss_scale(graph_mode, monkeypatch):
    # A fixed loss scale (Ascend's preset) is divided out in nn.Momentum, which the kernel does not do.
    monkeypatch.setattr(ms.amp, "build_train_network", lambda network, optimizer, loss_fn, **_: (
        nn.TrainOneStepCell(nn.WithLossCell(network, loss_fn), optimizer)))

    def optimizer(platform: str, fused: bool):
        config = build_config({"platform": platform, "num_classes": 4})
        network = create_network("mobilenetv2", num_classes=4, width_mult=0.25, seed=0)
        loss = LabelSmoothingCrossEntropy(4, config.label_smoothing)
        return build_train_cell(network, loss, network.trainable_params(), LR, config, amp=True,
                                fused_update=fused)[1]

    assert isinstance(optimizer("CPU", True), FusedMomentum)
    assert type(optimizer("CPU", False)) is nn.Momentum
    ascend = optimizer("Ascend", True)
    assert type(ascend) is nn.Momentum and ascend.loss_scale == 1024


def test_refuses_flags_that_do_not_match_the_parameters(graph_mode):
    network = create_network("mobilenetv2", num_classes=4, width_mult=0.25, seed=0)
    with pytest.raises(ValueError, match="decay_flags: 1 flags for"):
        FusedMomentum(network.trainable_params(), Tensor(LR), MOMENTUM, DECAY, (True,))
