"""Ascend HCCL rank tables (version 1.0), built from pods and read back by the launcher.

The operator renders the table from what the Ascend device plugin wrote on each pod (an annotation
listing the pod's devices and their IPs) plus the pod IP, and delivers it as the ConfigMap key
`hccl.json`; `mnv2 launch` polls the mounted file until its status is "completed" (REFERENCE §3).
Until every replica has an IP and its annotation the table is `{"status": "initializing"}`.
Pure data: no MindSpore, no kopf, no Kubernetes client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

VERSION = "1.0"
STATUS_INITIALIZING = "initializing"
STATUS_COMPLETED = "completed"
# Written by the Ascend device plugin on each pod it allocates NPUs to.
DEVICE_ANNOTATIONS = (
    "ascend.kubectl.kubernetes.io/ascend-910-configuration",
    "ascend.kubectl.kubernetes.io/ascend-npu-configuration",
)
REPLICA_INDEX_LABEL = "training.mindspore.io/replica-index"
REPLICAS_ENV = "MNV2_REPLICAS"


class RankTableError(ValueError):
    """A table or an annotation that cannot be used; the message names the pod, file or field."""


class RankTableDevice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: str
    device_ip: str
    rank_id: str


class RankTableServer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    server_id: str
    container_ip: str
    device: list[RankTableDevice]
    host_nic_ip: str = "reserve"


class RankTable(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = VERSION
    status: str
    server_count: str | None = None
    server_list: list[RankTableServer]

    def server_for(self, *, pod_name: str | None = None, pod_ip: str | None = None) -> RankTableServer:
        """This pod's entry: matched by pod IP first (container_ip), then by server_id = pod name."""
        if pod_ip:
            for server in self.server_list:
                if server.container_ip == pod_ip:
                    return server
        if pod_name:
            for server in self.server_list:
                if server.server_id == pod_name:
                    return server
        raise RankTableError(
            f"rank table has no server for pod {pod_name or '?'} (IP {pod_ip or '?'}); "
            f"servers: {', '.join(s.container_ip for s in self.server_list)}"
        )

    def rank_size(self) -> int:
        return sum(len(server.device) for server in self.server_list)


def initializing() -> dict[str, Any]:
    return {"status": STATUS_INITIALIZING}


