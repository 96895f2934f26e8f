"""`mnv2 validate job.yaml`: every problem of a manifest at once, each with its field path.

The job is checked as the cluster would check it: the schema and cross-field rules, the operator
configuration's profiles, and its policy (mnv2_operator.policy; the packaged default, or the file
given with --operator-config). Exit 0 when the job is valid, 64 when not.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mnv2_operator.profiles import OperatorConfig
    from mnv2_operator.render import RenderContext

HELP = "check a job manifest against the schema and the operator's policy (exit 0 or 64)"


def add_operator_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--operator-config",
        "--config",
        dest="operator_config",
        default=None,
        metavar="FILE",
        help="operator configuration (YAML, merged over the defaults) whose profiles and policy apply",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="MobileNetV2TrainJob manifest (YAML)")
    add_operator_config_argument(parser)


def checked(raw: dict[str, Any], config: OperatorConfig, source: str) -> RenderContext:
    """The job's render context, or SpecError listing every problem: the manifest's, the profile's
    and the policy's (the same `violations` the operator and the admission policy apply)."""
    from mnv2_operator.api import SpecError, parse_job
    from mnv2_operator.policy import violations
    from mnv2_operator.render import resolve

    problems: list[tuple[str, str]] = []
    ctx = None
    try:
        ctx = resolve(parse_job(raw, source=source), config)
    except SpecError as error:
        problems += error.problems
    problems += [p for p in violations(raw, config) if p not in problems]
    if problems or ctx is None:
        raise SpecError(problems, source)
    return ctx


def run(args: argparse.Namespace) -> int:
    import sys

    from mnv2.exitcodes import ExitCode

    from mnv2_operator.api import SpecError, load_job_file, one_line
    from mnv2_operator.profiles import load_operator_config

    raw = load_job_file(args.job)
    try:
        ctx = checked(raw, load_operator_config(args.operator_config), args.job)
    except SpecError as error:
        print(f"{one_line(args.job)}: invalid, {len(error.problems)} problem(s):", file=sys.stderr)
        for path, message in error.problems:
            print(f"  {one_line(path) or '(manifest)'}: {one_line(message)}", file=sys.stderr)
        return ExitCode.INVALID_CONFIG
    job = ctx.job
    print(
        f"{args.job}: valid: {job.metadata.namespace}/{job.metadata.name}, {job.spec.platform.value}, "
        f"mode {job.spec.mode.value}, {ctx.replicas} replica(s) x {ctx.devices} device(s), image {ctx.image}"
    )
    return 0
