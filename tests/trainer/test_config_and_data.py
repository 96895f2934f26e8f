"""Configuration layering and flags, dataset scanning and sharding, the model's names and init."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from mnv2 import launchenv
from mnv2.config import TrainingConfig
from mnv2.data import (
    PIPELINE_NICE,
    READ_AHEAD,
    create_eval_dataset,
    create_train_dataset,
    epoch_indices,
    eval_indices,
    eval_resize,
    scan_image_folder,
    steps_per_epoch,
    yielding_cores,
)
from mnv2.datasets import make_digits_tree, make_synthetic_tree
from mnv2.exitcodes import ConfigError, ExitCode, InputError
from mnv2.options import add_config_arguments, resolve
from PIL import Image


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return parser.parse_args(list(argv))


def test_every_field_has_a_flag():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    flags = {opt for action in parser._actions for opt in action.option_strings}
    for name in TrainingConfig.model_fields:
        assert f"--{name}" in flags
    seed_flags = {"--platform", "--dataset_path", "--pretrain_ckpt", "--freeze_layer", "--eval_dataset_path"}
    assert seed_flags <= flags


def test_layers_preset_file_env_flags(tmp_path, monkeypatch):
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump({"platform": "GPU", "batchSize": 32, "epochs": 7, "seed": 3}))
    monkeypatch.setenv(launchenv.TRAINING_CONFIG, json.dumps({"epochs": 9, "seed": 4}))
    config = resolve(parse("--config", str(file), "--seed", "5", "--resume"))
    assert config.platform == "GPU"
    assert config.lr_max == 0.8  # GPU preset
    assert config.batch_size == 32  # file (camelCase accepted)
    assert config.epochs == 9  # environment over file
    assert config.seed == 5  # flag over environment
    assert config.resume is True


def test_bad_settings_name_their_source_and_field(tmp_path, monkeypatch):
    file = tmp_path / "c.yaml"
    file.write_text("bogus_key: 1\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: bogus_key"):
        resolve(parse("--config", str(file)))
    monkeypatch.setenv(launchenv.TRAINING_CONFIG, "{not json")
    with pytest.raises(ConfigError, match=launchenv.TRAINING_CONFIG):
        resolve(parse())
    monkeypatch.delenv(launchenv.TRAINING_CONFIG)
    with pytest.raises(ConfigError, match="amp_level") as info:
        resolve(parse("--platform", "CPU", "--amp_level", "O2"))
    assert info.value.exit_code == ExitCode.INVALID_CONFIG


def test_scan_lists_in_imagefolder_order_and_names_bad_inputs(tmp_path):
    root = make_synthetic_tree(tmp_path / "t", classes=3, per_class=4, size=32, seed=0)
    index = scan_image_folder(root)
    assert index.classes == ["class_00", "class_01", "class_02"]
    assert [p.name for p in index.files[:4]] == ["0000.png", "0001.png", "0002.png", "0003.png"]
    assert list(index.labels) == [0] * 4 + [1] * 4 + [2] * 4

    with pytest.raises(InputError, match="no such folder") as info:
        scan_image_folder(tmp_path / "missing")
    assert info.value.exit_code == ExitCode.INVALID_INPUT
    (root / "class_03").mkdir()
    with pytest.raises(InputError, match=r"class_03: class folder has no images"):
        scan_image_folder(root)
    (root / "class_03").rmdir()
    # A listing opens no image: a corrupt file is found where it is decoded (test_startup.py).
    (root / "class_01" / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
    assert scan_image_folder(root).num_images == 12


def test_eval_classes_follow_the_training_labels(tmp_path):
    train = make_synthetic_tree(tmp_path / "train", classes=3, per_class=2, size=32, seed=0)
    val = make_synthetic_tree(tmp_path / "val", classes=3, per_class=2, size=32, seed=1)
    import shutil

    shutil.rmtree(val / "class_01")
    index = scan_image_folder(val, class_names=scan_image_folder(train).classes)
    assert index.class_indexing == {"class_00": 0, "class_02": 2}
    assert list(index.labels) == [0, 0, 2, 2]


def test_sharding_equal_train_shares_and_exact_eval_cover(tmp_path):
    root = make_synthetic_tree(tmp_path / "t", classes=2, per_class=11, size=32, seed=0)
    index = scan_image_folder(root)
    shares = [epoch_indices(index, epoch=3, seed=1, rank=r, world=4) for r in range(4)]
    assert {len(s) for s in shares} == {5}
    assert len(set(np.concatenate(shares))) == 20
    assert not np.array_equal(epoch_indices(index, epoch=3, seed=1, rank=0, world=4),
                              epoch_indices(index, epoch=4, seed=1, rank=0, world=4))
    cover = np.concatenate([eval_indices(index, rank=r, world=4) for r in range(4)])
    assert sorted(cover) == list(range(22))
    assert steps_per_epoch(index, batch_size=5, world=4) == 1
    with pytest.raises(InputError, match="less than one batch"):
        steps_per_epoch(index, batch_size=6, world=4)
    assert eval_resize(224) == 256 and eval_resize(32) == 37


def test_pipelines_read_only_a_few_batches_ahead(tmp_path):
    """MindSpore's default queue of 16 per stage held 16 decoded batches (1.4 GB at batch 150)."""
    import mindspore.dataset as ds

    index = scan_image_folder(make_synthetic_tree(tmp_path / "t", classes=2, per_class=4, size=32, seed=0))
    ds.config.set_prefetch_size(16)
    try:
        train = create_train_dataset(index, image_size=32, batch_size=2, epoch=0, seed=0, workers=1)
        assert ds.config.get_prefetch_size() == READ_AHEAD <= 4
        ds.config.set_prefetch_size(16)
        create_eval_dataset(index, image_size=32, batch_size=2, workers=1)
        assert ds.config.get_prefetch_size() == READ_AHEAD
        assert sum(1 for _ in train.create_tuple_iterator(num_epochs=1)) == 4
    finally:
        ds.config.set_prefetch_size(16)


