"""`mnv2 export`: write a checkpoint's network as MINDIR and/or ONNX for inference."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnv2.commands.eval import _base_from_saved
from mnv2.config import build_config
from mnv2.exitcodes import ExitCode
from mnv2.options import add_config_arguments, env_layer, file_layer, flag_layer

HELP = "export a checkpoint to MINDIR and/or ONNX (input: N x 3 x image_size x image_size, normalised)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file_format", choices=["MINDIR", "ONNX", "all"], default="MINDIR",
                        help="what to write (default MINDIR)")
    parser.add_argument("--file_name", metavar="STEM",
                        help="output path without suffix (default OUTPUT_DIR/mobilenetv2)")
    parser.add_argument("--export_batch_size", type=int, default=1, metavar="N",
                        help="batch dimension of the exported input (default 1)")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from mnv2.exitcodes import ConfigError

    if args.export_batch_size < 1:
        raise ConfigError("export_batch_size: must be at least 1")
    config = build_config(_base_from_saved(args), file_layer(args), env_layer(), flag_layer(args))
    checkpoint = config.pretrain_ckpt or str(Path(config.output_dir) / "checkpoint")
    formats = ["MINDIR", "ONNX"] if args.file_format == "all" else [args.file_format]
    stem = args.file_name or str(Path(config.output_dir) / "mobilenetv2")

    from mnv2 import checkpoint as ckpt
    from mnv2.export import export_network
    from mnv2.hub import create_network
    from mnv2.logs import emit
    from mnv2.train import set_device_context

    path = ckpt.resolve_checkpoint(checkpoint)
    set_device_context(config)
    network = create_network("mobilenetv2", num_classes=config.num_classes, width_mult=config.width_mult)
    ckpt.load_for_inference(network, path)
    for written in export_network(network, image_size=config.image_size, batch=args.export_batch_size,
                                  file_stem=stem, formats=formats):
        emit(f"exported {written} (from {path})")
    return ExitCode.SUCCESS
