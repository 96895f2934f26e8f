"""Fine-tuning modes, resume, divergence and checkpoint failures, with real MindSpore runs."""

from __future__ import annotations

import errno

import numpy as np
import pytest
from conftest import StopAfter, small_config
from mnv2 import checkpoint as ckpt
from mnv2.distributed import DistContext
from mnv2.exitcodes import CheckpointError, DivergedError, ExitCode, TrainerError
from mnv2.train import train

pytestmark = pytest.mark.slow


def params_of(path) -> dict[str, np.ndarray]:
    import mindspore as ms

    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items()}


def params_of_network(**kwargs) -> dict[str, np.ndarray]:
    from mnv2.hub import create_network

    network = create_network("mobilenetv2", width_mult=0.25, **kwargs)
    return {p.name: p.asnumpy() for p in network.get_parameters()}


def last_checkpoint(trained):
    return ckpt.list_checkpoints(trained.output / "checkpoint")[-1]


def test_resume_mid_epoch_continues_the_run_reproducibly(trees, device, tmp_path):
    """The interrupted part equals an unbroken run; the resumed part continues at the exact step with
    the same files, and is reproducible. Its crops differ from the unbroken run's: a resumed epoch
    starts its pipeline after the trained batches instead of decoding them again (issue 14)."""
    import shutil

    overrides = dict(epochs=2, eval_dataset_path="", warmup_epochs=1)
    whole = train(small_config(trees, tmp_path / "whole", **overrides), DistContext())
    config = small_config(trees, tmp_path / "split", **overrides)
    first = train(config, DistContext(), StopAfter(11))  # epoch 1, step 3 of 8
    assert first.exit_code == ExitCode.INTERRUPTED
    assert first.last_checkpoint.name == "mobilenetv2-2_3.ckpt"
    np.testing.assert_allclose(first.losses, whole.losses[:11], rtol=1e-4, atol=1e-5)
    shutil.copytree(tmp_path / "split", tmp_path / "again")
    resumed = [train(config.model_copy(update={"resume": True, "output_dir": str(tmp_path / folder)}),
                     DistContext()) for folder in ("split", "again")]
    for second in resumed:
        assert second.exit_code == ExitCode.SUCCESS and second.global_step == 16 and len(second.losses) == 5
        assert second.last_checkpoint.name == "mobilenetv2-2_8.ckpt"
    np.testing.assert_array_equal(resumed[0].losses, resumed[1].losses)
    a, b, c = (params_of(r.last_checkpoint) for r in (whole, *resumed))
    assert a.keys() == b.keys() and any(k.startswith("moments.") for k in a)
    assert b["global_step"].item() == a["global_step"].item() == 16  # the optimizer's step (its lr) went on
    for name in b:
        np.testing.assert_array_equal(b[name], c[name], err_msg=name)


def test_fine_tune_whole_network_drops_a_mismatched_head(trained, trees, tmp_path, capsys):
    source = last_checkpoint(trained)
    config = small_config(trees, tmp_path, num_classes=5, epochs=1, pretrain_ckpt=str(source),
                          freeze_layer="none", eval_dataset_path="")
    result = train(config, DistContext())
    assert result.exit_code == ExitCode.SUCCESS
    assert "head has 4 classes, this run 5: dropping the checkpoint's head" in capsys.readouterr().err
    before, after = params_of(source), params_of(result.last_checkpoint)
    assert after["dense.weight"].shape == (5, 1280)
    stem = "features.0.features.0.weight"
    assert not np.allclose(before[stem], after[stem])  # the backbone trained too
    fresh = params_of_network(num_classes=5, seed=config.seed)[stem]
    # ...starting from the checkpoint, not from a fresh initialisation
    assert np.abs(after[stem] - before[stem]).mean() < np.abs(after[stem] - fresh).mean()


def test_head_only_trains_the_head_on_cached_features(trained, trees, tmp_path, capsys, monkeypatch):
    source = last_checkpoint(trained)
    config = small_config(trees, tmp_path, epochs=4, pretrain_ckpt=str(source), freeze_layer="backbone",
                          lr_max=0.1)
    first = train(config, DistContext())
    caches = list(tmp_path.glob("features-*.npz"))
    assert len(caches) == 1
    before, after = params_of(source), params_of(first.last_checkpoint)
    for name in before:
        if name.startswith("features."):
            np.testing.assert_array_equal(before[name], after[name], err_msg=name)
    assert not np.allclose(before["dense.weight"], after["dense.weight"])
    assert first.top1 >= 0.4  # chance is 0.25

    import mnv2.features

    def no_extraction(*args, **kwargs):
        raise AssertionError("features were extracted again instead of read from the cache")

    monkeypatch.setattr(mnv2.features, "extract_features", no_extraction)
    capsys.readouterr()
    second = train(config, DistContext())
    assert "reusing cached backbone features" in capsys.readouterr().err
    np.testing.assert_allclose(second.losses, first.losses, rtol=1e-5)


def test_shape_mismatch_names_the_parameter(trained, device, tmp_path):
    import mindspore as ms
    from mnv2.hub import create_network

    wider = create_network("mobilenetv2", num_classes=4, width_mult=0.35, seed=0)
    path = tmp_path / "wide.ckpt"
    ms.save_checkpoint(wider, str(path))
    narrow = create_network("mobilenetv2", num_classes=4, width_mult=0.25, seed=0)
    stem = r"features\.0\.features\.0\.weight has shape"
    with pytest.raises(CheckpointError, match=stem) as info:
        ckpt.load_pretrained(narrow, path, num_classes=4)
    assert info.value.exit_code == ExitCode.INVALID_CHECKPOINT
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        ckpt.load_pretrained(narrow, tmp_path / "absent.ckpt", num_classes=4)


def test_nan_loss_is_diverged_naming_the_step(trained, trees, tmp_path):
    import mindspore as ms

    params = params_of(last_checkpoint(trained))
    params["dense.weight"][:] = np.nan
    poisoned = tmp_path / "nan.ckpt"
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in params.items()], str(poisoned))
    config = small_config(trees, tmp_path / "out", epochs=1, pretrain_ckpt=str(poisoned),
                          eval_dataset_path="")
    with pytest.raises(DivergedError, match=r"at global step 0 \(epoch 0, step 0\)") as info:
        train(config, DistContext())
    assert info.value.exit_code == ExitCode.DIVERGED


def test_failed_save_keeps_the_previous_checkpoint(trained, tmp_path, monkeypatch):
    from mnv2.hub import create_network

    network = create_network("mobilenetv2", num_classes=4, width_mult=0.25, seed=0)
    folder = tmp_path / "checkpoint"
    meta = {"epoch": 1, "step_in_epoch": 0, "global_step": 8, "steps_per_epoch": 8}
    good = ckpt.save_atomic(ckpt.collect_parameters(network), folder / ckpt.checkpoint_name(0, 8), meta)
    original = good.read_bytes()

    def disk_full(save_obj, path, meta):
        path.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "_write", disk_full)
    with pytest.raises(TrainerError, match=r"mobilenetv2-2_8\.ckpt: .*No space left") as info:
        ckpt.save_atomic(ckpt.collect_parameters(network), folder / ckpt.checkpoint_name(1, 8), meta)
    assert info.value.exit_code == ExitCode.IO_ERROR
    assert [p.name for p in folder.iterdir()] == [good.name]
    assert good.read_bytes() == original