def _niceness() -> dict[str, int]:
    """Each thread of this process and its nice value (field 19 of /proc/<pid>/task/<tid>/stat, proc(5))."""
    nice = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:  # ended meanwhile
            continue
        nice[tid] = int(stat.rsplit(")", 1)[1].split()[16])
    return nice


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")
def test_the_pipelines_threads_yield_the_cores_to_the_training_step(tmp_path):
    """The threads MindSpore's dataset starts for an epoch decode at the lowest priority; the threads
    that were there before (the training step's) keep theirs."""
    index = scan_image_folder(make_synthetic_tree(tmp_path / "t", classes=2, per_class=4, size=32, seed=0))
    train = create_train_dataset(index, image_size=32, batch_size=2, epoch=0, seed=0, workers=2)
    before = _niceness()
    batches = yielding_cores(train.create_tuple_iterator(num_epochs=1))
    next(batches)
    during = _niceness()
    started = set(during) - set(before)
    assert started, "MindSpore started no pipeline thread"
    assert {during[tid] for tid in started} == {PIPELINE_NICE}
    assert all(during[tid] == nice for tid, nice in before.items() if tid in during)
    assert sum(1 for _ in batches) == 3


def test_digits_tree_is_deterministic(tmp_path):
    make_digits_tree(tmp_path / "a", image_size=32)
    train = sorted((tmp_path / "a" / "train").rglob("*.png"))
    val = sorted((tmp_path / "a" / "val").rglob("*.png"))
    assert len(train) + len(val) == 1797 and len(val) == 360
    assert len({p.parent.name for p in val}) == 10
    with Image.open(train[0]) as image:
        assert image.size == (32, 32) and image.mode == "RGB"


def test_augmentation_settings_default_to_the_zoo_and_are_checked():
    config = resolve(parse())
    assert (config.min_crop_scale, config.horizontal_flip) == (0.08, True)  # the zoo's ImageNet recipe
    tuned = resolve(parse("--min_crop_scale", "0.6", "--no_horizontal_flip"))
    assert (tuned.min_crop_scale, tuned.horizontal_flip) == (0.6, False)
    with pytest.raises(ConfigError, match="min_crop_scale"):
        resolve(parse("--min_crop_scale", "0"))


def test_periodic_evaluation_settings():
    config = resolve(parse("--eval_interval", "2", "--keep_best", "--eval_dataset_path", "/data/val"))
    assert (config.eval_interval, config.keep_best) == (2, True)
    with pytest.raises(ConfigError, match="eval_interval: periodic evaluation needs eval_dataset_path"):
        resolve(parse("--eval_interval", "2"))
    assert (resolve(parse()).eval_interval, resolve(parse()).keep_best) == (0, False)
    with pytest.raises(ConfigError, match=r"keep_best: .*eval_interval"):
        resolve(parse("--keep_best"))
    with pytest.raises(ConfigError, match="eval_interval"):
        resolve(parse("--eval_interval", "-1"))


