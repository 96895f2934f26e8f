"""Smaller defects of issue 14: worker count, other runs' checkpoints, global random generators."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
from conftest import small_config
from mnv2 import checkpoint as ckpt
from mnv2 import data
from mnv2.distributed import DistContext


def test_more_workers_than_cpus_are_clamped_with_a_notice(trees, capsys):
    cpus = os.cpu_count() or 1
    assert data.pipeline_workers(cpus + 7) == cpus
    notice = f"num_workers: {cpus + 7} is more than the {cpus} CPU(s) here; using {cpus}"
    assert notice in capsys.readouterr().err
    assert data.pipeline_workers(1) == 1
    index = data.scan_image_folder(trees.val)
    # MindSpore itself refuses num_parallel_workers above the CPU count (a traceback before this fix).
    dataset = data.create_train_dataset(index, image_size=32, batch_size=4, epoch=0, seed=1, workers=cpus + 7)
    images, labels = next(dataset.create_tuple_iterator(num_epochs=1))
    assert tuple(images.shape) == (4, 3, 32, 32) and tuple(labels.shape) == (4,)


def test_the_pipeline_keeps_to_this_process_share_of_the_pod(monkeypatch, capsys):
    """The launcher's plan (MNV2_THREADS: the pod's CPU limit over its processes) caps the workers."""
    monkeypatch.setenv("MNV2_THREADS", "1")
    if (os.cpu_count() or 1) > 1:
        assert data.pipeline_workers(2) == 1
        assert "of this process's share of the pod (MNV2_THREADS)" in capsys.readouterr().err
    monkeypatch.setenv("MNV2_THREADS", "64")
    assert data.pipeline_workers(1) == 1


def test_seeding_the_pipeline_leaves_the_global_generators_alone(trees):
    """mindspore.dataset.config.set_seed seeds `random` and `numpy.random` too (its documented effect)."""
    index = data.scan_image_folder(trees.val)
    random.seed(11)
    np.random.seed(11)
    expected = (random.random(), np.random.random())
    random.seed(11)
    np.random.seed(11)
    for epoch in range(2):
        data.create_train_dataset(index, image_size=32, batch_size=4, epoch=epoch, seed=1, workers=1)
    assert (random.random(), np.random.random()) == expected


def test_rotation_and_resume_stay_within_this_run(tmp_path):
    """A new run beside another's files takes MindSpore's next prefix (mobilenetv2_1) and rotates only
    its own; a resumed run keeps its prefix; our earlier files (plain prefix) still resume."""
    folder = tmp_path / "checkpoint"
    assert ckpt.new_run_prefix(folder) == "mobilenetv2"
    folder.mkdir()
    theirs = [folder / ckpt.checkpoint_name(e, 8) for e in range(3)] + [folder / ckpt.best_name()]
    for path in theirs:
        path.write_bytes(b"another run")
    assert ckpt.new_run_prefix(folder) == "mobilenetv2_1"
    ours = [folder / ckpt.checkpoint_name(e, 8, "mobilenetv2_1") for e in range(3)]
    for age, path in enumerate(ours):
        path.write_bytes(b"ours")
        os.utime(path, (1e9 + age, 2e9 + age))  # newer than theirs
    assert ckpt.list_checkpoints(folder) == ours  # the run written last
    assert ckpt.list_checkpoints(folder, "mobilenetv2") == theirs[:3]
    assert ckpt.run_prefix(ours[-1]) == "mobilenetv2_1" and ckpt.run_prefix(theirs[0]) == "mobilenetv2"
    assert ckpt.rotate(folder, 1, "mobilenetv2_1") == ours[:2]
    assert all(path.exists() for path in theirs) and ours[2].exists()
    assert ckpt.new_run_prefix(folder) == "mobilenetv2_2"


@pytest.mark.slow
def test_training_beside_another_run_leaves_its_checkpoints(trees, device, tmp_path, capsys):
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    theirs = [folder / ckpt.checkpoint_name(e, 8) for e in range(4)]
    for path in theirs:
        path.write_bytes(b"another run's weights")
    config = small_config(trees, tmp_path, epochs=2, keep_checkpoint_max=1, eval_dataset_path="")
    from mnv2.train import train

    result = train(config, DistContext())
    assert result.last_checkpoint == folder / "mobilenetv2_1-2_8.ckpt"
    expected = [p.name for p in theirs] + ["mobilenetv2_1-2_8.ckpt"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected)
    assert "this run writes mobilenetv2_1-*.ckpt" in capsys.readouterr().err


def test_the_metrics_say_which_kernels_run():
    """A fallback to MindSpore's kernels (no compiler, unloadable library) shows in the metrics too."""
    from mnv2.trainer_metrics import TrainerMetrics

    metrics = TrainerMetrics(0, job="j")
    metrics.on_kernels(custom=False)
    assert 'mnv2_trainer_custom_kernels{job="j",rank="0"} 0.0' in metrics.exposition()
    metrics.on_kernels(custom=True)
    assert 'mnv2_trainer_custom_kernels{job="j",rank="0"} 1.0' in metrics.exposition()
