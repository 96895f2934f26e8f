"""The Volcano PodGroup (`scheduling.volcano.sh/v1beta1`) for gang scheduling: minMember = replicas,
so Volcano binds all pods of a job or none and two half-scheduled jobs cannot deadlock each other.
"""

from __future__ import annotations

from typing import Any

from mnv2_operator import names
from mnv2_operator.render.context import RenderContext, object_meta

PODGROUP_API_VERSION = "scheduling.volcano.sh/v1beta1"


def render_podgroup(ctx: RenderContext) -> dict[str, Any]:
    spec: dict[str, Any] = {"minMember": ctx.replicas}
    scheduling = ctx.job.spec.scheduling
    if scheduling.queue:
        spec["queue"] = scheduling.queue
    if scheduling.priority_class_name:
        spec["priorityClassName"] = scheduling.priority_class_name
    if ctx.profile.device_resource:
        spec["minResources"] = {ctx.profile.device_resource: str(ctx.replicas * ctx.devices)}
    return {
        "apiVersion": PODGROUP_API_VERSION,
        "kind": "PodGroup",
        "metadata": object_meta(ctx, names.podgroup_name(ctx.name)),
        "spec": spec,
    }
