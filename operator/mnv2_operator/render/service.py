"""The headless Service that gives every replica a stable DNS name `<job>-<i>.<job>.<ns>.svc`.

publishNotReadyAddresses: the names must resolve before any pod is Ready, because replica 0's
scheduler and the workers meet before training (and so before readiness) starts.
"""

from __future__ import annotations

from typing import Any

from mnv2_operator import names
from mnv2_operator.render.context import RenderContext, object_meta


def render_service(ctx: RenderContext) -> dict[str, Any]:
    ports = [
        {
            "name": "metrics",
            "port": ctx.job.spec.metrics.port,
            "targetPort": ctx.job.spec.metrics.port,
            "protocol": "TCP",
        }
    ]
    if ctx.launch_mode == "dynamic":
        ports.append(
            {
                "name": "scheduler",
                "port": ctx.config.scheduler_port,
                "targetPort": ctx.config.scheduler_port,
                "protocol": "TCP",
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(ctx, names.service_name(ctx.name)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": names.selector_labels(ctx.name),
            "ports": ports,
        },
    }
