"""`mnv2 ranktable pods.json`: the HCCL rank table the operator would write for these pods.

Reads `kubectl get pods -o json` output (a PodList, a single Pod, or a JSON list of pods), keeps
the pods of one job (--job, by the job-name label) when asked, and prints the table as the
ConfigMap's hccl.json would hold it. While the table is initializing, stderr says which pod lacks
what, which is usually the question when a real Ascend job hangs.
"""

from __future__ import annotations

import argparse

HELP = "print the Ascend rank table for a PodList (kubectl get pods -o json), to debug a cluster"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pods", help="PodList JSON file ('-' reads stdin)")
    parser.add_argument(
        "--devices-per-pod",
        type=int,
        default=None,
        help="devices per pod (default: from the pods' MNV2_DEVICES_PER_REPLICA or annotations)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=None,
        help="expected pods (default: the pods' MNV2_REPLICAS, else the number of pods)",
    )
    parser.add_argument("--job", default=None, help="only pods with label training.mindspore.io/job-name=JOB")


def _read(path: str) -> object:
    import json
    import sys
    from pathlib import Path

    from mnv2.exitcodes import InputError

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not JSON: {error.msg} at line {error.lineno}") from None


def _pods(doc: object, path: str) -> list[dict]:
    from mnv2.exitcodes import InputError

    if isinstance(doc, dict) and isinstance(doc.get("items"), list):
        items = doc["items"]
    elif isinstance(doc, dict) and doc.get("kind") == "Pod":
        items = [doc]
    elif isinstance(doc, list):
        items = doc
    else:
        raise InputError(f"{path}: expected a PodList, a Pod or a list of pods")
    if not all(isinstance(p, dict) for p in items):
        raise InputError(f"{path}: every item must be a Pod object")
    return items


def _env_int(pod: dict, name: str) -> int | None:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for env in container.get("env") or []:
            if env.get("name") == name and str(env.get("value", "")).isdigit():
                return int(env["value"])
    return None


def _devices_per_pod(pods: list[dict]) -> int | None:
    import json

    from mnv2 import launchenv
    from mnv2.ranktable import DEVICE_ANNOTATIONS

    for pod in pods:
        declared = _env_int(pod, launchenv.DEVICES_PER_REPLICA)
        if declared:
            return declared
    for pod in pods:
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        for key in DEVICE_ANNOTATIONS:
            try:
                devices = json.loads(annotations[key]).get("devices")
            except (KeyError, ValueError, AttributeError):
                continue
            if isinstance(devices, list) and devices:
                return len(devices)
    return None


def explain(pods: list[dict]) -> list[str]:
    """Why a table is still initializing: one line per pod that lacks an IP or its annotation."""
    from mnv2.ranktable import DEVICE_ANNOTATIONS

    lines = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        name = meta.get("name", "<unnamed>")
        if meta.get("deletionTimestamp"):
            lines.append(f"pod {name}: terminating")
        if not (pod.get("status") or {}).get("podIP"):
            lines.append(f"pod {name}: no pod IP yet (phase {(pod.get('status') or {}).get('phase', '?')})")
        if not any(key in (meta.get("annotations") or {}) for key in DEVICE_ANNOTATIONS):
            lines.append(f"pod {name}: no {DEVICE_ANNOTATIONS[0]} annotation (Ascend device plugin)")
    return lines


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from mnv2 import launchenv
    from mnv2.exitcodes import InputError
    from mnv2.ranktable import RankTableError, render_rank_table

    pods = _pods(_read(args.pods), args.pods)
    if args.job:
        pods = [
            p
            for p in pods
            if ((p.get("metadata") or {}).get("labels") or {}).get("training.mindspore.io/job-name")
            == args.job
        ]
    devices = args.devices_per_pod or _devices_per_pod(pods)
    if not devices or devices < 1:
        raise InputError(f"{args.pods}: cannot tell the devices per pod; pass --devices-per-pod")
    replicas = args.replicas
    if replicas is None:
        declared = [n for n in (_env_int(p, launchenv.REPLICAS) for p in pods) if n]
        replicas = max(declared) if declared else None
    try:
        table = render_rank_table(pods, devices, replicas=replicas)
    except RankTableError as error:
        raise InputError(f"{args.pods}: {error}") from None
    print(json.dumps(table, indent=2))
    if table.get("status") != "completed":
        found = len(pods)
        print(
            f"rank table initializing: {found} pod(s) found" + (f", {replicas} expected" if replicas else ""),
            file=sys.stderr,
        )
        for line in explain(pods):
            print(f"  {line}", file=sys.stderr)
    return 0
