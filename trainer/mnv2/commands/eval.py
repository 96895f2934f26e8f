"""`mnv2 eval`: top-1/top-5 accuracy of a checkpoint on an image-folder tree (the seed's eval.py).

The model's shape (classes, width, image size) comes from the `config.yaml` saved beside the
checkpoint unless a flag, `--config` or the launch environment says otherwise. The data is
`--dataset_path` (or the configuration's eval_dataset_path, else dataset_path); the checkpoint is
`--pretrain_ckpt` (a file, or a folder: its newest checkpoint), else the newest in output_dir.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mnv2.config import load_config_file
from mnv2.exitcodes import ConfigError, ExitCode
from mnv2.options import add_config_arguments, env_layer, file_layer, flag_layer, normalise, saved_config_near

HELP = "evaluate a checkpoint: prints result: {'acc': ..., 'top_5_accuracy': ...} ckpt=..."
MODEL_FIELDS = ("num_classes", "width_mult", "image_size")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def _base_from_saved(args: argparse.Namespace) -> dict:
    layers = {**file_layer(args), **env_layer(), **flag_layer(args)}
    checkpoint = layers.get("pretrain_ckpt") or str(Path(layers.get("output_dir", "./output")) / "checkpoint")
    saved = saved_config_near(checkpoint)
    if saved is None:
        return {}
    values = normalise(load_config_file(saved), str(saved))
    return {key: values[key] for key in MODEL_FIELDS if key in values}


def run(args: argparse.Namespace) -> int:
    from mnv2.config import build_config

    flags = flag_layer(args)
    merged = build_config(_base_from_saved(args), file_layer(args), env_layer(), flags)
    data_path = flags.get("dataset_path") or merged.eval_dataset_path or merged.dataset_path
    if not data_path:
        raise ConfigError("dataset_path: required (the evaluation folder, one sub-folder per class)")
    checkpoint = merged.pretrain_ckpt or str(Path(merged.output_dir) / "checkpoint")
    config = merged.model_copy(update={"dataset_path": data_path, "pretrain_ckpt": checkpoint})

    from mnv2 import checkpoint as ckpt
    from mnv2 import data
    from mnv2.distributed import is_scheduler, setup
    from mnv2.evaluate import evaluate
    from mnv2.hub import create_network
    from mnv2.logs import emit, notice, result_line
    from mnv2.train import eval_batches, seed_everything, set_device_context, use_fast_cpu_kernels

    index = data.scan_image_folder(config.dataset_path)
    data.check_num_classes(index, config.num_classes)
    path = ckpt.resolve_checkpoint(config.pretrain_ckpt)
    set_device_context(config)
    ctx = setup()
    if is_scheduler():
        return ExitCode.SUCCESS
    seed_everything(config.seed)
    network = create_network("mobilenetv2", num_classes=config.num_classes, width_mult=config.width_mult)
    ckpt.load_for_inference(network, path)
    use_fast_cpu_kernels(network, config)
    batches, total = eval_batches(index, config, ctx)
    result = evaluate(network, batches, ctx, total_batches=total)
    if ctx.is_main:
        notice(f"evaluation: {result.correct1} of {result.total} images right (top-1), "
               f"{result.correct5} in the top 5, over {ctx.world} rank(s)")
        emit(result_line(acc=result.top1, top5=result.top5, ckpt=str(path)))
    return ExitCode.SUCCESS
