"""The launch environment of one pod (REFERENCE §2), with names from `mnv2.launchenv`.

`mnv2 launch` reads these and derives the per-process MindSpore variables; `mnv2 run` uses the
same list with 127.0.0.1 in place of the DNS name, so a local run and a pod start the same way.
"""

from __future__ import annotations

import json
from typing import Any

from mnv2 import launchenv

from mnv2_operator import names
from mnv2_operator.api import Mode, effective_training_config
from mnv2_operator.render.context import CONTAINER_NAME, RenderContext
from mnv2_operator.validation import KERNEL_CACHE_PATH


def launch_command(ctx: RenderContext) -> str:
    """What each trainer process runs: eval for mode eval, train otherwise (fine-tuning is training)."""
    return "eval" if ctx.job.spec.mode == Mode.EVAL else "train"


def training_config_json(ctx: RenderContext) -> str:
    """The effective TrainingConfig, snake_case JSON, as `mnv2.config.build_config` reads it back."""
    config = effective_training_config(ctx.job)
    return json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def launch_env_values(ctx: RenderContext, index: int) -> dict[str, str]:
    """The plain-value launch variables of replica `index` (no downward-API ones)."""
    values = {
        launchenv.JOB_NAME: ctx.name,
        launchenv.COMMAND: launch_command(ctx),
        launchenv.PLATFORM: ctx.job.spec.platform.value,
        launchenv.LAUNCH_MODE: ctx.launch_mode.value,
        launchenv.REPLICAS: str(ctx.replicas),
        launchenv.REPLICA_INDEX: str(index),
        launchenv.DEVICES_PER_REPLICA: str(ctx.devices),
        launchenv.SCHEDULER_HOST: names.pod_dns_name(ctx.name, 0, ctx.namespace, ctx.config.cluster_domain),
        launchenv.SCHEDULER_PORT: str(ctx.config.scheduler_port),
        launchenv.METRICS_PORT: str(ctx.job.spec.metrics.port),
        launchenv.TRAINING_CONFIG: training_config_json(ctx),
        # The launcher must finish stopping its trainers before kubelet's SIGKILL.
        launchenv.STOP_GRACE: str(max(1, ctx.config.termination_grace_period_seconds - 10)),
        # Rank 0 writes the run's artifacts here; the container's terminationMessagePath is the same
        # file, so the operator reads them from the pod's status (mnv2.artifacts).
        launchenv.TERMINATION_MESSAGE_PATH: launchenv.DEFAULT_TERMINATION_MESSAGE_PATH,
    }
    if ctx.uses_rank_table:
        values[launchenv.RANK_TABLE_PATH] = launchenv.DEFAULT_RANK_TABLE_PATH
        values[launchenv.RANK_TABLE_TIMEOUT] = str(ctx.config.rank_table_timeout_seconds)
    return values


def escape_kubelet_refs(value: str) -> str:
    """Keep a value literal: kubelet expands `$(VAR)` in env values and reduces `$$` to `$`.

    Our launch values carry user paths (in MNV2_TRAINING_CONFIG, for one); a `$(` in them must reach
    the trainer unchanged. Users' own `template.env` keeps kubelet's semantics on purpose.
    """
    return value.replace("$", "$$")


def render_env(ctx: RenderContext, index: int) -> list[dict[str, Any]]:
    """The container's env list: launch variables, pod name/IP from the downward API, then the
    profile's and the user's extra variables (which validation keeps off MNV2_* names)."""
    env: list[dict[str, Any]] = [
        {"name": k, "value": escape_kubelet_refs(v)} for k, v in launch_env_values(ctx, index).items()
    ]
    env.append({"name": launchenv.POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    env.append({"name": launchenv.POD_IP, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    # The pod's CPU limit in millicores (the node's allocatable CPUs when the pod has none): the
    # launcher shares it among its trainer processes for MindSpore's threads, OpenMP and the pipeline.
    env.append(
        {
            "name": launchenv.CPU_LIMIT_MILLICORES,
            "valueFrom": {
                "resourceFieldRef": {
                    "containerName": CONTAINER_NAME,
                    "resource": "limits.cpu",
                    "divisor": "1m",
                }
            },
        }
    )
    # The C++ kernels' build cache, on the pod's emptyDir (the root filesystem may be read-only).
    env.append({"name": launchenv.KERNEL_CACHE_DIR, "value": KERNEL_CACHE_PATH})
    seen = {item["name"] for item in env}
    for extra in [*ctx.profile.env, *ctx.job.spec.template.env]:
        item = extra.model_dump(by_alias=True, exclude_none=True, mode="json")
        if item["name"] in seen:  # a user variable replaces a profile one of the same name
            env = [e for e in env if e["name"] != item["name"]]
        env.append(item)
        seen.add(item["name"])
    return env
