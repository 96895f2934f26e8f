"""Pure rendering: a validated job plus the operator configuration in, plain Kubernetes dicts out.

One module per kind of object. The operator only observes, calls these, and applies the
difference; `mnv2 render` prints the same list; `mnv2 run` starts the same pods' commands locally.
"""

from __future__ import annotations

from typing import Any

from mnv2_operator.api import GangScheduler, Job
from mnv2_operator.profiles import OperatorConfig
from mnv2_operator.render.configmap import rank_table_configmap, render_rank_table_configmap
from mnv2_operator.render.context import RenderContext, resolve
from mnv2_operator.render.env import launch_env_values, render_env
from mnv2_operator.render.pod import render_pod, render_pod_from_context
from mnv2_operator.render.podgroup import render_podgroup
from mnv2_operator.render.service import render_service

__all__ = [
    "RenderContext",
    "launch_env_values",
    "render_env",
    "render_job",
    "render_pod",
    "render_podgroup",
    "render_rank_table_configmap",
    "render_service",
    "resolve",
]


def render_job(job: dict[str, Any] | Job, config: OperatorConfig) -> list[dict[str, Any]]:
    """Everything the operator creates for `job`, in creation order: PodGroup (gang + Volcano),
    headless Service, rank-table ConfigMap (Ascend rank-table mode, initializing), then the Pods."""
    ctx = resolve(job, config)
    objects: list[dict[str, Any]] = []
    if ctx.gang_scheduler == GangScheduler.VOLCANO:
        objects.append(render_podgroup(ctx))
    objects.append(render_service(ctx))
    if ctx.uses_rank_table:
        objects.append(rank_table_configmap(ctx, []))
    objects.extend(render_pod_from_context(ctx, index) for index in range(ctx.replicas))
    return objects
