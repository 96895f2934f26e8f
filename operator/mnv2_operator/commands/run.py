"""`mnv2 run job.yaml`: run a MobileNetV2TrainJob on this machine, one process group per replica.

The pods are the operator's own rendering; see mnv2_operator.localrun for what is translated locally.
Exit code: 0 when the job succeeded, else the failing trainer's code (mnv2.exitcodes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "run a MobileNetV2TrainJob manifest on this machine (replicas as local processes)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", type=Path, help="the job manifest (YAML)")
    parser.add_argument(
        "--run-dir", type=Path, default=Path(".mnv2-run"),
        help="where volumes that are not hostPath live: RUN_DIR/<job>/<volume> (default: ./.mnv2-run)",
    )
    parser.add_argument(
        "--volume", action="append", default=[], metavar="NAME=DIR",
        help="use local folder DIR for the pod volume NAME (e.g. dataset=./data/digits); repeatable",
    )
    parser.add_argument(
        "--operator-config", default=None,
        help="operator configuration file (platform profiles); default: the built-in profiles",
    )
    parser.add_argument(
        "--progress-interval", type=float, default=10.0,
        help="seconds between progress lines read from rank 0's metrics (0: none; default 10)",
    )
    parser.add_argument(
        "--grace", type=float, default=30.0,
        help="seconds the trainers get to checkpoint and exit after Ctrl-C before they are killed",
    )
    parser.add_argument(
        "--dry-run", action="store_true",
        help="print each replica's command and environment (as `mnv2 launch` gets them) and exit",
    )


def _volumes(items: list[str]) -> dict[str, Path]:
    from mnv2.exitcodes import ConfigError

    volumes = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise ConfigError(f"--volume {item!r}: expected NAME=DIR")
        volumes[name] = Path(folder)
    return volumes


def run(args: argparse.Namespace) -> int:
    from mnv2_operator import localrun

    options = localrun.RunOptions(
        run_dir=args.run_dir, operator_config=args.operator_config,
        progress_interval=args.progress_interval, grace=args.grace, volumes=_volumes(args.volume),
    )
    if args.dry_run:
        return localrun.dry_run(args.job, options)
    return localrun.run_job(args.job, options)
