"""`mnv2 validate job.yaml`: every problem of a manifest at once, each with its field path.

Exit 0 when the job is valid (and fits the operator configuration given with --config), 64 when not.
"""

from __future__ import annotations

import argparse

HELP = "check a job manifest and list every problem with its field path (exit 0 or 64)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="MobileNetV2TrainJob manifest (YAML)")
    parser.add_argument("--config", default=None, help="operator configuration to check the job against")


def run(args: argparse.Namespace) -> int:
    import sys

    from mnv2.exitcodes import ExitCode

    from mnv2_operator.api import SpecError, load_job_file, parse_job
    from mnv2_operator.profiles import load_operator_config
    from mnv2_operator.render import resolve

    raw = load_job_file(args.job)
    try:
        job = parse_job(raw, source=args.job)
        ctx = resolve(job, load_operator_config(args.config))
    except SpecError as error:
        print(f"{args.job}: invalid, {len(error.problems)} problem(s):", file=sys.stderr)
        for path, message in error.problems:
            print(f"  {path or '(manifest)'}: {message}", file=sys.stderr)
        return ExitCode.INVALID_CONFIG
    print(
        f"{args.job}: valid: {job.metadata.namespace}/{job.metadata.name}, {job.spec.platform.value}, "
        f"mode {job.spec.mode.value}, {ctx.replicas} replica(s) x {ctx.devices} device(s), image {ctx.image}"
    )
    return 0
