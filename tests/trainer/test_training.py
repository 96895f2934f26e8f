"""Real training runs on the tiny synthetic task: learning, logs, checkpoints, resume, modes."""

from __future__ import annotations

import re

import numpy as np
import pytest
from mnv2.checkpoint import list_checkpoints

pytestmark = pytest.mark.slow

STEP_RE = re.compile(
    r"^epoch: \[ *\d+/ *\d+\], step:\[ *\d+/ *\d+\], loss:\[\d+\.\d{3}/\d+\.\d{3}\], "
    r"time:\[\d+\.\d{3}\], lr:\[\d+\.\d{3}\]$"
)
EPOCH_RE = re.compile(r"^epoch time: \d+\.\d{3}, per step time: \d+\.\d{3}, avg loss: \d+\.\d{3}$")


def test_loss_falls_and_accuracy_beats_chance(trained):
    losses = np.array(trained.result.losses)
    steps = trained.result.steps_per_epoch
    assert len(losses) == trained.config.epochs * steps
    first, last = losses[:steps].mean(), losses[-steps:].mean()
    assert last < first * 0.9, (first, last)
    assert trained.result.top1 is not None and trained.result.top1 >= 0.4  # chance is 0.25


def test_log_lines_have_the_seed_format(trained):
    lines = trained.log.splitlines()
    step_lines = [line for line in lines if line.startswith("epoch: [")]
    epoch_lines = [line for line in lines if line.startswith("epoch time:")]
    assert len(epoch_lines) == trained.config.epochs
    assert step_lines and all(STEP_RE.match(line) for line in step_lines)
    assert all(EPOCH_RE.match(line) for line in epoch_lines)
    assert step_lines[-1].startswith("epoch: [  9/ 10], step:[    7/    8]")
    result_re = r"^result: \{'acc': [0-9.]+, 'top_5_accuracy': [0-9.]+\} ckpt=\S+mobilenetv2-10_8\.ckpt$"
    assert re.search(result_re, trained.log, re.M)


def test_checkpoints_rotate_and_config_is_saved(trained):
    names = [p.name for p in list_checkpoints(trained.output / "checkpoint")]
    assert names == ["mobilenetv2-8_8.ckpt", "mobilenetv2-9_8.ckpt", "mobilenetv2-10_8.ckpt"]
    assert not [p for p in (trained.output / "checkpoint").iterdir() if p.name.startswith(".")]
    from mnv2.config import TrainingConfig, load_config_file

    saved = TrainingConfig.model_validate(load_config_file(trained.output / "config.yaml"))
    assert saved == trained.config
