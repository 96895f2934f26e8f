"""Pods meet the Kubernetes Pod Security Standard "restricted" wherever the platform allows.

The checks are the standard's (https://kubernetes.io/docs/concepts/security/pod-security-standards/),
applied to rendered pods: CPU and GPU pods with PVC-backed data are admitted to a restricted
namespace; Ascend pods need exactly the profile's documented exceptions (root for the host's NPU
driver files, hostPath mounts of that driver) and nothing else.
"""

from __future__ import annotations

from typing import Any

import pytest
from api_builders import make_job
from mnv2_operator.render import render_job

RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
PVC = {"persistentVolumeClaim": {"claimName": "data"}}


def restricted_violations(pod: dict[str, Any]) -> set[str]:
    """Which "restricted" (and "baseline") rules a pod breaks, by short name."""
    spec = pod["spec"]
    out: set[str] = set()
    pod_ctx = spec.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            out.add(flag)
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            out.add(f"volume:{','.join(sorted(kinds))}")
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        ctx = container.get("securityContext", {})
        if ctx.get("privileged"):
            out.add("privileged")
        if ctx.get("allowPrivilegeEscalation") is not False:
            out.add("allowPrivilegeEscalation")
        caps = ctx.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            out.add("capabilities.drop")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.add("capabilities.add")
        if ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is not True:
            out.add("runAsNonRoot")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
            out.add("runAsUser=0")
        seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.add("seccompProfile")
        if any("hostPort" in port for port in container.get("ports", [])):
            out.add("hostPort")
    return out


@pytest.mark.parametrize("platform", ["CPU", "GPU"])
@pytest.mark.parametrize("mode", ["train", "head-only", "eval"])
def test_cpu_and_gpu_pods_are_restricted(platform, mode, config):
    job = make_job(platform, mode, dataset={"volume": PVC}, output={"volume": PVC})
    pods = [o for o in render_job(job, config) if o["kind"] == "Pod"]
    assert pods
    for pod in pods:
        assert restricted_violations(pod) == set()


def test_nfs_or_hostpath_data_is_the_users_choice_and_shows(config):
    pod = render_job(make_job("CPU"), config)[-1]  # the builder's output volume is NFS
    assert restricted_violations(pod) == {"volume:nfs"}


def test_ascend_needs_exactly_the_documented_exceptions(config):
    job = make_job("Ascend", dataset={"volume": PVC}, output={"volume": PVC})
    for pod in (o for o in render_job(job, config) if o["kind"] == "Pod"):
        assert restricted_violations(pod) == {"runAsNonRoot", "volume:hostPath"}
