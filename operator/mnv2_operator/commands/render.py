"""`mnv2 render job.yaml`: print every object the operator would create for a job, as YAML.

Like `helm template`: nothing is contacted. The job must pass the operator's policy (the default,
or --operator-config's), as it must on a cluster; a violation exits 64 naming field and rule.
Owner references appear only when the manifest carries a uid (one fetched from a cluster); the
rank-table ConfigMap is shown as created (initializing).
"""

from __future__ import annotations

import argparse

from mnv2_operator.commands.validate import add_operator_config_argument

HELP = "print the Kubernetes objects the operator would create for a job manifest (YAML)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="MobileNetV2TrainJob manifest (YAML)")
    add_operator_config_argument(parser)
    parser.add_argument(
        "--namespace", "-n", default=None, help="namespace (default: the manifest's, else default)"
    )


def run(args: argparse.Namespace) -> int:
    import sys

    import yaml

    from mnv2_operator.api import load_job_file
    from mnv2_operator.commands.validate import checked
    from mnv2_operator.profiles import load_operator_config
    from mnv2_operator.render import render_job

    raw = load_job_file(args.job)
    if args.namespace and isinstance(raw.get("metadata"), dict):
        raw["metadata"] = {**raw["metadata"], "namespace": args.namespace}
    config = load_operator_config(args.operator_config)
    ctx = checked(raw, config, args.job)  # SpecError names the file and every field at fault
    objects = render_job(ctx.job, config)
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False))
    return 0
