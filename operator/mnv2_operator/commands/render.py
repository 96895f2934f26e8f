"""`mnv2 render job.yaml`: print every object the operator would create for a job, as YAML.

Like `helm template`: nothing is contacted. Owner references appear only when the manifest
carries a uid (one fetched from a cluster); the rank-table ConfigMap is shown as created
(initializing).
"""

from __future__ import annotations

import argparse

HELP = "print the Kubernetes objects the operator would create for a job manifest (YAML)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="MobileNetV2TrainJob manifest (YAML)")
    parser.add_argument(
        "--config", default=None, help="operator configuration (YAML) merged over the defaults"
    )
    parser.add_argument(
        "--namespace", "-n", default=None, help="namespace (default: the manifest's, else default)"
    )


def run(args: argparse.Namespace) -> int:
    import sys

    import yaml

    from mnv2_operator.api import load_job_file, parse_job
    from mnv2_operator.profiles import load_operator_config
    from mnv2_operator.render import render_job

    raw = load_job_file(args.job)
    if args.namespace and isinstance(raw.get("metadata"), dict):
        raw["metadata"] = {**raw["metadata"], "namespace": args.namespace}
    job = parse_job(raw, source=args.job)  # SpecError names the file and every field at fault
    objects = render_job(job, load_operator_config(args.config))
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False))
    return 0
