"""The accelerators' loop (the model zoo's `Model.train` with the run's hooks as a callback), on CPU.

On Ascend and GPU the trainer calls `Model.train(..., dataset_sink_mode=True)`; MindSpore sinks
only to devices, so here the same callback runs without sinking (MNV2_TRAIN_LOOP=model), one step
per call. It must give what our own loop gives: the same steps and losses, the seed's log lines,
metrics, checkpoints, and a SIGTERM stop with its checkpoint. Sinking itself is not run here.
"""

from __future__ import annotations

import contextlib
import io
import re

import numpy as np
import pytest
from conftest import StopAfter, small_config
from mnv2.distributed import DistContext
from mnv2.exitcodes import ExitCode
from mnv2.train import _sink_size, train

TIMES = re.compile(r"(time:\[|epoch time: |per step time: )[0-9.]+")


def _run(config, loop: str, monkeypatch, stop=None):
    monkeypatch.setenv("MNV2_TRAIN_LOOP", loop)
    monkeypatch.setenv("MNV2_LOG_EVERY", "3")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = train(config, DistContext(), stop)
    return result, TIMES.sub(r"\1T", out.getvalue())


@pytest.mark.slow
def test_model_train_callback_gives_what_our_loop_gives(trees, device, tmp_path, monkeypatch):
    overrides = dict(epochs=2, eval_dataset_path="", keep_checkpoint_max=5)
    ours, our_log = _run(small_config(trees, tmp_path / "python", **overrides), "python", monkeypatch)
    theirs, their_log = _run(small_config(trees, tmp_path / "model", **overrides), "model", monkeypatch)
    assert theirs.exit_code == ExitCode.SUCCESS and theirs.global_step == ours.global_step == 16
    np.testing.assert_allclose(theirs.losses, ours.losses, rtol=1e-5, atol=1e-6)
    # The seed's lines, every third step and at each epoch's end, the same apart from timings.
    assert their_log == our_log and our_log.count("epoch: [") == 6 and our_log.count("epoch time: ") == 2
    assert sorted(p.name for p in (tmp_path / "model" / "checkpoint").iterdir()) == [
        "mobilenetv2-1_8.ckpt", "mobilenetv2-2_8.ckpt"]

    stopped, _ = _run(small_config(trees, tmp_path / "stopped", **overrides), "model", monkeypatch,
                      StopAfter(5))
    assert stopped.exit_code == ExitCode.INTERRUPTED and stopped.global_step == 5
    assert stopped.last_checkpoint.name == "mobilenetv2-1_5.ckpt"
    np.testing.assert_allclose(stopped.losses, ours.losses[:5], rtol=1e-5, atol=1e-6)


def test_sinks_divide_the_epoch_and_come_at_least_every_log_interval():
    assert _sink_size(625, 100) == 25  # the seed's ImageNet epoch on 8 cards: 25 sinks of 25 steps
    assert _sink_size(8, 100) == 8
    assert _sink_size(600, 100) == 100
    assert _sink_size(97, 100) == 97  # a prime remainder after a resume: one sink, as the zoo does
    assert _sink_size(202, 100) == 202
    for remaining in range(1, 700):
        size = _sink_size(remaining, 100)
        assert remaining % size == 0 and (size <= 100 or size == remaining)


@pytest.mark.slow
def test_model_train_meets_corrupt_images_per_policy(trees, device, tmp_path, monkeypatch, capfd):
    """In a sink no Python sees the failing batch: `error` names the file from MindSpore's message,
    `skip` lets MindSpore replace the sample (ErrorSamplesMode.REPLACE), keeping every step."""
    import shutil

    from mnv2.exitcodes import InputError

    data = tmp_path / "data"
    shutil.copytree(trees.train, data)
    bad = data / "class_01" / "0004.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(64)))
    overrides = dict(epochs=1, eval_dataset_path="", dataset_path=str(data))
    monkeypatch.setenv("MNV2_TRAIN_LOOP", "model")
    with pytest.raises(InputError, match=rf"dataset_path: {bad}: corrupt or unreadable image"):
        train(small_config(trees, tmp_path / "error", **overrides, on_corrupt_image="error"), DistContext())
    skipping = small_config(trees, tmp_path / "skip", **overrides, on_corrupt_image="skip")
    result = train(skipping, DistContext())
    assert result.exit_code == ExitCode.SUCCESS and result.global_step == 8
    assert str(bad) in capfd.readouterr().err  # MindSpore's own warning names the replaced file
