"""Render the chart with Helm's own Go SDK (PyPI helm-python-sdk): no helm binary, no cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "mobilenetv2-operator"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "mnv2"
NAMESPACE = "mnv2-system"

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (test extra) is not installed")


def render(values: dict | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE) -> dict[str, str]:
    """{template path: manifest text}, exactly as `helm template` would produce them."""
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values or {}, name=name, namespace=namespace)


def render_objects(values: dict | None = None, **kwargs) -> list[dict]:
    """Every Kubernetes object the chart renders (NOTES.txt left out), in template order."""
    objects = []
    for path, text in sorted(render(values, **kwargs).items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects


def load_values(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == kind]


RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}


def restricted_problems(pod: dict) -> list[str]:
    """Violations of the Pod Security Standards' "restricted" profile (the rules that apply to us)."""
    problems = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problems.append(f"{key} is set")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} uses {kinds - RESTRICTED_VOLUME_TYPES}")
    pod_security = pod.get("securityContext", {})
    for container in pod.get("initContainers", []) + pod["containers"]:
        security = container.get("securityContext", {})
        name = container["name"]
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        if security.get("privileged"):
            problems.append(f"{name}: privileged")
        if "ALL" not in security.get("capabilities", {}).get("drop", []):
            problems.append(f"{name}: capabilities must drop ALL")
        if set(security.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities")
        if not (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot must be true")
        if 0 in (security.get("runAsUser"), pod_security.get("runAsUser")):
            problems.append(f"{name}: runs as uid 0")
        seccomp = (security.get("seccompProfile") or pod_security.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
        for port in container.get("ports", []):
            if "hostPort" in port:
                problems.append(f"{name}: hostPort {port['hostPort']}")
    return problems
