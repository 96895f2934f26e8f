"""Checkpoints we did not make: the model zoo's names in, the zoo's names out, our old names still read.

The zoo checkpoint is written from the zoo's own architecture (zoo.py, citing its src/mobilenetV2.py),
with exactly the zoo's names and nothing else, as the official release is.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import small_config
from mnv2 import checkpoint as ckpt
from mnv2.distributed import DistContext
from mnv2.exitcodes import ExitCode
from mnv2.train import train
from test_cli import RESULT_RE, SMALL_FLAGS, mnv2
from zoo import write_zoo_checkpoint, zoo_parameter_shapes

WIDTH, CLASSES = 0.25, 4
# What a training checkpoint holds besides the network: optimizer state and our run position.
OPTIMIZER_SCALARS = {"global_step", "learning_rate", "momentum"}


def params_of(path) -> dict[str, np.ndarray]:
    import mindspore as ms

    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items()}


@pytest.fixture
def zoo_ckpt(tmp_path, device):
    path = tmp_path / "zoo" / "mobilenetv2_zoo.ckpt"
    path.parent.mkdir()
    return path, write_zoo_checkpoint(path, WIDTH, CLASSES, seed=3)


def assert_zoo_names(path) -> dict[str, np.ndarray]:
    """Our checkpoint names the network exactly as the zoo does (so the zoo's eval.py loads it)."""
    saved = params_of(path)
    zoo = set(zoo_parameter_shapes(WIDTH, CLASSES))
    extra = ("moments.", ckpt.META_PREFIX)
    network = {k for k in saved if not k.startswith(extra) and k not in OPTIMIZER_SCALARS}
    assert network == zoo
    assert {k.removeprefix("moments.") for k in saved if k.startswith("moments.")} <= zoo
    return saved


@pytest.mark.slow
def test_fine_tune_whole_network_from_a_zoo_checkpoint(zoo_ckpt, trees, tmp_path):
    path, zoo = zoo_ckpt
    # A small learning rate: every weight moves, none far from where the zoo's checkpoint put it
    # (depthwise weights move most: BatchNorm after them makes their gradient scale as 1/|w|).
    config = small_config(trees, tmp_path / "out", epochs=1, pretrain_ckpt=str(path), freeze_layer="none",
                          eval_dataset_path="", warmup_epochs=0, lr_init=0.001, lr_max=0.001, lr_end=0.001)
    result = train(config, DistContext())
    assert result.exit_code == ExitCode.SUCCESS
    after = assert_zoo_names(result.last_checkpoint)
    for name, value in zoo.items():
        if name.endswith("weight"):
            assert not np.array_equal(after[name], value), f"{name} did not train"
            # An independent draw of the same initialisation lies ~1.4 mean magnitudes away.
            moved = np.abs(after[name] - value).mean() / np.abs(value).mean()
            assert moved < 0.75, f"{name} did not start from the zoo's values"


@pytest.mark.slow
def test_head_only_from_a_zoo_checkpoint_keeps_its_backbone(zoo_ckpt, trees, tmp_path):
    path, zoo = zoo_ckpt
    config = small_config(trees, tmp_path / "out", epochs=2, pretrain_ckpt=str(path), freeze_layer="backbone",
                          eval_dataset_path="")
    result = train(config, DistContext())
    assert result.exit_code == ExitCode.SUCCESS
    after = assert_zoo_names(result.last_checkpoint)
    for name, value in zoo.items():
        if name.startswith("features."):
            np.testing.assert_array_equal(after[name], value, err_msg=name)
    assert not np.allclose(after["dense.weight"], zoo["dense.weight"])


@pytest.mark.slow
def test_eval_reads_a_zoo_checkpoint(zoo_ckpt, trees):
    path, _ = zoo_ckpt
    run = mnv2("eval", "--dataset_path", str(trees.val), "--pretrain_ckpt", str(path), *SMALL_FLAGS)
    assert run.returncode == 0, run.stderr
    match = RESULT_RE.search(run.stdout)
    assert match and match.group(3) == str(path), run.stdout
    assert 0.0 <= float(match.group(1)) <= float(match.group(2)) <= 1.0


def test_old_names_still_resume_fine_tune_and_evaluate(device, tmp_path):
    """Files our first versions wrote (`backbone.features.*`, `head.dense.*`, `moments.backbone...`)."""
    import mindspore as ms
    from mindspore import nn
    from mnv2.hub import create_network

    def fresh(seed):
        network = create_network("mobilenetv2", num_classes=CLASSES, width_mult=WIDTH, seed=seed)
        optimizer = nn.Momentum(network.trainable_params(), learning_rate=0.1, momentum=0.9)
        return network, optimizer

    network, optimizer = fresh(1)
    for moment in optimizer.moments:
        moment.set_data(ms.Tensor(np.full(moment.shape, 0.5, np.float32)))

    def legacy(name):
        return re.sub(r"(^|\.)features\.", r"\1backbone.features.", re.sub(r"(^|\.)dense\.", r"\1head.dense.",
                      name, count=1), count=1)

    entries = ckpt.collect_parameters(network, optimizer)
    old = [{"name": legacy(e["name"]), "data": e["data"]} for e in entries]
    assert "head.dense.weight" in {e["name"] for e in old}
    assert "moments.backbone.features.0.features.0.weight" in {e["name"] for e in old}
    path = tmp_path / "mobilenetv2-1_8.ckpt"
    ms.save_checkpoint(old, str(path))

    expected = {p.name: p.asnumpy() for p in network.get_parameters()}
    resumed, resumed_optimizer = fresh(2)
    ckpt.restore(path, resumed, resumed_optimizer)
    for p in resumed.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), expected[p.name], err_msg=p.name)
    assert all(np.all(m.asnumpy() == 0.5) for m in resumed_optimizer.moments)

    for load in (ckpt.load_pretrained, ckpt.load_for_inference):
        target, _ = fresh(3)
        load(target, path, *([CLASSES] if load is ckpt.load_pretrained else []))
        for p in target.get_parameters():
            np.testing.assert_array_equal(p.asnumpy(), expected[p.name], err_msg=p.name)
