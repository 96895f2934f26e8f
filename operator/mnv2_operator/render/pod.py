"""One Pod per replica: stable DNS through hostname + subdomain, `mnv2 launch` as the command, the
dataset/output/shared-memory/rank-table volumes, device resources and a restricted security context.

Pods restart never on their own (restartPolicy Never): the operator restarts the whole job, since
one lost rank stalls every other rank in collective communication.
"""

from __future__ import annotations

from typing import Any

from mnv2 import launchenv

from mnv2_operator import names
from mnv2_operator.api import GangScheduler, Job
from mnv2_operator.profiles import OperatorConfig, SecuritySettings
from mnv2_operator.render.context import CONTAINER_NAME, RenderContext, object_meta, resolve
from mnv2_operator.render.env import render_env
from mnv2_operator.validation import KERNEL_CACHE_PATH, KERNEL_CACHE_VOLUME, RANK_TABLE_DIR, SHM_PATH

__all__ = ["CONTAINER_NAME", "render_pod", "render_pod_from_context"]
KERNEL_CACHE_SIZE = "512Mi"  # the kernels' shared objects, a few MB per build
COMMAND = ["mnv2", "launch"]
VOLCANO_GROUP_ANNOTATION = "scheduling.k8s.io/group-name"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_GROUP_LABEL = "kueue.x-k8s.io/pod-group-name"
KUEUE_TOTAL_ANNOTATION = "kueue.x-k8s.io/pod-group-total-count"


def _pod_security_context(security: SecuritySettings) -> dict[str, Any]:
    out: dict[str, Any] = {
        "runAsNonRoot": security.run_as_non_root,
        "seccompProfile": {"type": security.seccomp_profile},
    }
    if security.run_as_user is not None:
        out["runAsUser"] = security.run_as_user
    if security.run_as_group is not None:
        out["runAsGroup"] = security.run_as_group
    if security.fs_group is not None:
        out["fsGroup"] = security.fs_group
    if security.supplemental_groups:
        out["supplementalGroups"] = list(security.supplemental_groups)
    return out


def _container_security_context(security: SecuritySettings) -> dict[str, Any]:
    capabilities: dict[str, Any] = {}
    if security.drop_all_capabilities:
        capabilities["drop"] = ["ALL"]
    if security.add_capabilities:
        capabilities["add"] = list(security.add_capabilities)
    out: dict[str, Any] = {
        "allowPrivilegeEscalation": security.allow_privilege_escalation,
        "readOnlyRootFilesystem": security.read_only_root_filesystem,
        "seccompProfile": {"type": security.seccomp_profile},
    }
    if capabilities:
        out["capabilities"] = capabilities
    return out


def _resources(ctx: RenderContext) -> dict[str, Any]:
    limits: dict[str, Any] = dict(ctx.profile.limits)
    requests: dict[str, Any] = dict(ctx.profile.requests)
    if ctx.profile.device_resource:
        limits[ctx.profile.device_resource] = ctx.devices  # extended resources: requests default to limits
    limits.update(ctx.job.spec.template.resources.limits)
    requests.update(ctx.job.spec.template.resources.requests)
    out: dict[str, Any] = {}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


def _volumes(ctx: RenderContext) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    spec = ctx.job.spec
    volumes: list[dict[str, Any]] = [
        {"name": "dataset", **spec.dataset.volume.to_k8s()},
        {"name": "output", **spec.output.volume.to_k8s()},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": ctx.profile.shm_size}},
        {"name": KERNEL_CACHE_VOLUME, "emptyDir": {"sizeLimit": KERNEL_CACHE_SIZE}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "dataset", "mountPath": spec.dataset.mount_path, "readOnly": True},
        {"name": "output", "mountPath": spec.output.path},
        {"name": "dshm", "mountPath": SHM_PATH},
        {"name": KERNEL_CACHE_VOLUME, "mountPath": KERNEL_CACHE_PATH},
    ]
    if ctx.uses_rank_table:
        volumes.append(
            {
                "name": "ranktable",
                "configMap": {
                    "name": names.rank_table_configmap_name(ctx.name),
                    "items": [{"key": "hccl.json", "path": "hccl.json"}],
                },
            }
        )
        mounts.append({"name": "ranktable", "mountPath": RANK_TABLE_DIR, "readOnly": True})
    for volume in [*ctx.profile.volumes, *spec.template.volumes]:
        volumes.append(volume.model_dump(mode="json", exclude_none=True))
    for mount in [*ctx.profile.volume_mounts, *spec.template.volume_mounts]:
        mounts.append(mount.model_dump(by_alias=True, mode="json", exclude_none=True))
    return volumes, mounts


