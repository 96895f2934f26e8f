"""`mnv2 export`: write a checkpoint's network for inference (MINDIR, ONNX, AIR on Ascend).

Files are `<stem>_logits.<suffix>` and `<stem>_softmax.<suffix>` (the model zoo's export graph ends in
a softmax), with a manifest `<stem>.json` naming what each holds; one line per file is printed too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mnv2.commands.eval import _base_from_saved
from mnv2.config import build_config
from mnv2.exitcodes import ExitCode
from mnv2.options import add_config_arguments, env_layer, file_layer, flag_layer

HELP = "export a checkpoint to MINDIR, ONNX or AIR (input: N x 3 x image_size x image_size, normalised)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file_format", choices=["MINDIR", "ONNX", "AIR", "all"], default="MINDIR",
                        help="what to write (default MINDIR; AIR only on Ascend; all: every format the "
                             "platform writes)")
    parser.add_argument("--output", choices=["logits", "softmax", "both"], default="both",
                        help="the graph's output: logits, softmax probabilities (the model zoo's export "
                             "graph) or both (default)")
    parser.add_argument("--file_name", metavar="STEM",
                        help="output path without suffix (default OUTPUT_DIR/mobilenetv2); files are "
                             "STEM_logits.mindir, STEM_softmax.mindir, ... and the manifest STEM.json")
    parser.add_argument("--export_batch_size", type=int, default=1, metavar="N",
                        help="batch dimension of the exported input (default 1)")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from mnv2.exitcodes import ConfigError
    from mnv2.export import formats_for, outputs_for

    if args.export_batch_size < 1:
        raise ConfigError("export_batch_size: must be at least 1")
    config = build_config(_base_from_saved(args), file_layer(args), env_layer(), flag_layer(args))
    formats = formats_for(args.file_format, str(config.platform))  # refused before any work
    outputs = outputs_for(args.output)
    checkpoint = config.pretrain_ckpt or str(Path(config.output_dir) / "checkpoint")
    stem = args.file_name or str(Path(config.output_dir) / "mobilenetv2")

    from mnv2 import checkpoint as ckpt
    from mnv2.export import export_network, write_manifest
    from mnv2.hub import create_network
    from mnv2.logs import emit
    from mnv2.train import set_device_context

    path = ckpt.resolve_checkpoint(checkpoint)
    set_device_context(config)
    # MindSpore's own kernels only: the project's CPU kernels are custom ops no inference runtime has.
    network = create_network("mobilenetv2", num_classes=config.num_classes, width_mult=config.width_mult)
    ckpt.load_for_inference(network, path)
    written = export_network(network, image_size=config.image_size, batch=args.export_batch_size,
                             file_stem=stem, formats=formats, outputs=outputs)
    folder = Path(stem).parent
    for item in written:
        emit(f"exported {folder / item.file}: {item.format}, output {item.output} ({item.contains}); "
             f"input {item.input}; from {path}")
    manifest = write_manifest(f"{stem}.json", written, checkpoint=str(path), num_classes=config.num_classes,
                              width_mult=config.width_mult, image_size=config.image_size)
    emit(f"manifest {manifest}")
    return ExitCode.SUCCESS