def _pod_name(pod: dict[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name") or "<unnamed pod>")


def _replicas_from_env(pod: dict[str, Any]) -> int | None:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for env in container.get("env") or []:
            if env.get("name") == REPLICAS_ENV and str(env.get("value", "")).isdigit():
                return int(env["value"])
    return None


def _device_annotation(pod: dict[str, Any]) -> dict[str, Any] | None:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    for key in DEVICE_ANNOTATIONS:
        if key in annotations:
            raw = annotations[key]
            try:
                value = json.loads(raw) if isinstance(raw, str) else raw
            except json.JSONDecodeError as error:
                raise RankTableError(
                    f"pod {_pod_name(pod)}: annotation {key} is not JSON: {error.msg}"
                ) from None
            if not isinstance(value, dict):
                raise RankTableError(f"pod {_pod_name(pod)}: annotation {key} must be a JSON object")
            return {"key": key, **value}
    return None


def _server(pod: dict[str, Any], rank_index: int, devices_per_pod: int) -> RankTableServer | None:
    """The pod's server entry, or None while the pod has no IP or no annotation yet."""
    name = _pod_name(pod)
    ip = (pod.get("status") or {}).get("podIP")
    annotation = _device_annotation(pod)
    if not ip or annotation is None:
        return None
    key = annotation["key"]
    devices = annotation.get("devices")
    if not isinstance(devices, list) or not devices:
        raise RankTableError(f"pod {name}: annotation {key}: 'devices' must be a non-empty list")
    entries = []
    for local, device in enumerate(devices):
        if not isinstance(device, dict):
            raise RankTableError(f"pod {name}: annotation {key}: devices[{local}] must be an object")
        device_id, device_ip = device.get("device_id"), device.get("device_ip")
        if device_id in (None, "") or not device_ip:
            raise RankTableError(
                f"pod {name}: annotation {key}: devices[{local}] needs device_id and device_ip"
            )
        entries.append(
            RankTableDevice(
                device_id=str(device_id),
                device_ip=str(device_ip),
                rank_id=str(rank_index * devices_per_pod + local),
            )
        )
    if len(devices) != devices_per_pod:
        raise RankTableError(
            f"pod {name}: annotation {key} lists {len(devices)} devices, "
            f"the job runs {devices_per_pod} per pod"
        )
    server_id = annotation.get("server_id") or name
    return RankTableServer(server_id=str(server_id), container_ip=str(ip), device=entries)


def _rank_index(pod: dict[str, Any], position: int) -> int:
    label = ((pod.get("metadata") or {}).get("labels") or {}).get(REPLICA_INDEX_LABEL)
    if label is None:
        return position
    if not str(label).isdigit():
        raise RankTableError(f"pod {_pod_name(pod)}: label {REPLICA_INDEX_LABEL}={label!r} is not an index")
    return int(label)


def render_rank_table(
    pods: list[dict[str, Any]], devices_per_pod: int, *, replicas: int | None = None
) -> dict:
    """The version 1.0 table for `pods` (ordered, or labelled with their replica index).

    rank_id = replica index x devices_per_pod + local device index; servers in replica order.
    `{"status": "initializing"}` while any replica is missing (a gap in the indices, fewer pods than
    `replicas` or than the pods' MNV2_REPLICAS), terminating, or without IP or device annotation.
    """
    if devices_per_pod < 1:
        raise RankTableError(f"devices per pod must be >= 1, not {devices_per_pod}")
    expected = replicas
    if expected is None:
        declared = [n for n in (_replicas_from_env(pod) for pod in pods) if n is not None]
        expected = max(declared) if declared else len(pods)
    if not pods or expected < 1:
        return initializing()
    by_index: dict[int, dict[str, Any]] = {}
    for position, pod in enumerate(pods):
        index = _rank_index(pod, position)
        if index in by_index:
            raise RankTableError(
                f"pods {_pod_name(by_index[index])} and {_pod_name(pod)} have the same replica index {index}"
            )
        by_index[index] = pod
    if sorted(by_index) != list(range(expected)):
        return initializing()
    servers = []
    for index in range(expected):
        pod = by_index[index]
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            return initializing()  # being replaced: the new pod will have other IPs
        server = _server(pod, index, devices_per_pod)
        if server is None:
            return initializing()
        servers.append(server)
    table = RankTable(status=STATUS_COMPLETED, server_count=str(len(servers)), server_list=servers)
    return table.model_dump()


def parse_rank_table(doc: dict[str, Any], source: str = "rank table") -> RankTable | None:
    """A completed table, or None while initializing; anything else is an error naming `source`."""
    if not isinstance(doc, dict):
        raise RankTableError(f"{source}: must be a JSON object")
    status = doc.get("status")
    if status == STATUS_INITIALIZING:
        return None
    if status != STATUS_COMPLETED:
        raise RankTableError(
            f"{source}: status must be {STATUS_INITIALIZING!r} or {STATUS_COMPLETED!r}, not {status!r}"
        )
    if doc.get("version") != VERSION:
        raise RankTableError(f"{source}: version must be {VERSION!r}, not {doc.get('version')!r}")
    try:
        table = RankTable.model_validate(doc)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise RankTableError(f"{source}: {where}: {first['msg']}") from None
    if table.server_count is not None and table.server_count != str(len(table.server_list)):
        raise RankTableError(
            f"{source}: server_count is {table.server_count} but server_list has "
            f"{len(table.server_list)} servers"
        )
    ranks = sorted(int(d.rank_id) if d.rank_id.isdigit() else -1 for s in table.server_list for d in s.device)
    if ranks != list(range(len(ranks))):
        raise RankTableError(f"{source}: rank_id values must be 0..{len(ranks) - 1}, each once")
    if not table.server_list:
        raise RankTableError(f"{source}: server_list is empty")
    return table


def load_rank_table(path: str | Path) -> RankTable | None:
    """The mounted hccl.json: None while missing, empty or initializing (keep polling)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise RankTableError(f"{path}: cannot read the rank table: {error.strerror}") from None
    if not text.strip():
        return None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as error:
        raise RankTableError(f"{path}: not JSON: {error.msg} at line {error.lineno}") from None
    return parse_rank_table(doc, source=str(path))
