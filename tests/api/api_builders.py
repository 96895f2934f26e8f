"""Builders for job manifests and pods, parametrised over platforms, modes and sizes."""

from __future__ import annotations

import copy
import functools
import json
import re
from typing import Any

PLATFORMS = ("Ascend", "GPU", "CPU")
MODES = ("train", "finetune", "head-only", "eval")
KUBE_VERSION = "1.37"
ASCEND_ANNOTATION = "ascend.kubectl.kubernetes.io/ascend-910-configuration"


def make_job(
    platform: str = "CPU",
    mode: str = "train",
    *,
    name: str = "demo",
    namespace: str = "ml",
    replicas: int = 2,
    devices: int | None = None,
    uid: str | None = "0b5e3c52-5f2c-4c1e-9d44-3f0d3a6f0a11",
    **spec: Any,
) -> dict[str, Any]:
    """A valid manifest; `mode` "head-only" means finetune with freezeLayer backbone."""
    body: dict[str, Any] = {
        "platform": platform,
        "replicas": replicas,
        "training": {"epochs": 5, "batchSize": 32, "imageSize": 64, "widthMult": 0.35, "numClasses": 10},
        "dataset": {"volume": {"persistentVolumeClaim": {"claimName": "flowers"}}},
        "output": {"volume": {"nfs": {"server": "nfs.example.internal", "path": "/exports/mnv2"}}},
    }
    if devices is not None:
        body["devicesPerReplica"] = devices
    if mode == "head-only":
        body.update(
            mode="finetune", freezeLayer="backbone", pretrainedCheckpoint="/data/ckpt/mobilenetv2.ckpt"
        )
    elif mode in ("finetune", "eval"):
        body.update(mode=mode, pretrainedCheckpoint="/data/ckpt/mobilenetv2.ckpt")
    body.update(copy.deepcopy(spec))
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if uid:
        metadata["uid"] = uid
    return {
        "apiVersion": "training.mindspore.io/v1alpha1",
        "kind": "MobileNetV2TrainJob",
        "metadata": metadata,
        "spec": body,
    }


def ascend_pod(
    job: str,
    index: int,
    devices: int = 8,
    *,
    ip: str | None = None,
    annotate: bool = True,
    server_id: str | None = None,
    replicas: int | None = None,
) -> dict[str, Any]:
    """A pod as the API server shows it after the Ascend device plugin allocated `devices` NPUs."""
    metadata: dict[str, Any] = {
        "name": f"{job}-{index}",
        "namespace": "ml",
        "labels": {"training.mindspore.io/job-name": job, "training.mindspore.io/replica-index": str(index)},
        "annotations": {},
    }
    if annotate:
        metadata["annotations"][ASCEND_ANNOTATION] = json.dumps(
            {
                "pod_name": str(index),
                "server_id": server_id if server_id is not None else f"192.168.0.{10 + index}",
                "devices": [{"device_id": str(d), "device_ip": f"10.{index}.0.{d}"} for d in range(devices)],
            }
        )
        metadata["annotations"]["huawei.com/Ascend910"] = ",".join(f"Ascend910-{d}" for d in range(devices))
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "containers": [
                {
                    "name": "trainer",
                    "env": [] if replicas is None else [{"name": "MNV2_REPLICAS", "value": str(replicas)}],
                }
            ]
        },
        "status": {"phase": "Running"},
    }
    pod["status"]["podIP"] = ip if ip is not None else f"172.16.0.{index + 2}"
    if ip == "":
        del pod["status"]["podIP"]
    return pod


@functools.cache
def _strict_validator(kind: str, api_version: str):
    """kubernetes-validate's own strict 1.37 schema for a kind, loaded once (its validate() reloads the
    definitions file on every call, which is too slow for hundreds of property-test examples)."""
    from jsonschema.validators import Draft202012Validator
    from kubernetes_validate import utils
    from referencing import Registry, Resource

    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    version = [v for v in utils.all_versions() if utils.major_minor(v) <= KUBE_VERSION][-1]
    folder = f"kubernetes-json-schema/v{version}-local-strict"
    schema = utils.schema_contents(f"{folder}/{kind.lower()}-{group_version}.json", KUBE_VERSION)
    definitions = utils.schema_contents(f"{folder}/_definitions.json", KUBE_VERSION)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return Draft202012Validator(schema, registry=registry)


def validate_strict(obj: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless `obj` passes `kubernetes-validate --strict` for 1.37."""
    _strict_validator(obj["kind"], obj["apiVersion"]).validate(obj)
