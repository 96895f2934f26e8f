"""Pure parts of the recipe: the LR schedule, label-smoothing targets, the zoo's log lines."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mnv2.config import PRESETS, Platform
from mnv2.logs import epoch_line, result_line, step_line
from mnv2.loss import smoothed_targets
from mnv2.lr import warmup_cosine_lr


def reference_lr(i: int, *, lr_init, lr_max, lr_end, warm, total) -> float:
    if i < warm:
        return lr_init + (lr_max - lr_init) * i / warm
    return lr_end + (lr_max - lr_end) * (1 + math.cos(math.pi * (i - warm) / (total - warm))) / 2


def ascend_lr() -> np.ndarray:
    p = PRESETS[Platform.ASCEND]
    return warmup_cosine_lr(lr_init=p["lr_init"], lr_max=p["lr_max"], lr_end=p["lr_end"],
                            warmup_epochs=p["warmup_epochs"], epochs=p["epochs"], steps_per_epoch=625)


def test_ascend_recipe_gives_the_seed_log_values():
    lr = ascend_lr()
    assert len(lr) == 200 * 625
    assert f"{lr[624]:5.3f}" == "0.100"  # end of epoch 0 in the seed's log
    assert f"{lr[1249]:5.3f}" == "0.200"  # end of epoch 1
    assert lr[0] == 0.0
    assert lr[2500] == pytest.approx(0.4)  # peak right after 4 warmup epochs
    assert lr[-1] == pytest.approx(0.0, abs=1e-6)
    assert np.all(np.diff(lr[:2500]) > 0) and np.all(np.diff(lr[2500:]) <= 0)


@pytest.mark.parametrize("warmup,epochs,spe", [(0, 3, 7), (1, 3, 5), (2, 2, 4), (0, 1, 1)])
def test_every_step_matches_the_formula(warmup, epochs, spe):
    lr = warmup_cosine_lr(lr_init=0.01, lr_max=0.5, lr_end=0.001, warmup_epochs=warmup, epochs=epochs,
                          steps_per_epoch=spe)
    expected = [reference_lr(i, lr_init=0.01, lr_max=0.5, lr_end=0.001, warm=warmup * spe, total=epochs * spe)
                for i in range(epochs * spe)]
    np.testing.assert_allclose(lr, expected, rtol=1e-6)


def test_cpu_recipe_is_constant():
    p = PRESETS[Platform.CPU]
    lr = warmup_cosine_lr(lr_init=p["lr_init"], lr_max=p["lr_max"], lr_end=p["lr_end"],
                          warmup_epochs=p["warmup_epochs"], epochs=p["epochs"], steps_per_epoch=10)
    np.testing.assert_allclose(lr, 0.03)


def test_label_smoothing_uses_s_over_c_minus_1():
    targets = smoothed_targets(np.array([2, 0]), num_classes=5, smoothing=0.1)
    assert targets[0, 2] == pytest.approx(0.9)
    assert targets[0, 0] == pytest.approx(0.1 / 4)  # not 0.1/5
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)


def test_log_lines_reproduce_the_seed_exactly():
    assert step_line(epoch=0, epochs=200, step=624, steps=625, loss=5.258, avg_loss=5.258, step_ms=140412.236,
                     lr=0.0998) == (
        "epoch: [  0/200], step:[  624/  625], loss:[5.258/5.258], time:[140412.236], lr:[0.100]"
    )
    assert epoch_line(epoch_ms=140522.5, per_step_ms=224.836, avg_loss=5.258) == (
        "epoch time: 140522.500, per step time: 224.836, avg loss: 5.258"
    )
    assert result_line(acc=0.71976314102564111, top5=0.9, ckpt="./ckpt_0/mobilenet-200_625.ckpt") == (
        "result: {'acc': 0.7197631410256411, 'top_5_accuracy': 0.9} ckpt=./ckpt_0/mobilenet-200_625.ckpt"
    )
