"""`mnv2 train`: train, fine-tune or train the head only (the seed's train.py flags, plus one per setting)."""

from __future__ import annotations

import argparse

from mnv2.exitcodes import ConfigError, ExitCode
from mnv2.options import add_config_arguments, resolve

HELP = "train MobileNetV2 (from scratch, fine-tune the whole network, or the head only)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    config = resolve(args)  # validated before MindSpore is imported
    if not config.dataset_path:
        raise ConfigError("dataset_path: required (a folder with one sub-folder per class)")

    from mnv2.distributed import is_scheduler, setup
    from mnv2.train import StopFlag, set_device_context, train

    set_device_context(config)
    ctx = setup()
    if is_scheduler():
        return ExitCode.SUCCESS  # the scheduler's init() served the cluster until the workers left
    stop = StopFlag().install()
    try:
        return int(train(config, ctx, stop).exit_code)
    finally:
        stop.restore()