def _ports(ctx: RenderContext, index: int) -> list[dict[str, Any]]:
    base = ctx.job.spec.metrics.port
    ports = [
        {"name": f"metrics-{r}", "containerPort": base + r, "protocol": "TCP"} for r in range(ctx.devices)
    ]
    if index == 0 and ctx.launch_mode == launchenv.LaunchMode.DYNAMIC:
        ports.append({"name": "scheduler", "containerPort": ctx.config.scheduler_port, "protocol": "TCP"})
    return ports


def _labels_and_annotations(ctx: RenderContext, index: int) -> tuple[dict[str, str], dict[str, str]]:
    template = ctx.job.spec.template
    labels = {**template.labels, **names.pod_labels(ctx.name, index)}
    annotations = {
        **template.annotations,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(ctx.job.spec.metrics.port),
        "prometheus.io/path": "/metrics",
    }
    if ctx.gang_scheduler == GangScheduler.VOLCANO:
        annotations[VOLCANO_GROUP_ANNOTATION] = names.podgroup_name(ctx.name)
    elif ctx.gang_scheduler == GangScheduler.KUEUE:
        labels[KUEUE_QUEUE_LABEL] = ctx.job.spec.scheduling.queue
        labels[KUEUE_GROUP_LABEL] = ctx.name
        annotations[KUEUE_TOTAL_ANNOTATION] = str(ctx.replicas)
    return labels, annotations


def render_pod_from_context(ctx: RenderContext, index: int) -> dict[str, Any]:
    if not 0 <= index < ctx.replicas:
        raise ValueError(f"replica index {index} outside 0..{ctx.replicas - 1}")
    spec = ctx.job.spec
    profile = ctx.profile
    labels, annotations = _labels_and_annotations(ctx, index)
    volumes, mounts = _volumes(ctx)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": ctx.image,
        "imagePullPolicy": profile.image_pull_policy,
        "command": list(COMMAND),
        "env": render_env(ctx, index),
        "ports": _ports(ctx, index),
        "resources": _resources(ctx),
        "volumeMounts": mounts,
        "securityContext": _container_security_context(profile.security),
        # The artifacts summary rank 0 writes (mnv2.artifacts); a failed container without one gets
        # its last log lines instead, which `kubectl describe pod` shows.
        "terminationMessagePath": launchenv.DEFAULT_TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    tolerations = [
        t.model_dump(by_alias=True, exclude_none=True, mode="json")
        for t in [*profile.tolerations, *spec.template.tolerations]
    ]
    pod_spec: dict[str, Any] = {
        "hostname": names.pod_name(ctx.name, index),
        "subdomain": names.service_name(ctx.name),
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": ctx.config.termination_grace_period_seconds,
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": _pod_security_context(profile.security),
        "containers": [container],
        "volumes": volumes,
    }
    node_selector = {**profile.node_selector, **spec.template.node_selector}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if profile.runtime_class_name:
        pod_spec["runtimeClassName"] = profile.runtime_class_name
    if ctx.scheduler_name:
        pod_spec["schedulerName"] = ctx.scheduler_name
    if spec.scheduling.priority_class_name:
        pod_spec["priorityClassName"] = spec.scheduling.priority_class_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": object_meta(ctx, names.pod_name(ctx.name, index), labels, annotations),
        "spec": pod_spec,
    }


def render_pod(job: dict[str, Any] | Job, config: OperatorConfig, index: int) -> dict[str, Any]:
    """The Pod of replica `index` (0-based)."""
    return render_pod_from_context(resolve(job, config), index)
