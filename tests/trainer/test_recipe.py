"""Per-platform optimizer and mixed-precision wiring (REFERENCE §1), checked without a device."""

from __future__ import annotations

import numpy as np
import pytest
from mnv2.config import build_config
from mnv2.hub import create_network
from mnv2.loss import LabelSmoothingCrossEntropy
from mnv2.train import build_train_cell


@pytest.fixture
def captured(monkeypatch, device):
    import mindspore as ms

    calls: list[dict] = []

    def fake_build(network, optimizer, loss_fn=None, level="O0", **kwargs):
        calls.append({"level": level, "optimizer": optimizer, **kwargs})
        return ms.nn.TrainOneStepCell(ms.nn.WithLossCell(network, loss_fn), optimizer)

    monkeypatch.setattr(ms.amp, "build_train_network", fake_build)
    return calls


def cell_for(platform: str, captured):
    config = build_config({"platform": platform, "num_classes": 4})
    network = create_network("mobilenetv2", num_classes=4, width_mult=0.25, seed=0)
    lr = np.full(10, 0.1, np.float32)
    loss = LabelSmoothingCrossEntropy(4, config.label_smoothing)
    return build_train_cell(network, loss, network.trainable_params(), lr, config, amp=True)


def test_ascend_uses_o3_with_a_fixed_scale_in_loss_and_optimizer(captured):
    import mindspore as ms

    _, optimizer = cell_for("Ascend", captured)
    (call,) = captured
    assert call["level"] == "O3" and call["keep_batchnorm_fp32"] is False
    manager = call["loss_scale_manager"]
    assert isinstance(manager, ms.amp.FixedLossScaleManager)
    assert manager.get_loss_scale() == 1024 and manager.get_drop_overflow_update() is False
    assert optimizer.loss_scale == 1024


def test_gpu_uses_o2_with_a_dynamic_scale(captured):
    import mindspore as ms

    _, optimizer = cell_for("GPU", captured)
    (call,) = captured
    assert call["level"] == "O2"
    assert isinstance(call["loss_scale_manager"], ms.amp.DynamicLossScaleManager)
    assert optimizer.loss_scale == 1.0  # the update cell unscales; the optimizer must not again


def test_cpu_trains_in_fp32_without_scaling(captured):
    import mindspore as ms

    cell, optimizer = cell_for("CPU", captured)
    assert captured == [] and isinstance(cell, ms.nn.TrainOneStepCell) and optimizer.loss_scale == 1.0


def test_weight_decay_skips_batchnorm_and_biases(captured):
    _, optimizer = cell_for("CPU", captured)
    decayed = {p.name for p, flag in zip(optimizer.parameters, optimizer.decay_flags, strict=True) if flag}
    assert "dense.weight" in decayed and "features.0.features.0.weight" in decayed
    assert not any(n.endswith(("gamma", "beta", "bias")) for n in decayed)
    assert {p.name for p in optimizer.parameters} - decayed >= {"dense.bias", "features.0.features.1.gamma"}


DECAY, LR = 0.05, np.full(10, 0.1, np.float32)


def _trained(make_cell, steps: int = 3) -> dict[str, np.ndarray]:
    """Parameters and momenta of a small MobileNetV2 after `steps` steps of `make_cell(network, loss)`."""
    import mindspore as ms

    network = create_network("mobilenetv2", num_classes=4, width_mult=0.25, seed=0)
    cell, optimizer = make_cell(network, LabelSmoothingCrossEntropy(4, 0.1))
    cell.set_train()
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((4, 3, 32, 32)).astype(np.float32))
    y = ms.Tensor(np.array([0, 1, 2, 3], np.int32))
    for _ in range(steps):
        cell(x, y).asnumpy()
    return {p.name: p.asnumpy() for p in optimizer.get_parameters()}


def _with(optimizer_for):
    from mindspore import nn

    def make_cell(network, loss):
        optimizer = optimizer_for(network.trainable_params())
        return nn.TrainOneStepCell(nn.WithLossCell(network, loss), optimizer), optimizer

    return make_cell


def test_one_group_with_decay_flags_updates_as_the_zoos_two_groups(device):
    """The zoo's train.py gives Momentum two groups, [decay: weight_decay] and [gamma/beta/bias: none].
    The trainer's one group with MindSpore's per-parameter decay flags must update every parameter and
    momentum exactly as MindSpore's grouped Momentum does (a large decay, so a wrong flag shows)."""
    from mindspore import Tensor, nn

    def zoo_groups(params):
        decayed = [p for p in params if not p.name.endswith(("gamma", "beta", "bias"))]
        rest = [p for p in params if p.name.endswith(("gamma", "beta", "bias"))]
        groups = [{"params": decayed, "weight_decay": DECAY}, {"params": rest}, {"order_params": params}]
        return nn.Momentum(groups, Tensor(LR), 0.9)

    def trainers(network, loss):
        config = build_config({"platform": "CPU", "num_classes": 4, "weight_decay": DECAY})
        return build_train_cell(network, loss, network.trainable_params(), LR, config, amp=False)

    ours, zoo = _trained(trainers), _trained(_with(zoo_groups))
    assert ours.keys() == zoo.keys()
    assert [name for name in zoo if not np.array_equal(ours[name], zoo[name])] == []
    # and the flags matter: MindSpore's own one-group filter (gamma and beta only) decays the bias
    unflagged = _trained(_with(lambda params: nn.Momentum(params, Tensor(LR), 0.9, weight_decay=DECAY)))
    assert not np.array_equal(unflagged["dense.bias"], zoo["dense.bias"])