def test_bf16_pointwise_is_opt_in_and_cpu_only():
    """float32 stays the exact default; bf16 is a CPU kernel's setting, so elsewhere it is an error."""
    assert resolve(parse()).bf16_pointwise is False
    assert resolve(parse("--bf16_pointwise")).bf16_pointwise is True
    with pytest.raises(ConfigError, match=r"bf16_pointwise: CPU only.*platform = GPU from flag --platform"):
        resolve(parse("--bf16_pointwise", "--platform", "GPU"))
    with pytest.raises(ConfigError, match=r"bf16_pointwise: .*fast_depthwise = False"):
        resolve(parse("--bf16_pointwise", "--no_fast_depthwise"))


def test_export_formats_flag_takes_several_formats():
    config = resolve(parse("--export_formats", "MINDIR", "ONNX"))
    assert config.export_formats == ["MINDIR", "ONNX"]
    assert resolve(parse()).export_formats == []
    with pytest.raises(ConfigError, match="export_formats: AIR is written only on Ascend"):
        resolve(parse("--export_formats", "AIR"))


@pytest.mark.parametrize("platform", ["Ascend", "GPU", "CPU"])
@pytest.mark.parametrize(
    ("field", "values"),
    [("lr_max", [0.0, 0.001, 0.01, 5.0]), ("lr_end", [0.0, 0.05, 2.0]), ("lr_init", [0.0, 3.0]),
     ("epochs", [1, 2, 3, 1000]), ("warmup_epochs", [0, 5, 300]), ("batch_size", [1, 4096])],
)
def test_a_value_given_alone_never_fails_on_a_preset_it_did_not_give(platform, field, values):
    for value in values:
        config = resolve(parse("--platform", platform, f"--{field}", str(value)))
        assert getattr(config, field) == value
        assert config.lr_end <= config.lr_max and config.warmup_epochs <= config.epochs


def test_derived_presets_follow_the_users_value():
    cpu = resolve(parse("--lr_max", "0.01"))  # the case: the CPU preset's lr_end is 0.03
    assert (cpu.lr_init, cpu.lr_max, cpu.lr_end) == (0.01, 0.01, 0.01)  # still the preset's constant rate
    gpu = resolve(parse("--platform", "GPU", "--lr_max", "0.2"))
    assert (gpu.lr_init, gpu.lr_end) == (0.0, 0.0)  # the preset's warm-up from 0 and decay to 0
    assert resolve(parse("--lr_end", "0.05")).lr_max == 0.05
    assert resolve(parse("--platform", "Ascend", "--epochs", "2")).warmup_epochs == 2
    assert resolve(parse("--platform", "Ascend", "--epochs", "20")).warmup_epochs == 4  # no conflict: as is
    assert resolve(parse("--warmup_epochs", "20")).epochs == 20
    # Given values are never changed, and an explicit lr_end still wins over the derivation.
    both = resolve(parse("--lr_max", "0.1", "--lr_end", "0.0"))
    assert (both.lr_init, both.lr_max, both.lr_end) == (0.1, 0.1, 0.0)


def test_conflicting_given_values_name_each_value_and_its_source(tmp_path, monkeypatch):
    file = tmp_path / "c.yaml"
    file.write_text("lrMax: 0.01\nepochs: 3\n")
    with pytest.raises(ConfigError) as info:
        resolve(parse("--config", str(file), "--lr_end", "0.05"))
    assert str(info.value) == (
        "configuration: lr_end: must not exceed lr_max "
        f"(lr_end = 0.05 from flag --lr_end; lr_max = 0.01 from file {file})"
    )
    monkeypatch.setenv(launchenv.TRAINING_CONFIG, json.dumps({"warmup_epochs": 5}))
    with pytest.raises(ConfigError, match=(
        r"warmup_epochs: must not exceed epochs \(warmup_epochs = 5 from \$MNV2_TRAINING_CONFIG; "
        rf"epochs = 3 from file {file}\)"
    )):
        resolve(parse("--config", str(file)))
    monkeypatch.delenv(launchenv.TRAINING_CONFIG)
    with pytest.raises(ConfigError, match=r"amp_level = O2 from flag --amp_level"):
        resolve(parse("--amp_level", "O2"))
    with pytest.raises(ConfigError, match=(
        r"loss_scale = 1024.0 from flag --loss_scale; dynamic_loss_scale = False from the CPU preset"
    )):
        resolve(parse("--loss_scale", "1024"))
