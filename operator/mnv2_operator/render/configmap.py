"""The rank-table ConfigMap `<job>-ranktable` (key `hccl.json`) for Ascend jobs in rank-table mode.

Created with `{"status": "initializing"}` together with the pods; the operator re-renders it from
the observed pods whenever they change, and `mnv2 launch` waits for "completed" (REFERENCE §3).
"""

from __future__ import annotations

import json
from typing import Any

from mnv2 import launchenv
from mnv2.ranktable import render_rank_table

from mnv2_operator import names
from mnv2_operator.api import Job
from mnv2_operator.profiles import OperatorConfig, load_operator_config
from mnv2_operator.render.context import RenderContext, object_meta, resolve

RANK_TABLE_KEY = "hccl.json"


def _declared_devices(pods: list[dict[str, Any]]) -> int | None:
    """The devices per pod the pods were started with (their MNV2_DEVICES_PER_REPLICA), if they agree."""
    declared = set()
    for pod in pods:
        for container in (pod.get("spec") or {}).get("containers") or []:
            for env in container.get("env") or []:
                if env.get("name") == launchenv.DEVICES_PER_REPLICA and str(env.get("value", "")).isdigit():
                    declared.add(int(env["value"]))
    return declared.pop() if len(declared) == 1 else None


def rank_table_configmap(ctx: RenderContext, pods: list[dict[str, Any]]) -> dict[str, Any]:
    own = [
        p
        for p in pods
        if ((p.get("metadata") or {}).get("labels") or {}).get(names.LABEL_JOB_NAME) == ctx.name
    ]
    # What the running pods were rendered with wins over the configuration at hand, so a caller
    # holding another operator configuration still writes the table the pods expect.
    devices = _declared_devices(own) or ctx.devices
    table = render_rank_table(own, devices, replicas=ctx.replicas)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(ctx, names.rank_table_configmap_name(ctx.name)),
        "data": {RANK_TABLE_KEY: json.dumps(table, indent=2, sort_keys=False)},
    }


def render_rank_table_configmap(
    job: dict[str, Any] | Job, pods: list[dict[str, Any]], config: OperatorConfig | None = None
) -> dict[str, Any]:
    """The ConfigMap for the job's observed `pods` (other jobs' pods are ignored).

    Pass the operator's configuration: without it the packaged defaults decide the devices per
    pod, unless the pods declare theirs (MNV2_DEVICES_PER_REPLICA), as pods rendered here do.
    """
    return rank_table_configmap(resolve(job, config or load_operator_config(None)), pods)
