"""Per-platform optimizer and mixed-precision wiring (REFERENCE §1), checked without a device."""

from __future__ import annotations

import numpy as np
import pytest
from mnv2.config import build_config
from mnv2.hub import create_network
from mnv2.loss import LabelSmoothingCrossEntropy
from mnv2.train import build_train_cell, split_decay_groups


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


def test_weight_decay_skips_batchnorm_and_biases(device):
    network = create_network("mobilenetv2", num_classes=4, width_mult=0.25, seed=0)
    decay, no_decay = split_decay_groups(network.trainable_params(), 4e-5)
    assert decay["weight_decay"] == 4e-5 and no_decay["weight_decay"] == 0.0
    decayed = {p.name for p in decay["params"]}
    assert "dense.weight" in decayed and "features.0.features.0.weight" in decayed
    assert not any(n.endswith(("gamma", "beta", "bias")) for n in decayed)
    assert {p.name for p in no_decay["params"]} >= {"dense.bias", "features.0.features.1.gamma"}
