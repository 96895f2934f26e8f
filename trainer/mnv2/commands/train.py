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
    from mnv2.train import StopFlag, scan_datasets, set_device_context, train

    if is_scheduler():
        set_device_context(config)
        setup()  # init() serves the cluster until the workers leave
        return ExitCode.SUCCESS
    datasets = scan_datasets(config)  # bad inputs fail before MindSpore starts
    set_device_context(config)
    ctx = setup()
    # Until here SIGTERM ends the process at once (nothing to save); from here on the loop
    # finishes its step, saves a checkpoint and exits 143.
    stop = StopFlag().install()
    try:
        return int(train(config, ctx, stop, datasets).exit_code)
    finally:
        stop.restore()
