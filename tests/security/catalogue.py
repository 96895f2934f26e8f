"""Escalation attempts a job author could make, each with the field and the rule that must refuse it.

Issue 13: whoever may create a MobileNetV2TrainJob could get root on a node through the pod the
operator renders for them (host paths, the runtime's socket, their own image, AppArmor/seccomp
annotations, forged device-plugin annotations). Every attempt below is a small change to a valid
job; `configs` are the policies it is tried under: the default one, and an administrator's that
turns hostPath on for a few prefixes (the attacks must fail there too).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from mnv2_operator.profiles import OperatorConfig, load_operator_config

PVC = {"persistentVolumeClaim": {"claimName": "imagenet"}}
# An administrator's relaxation: datasets read-only from /mnt/datasets, scratch space writable,
# tools under /usr/local readable, images from the team's registry.
ADMIN_POLICY = {
    "policy": {
        "volumeTypes": ["persistentVolumeClaim", "nfs", "configMap", "secret", "emptyDir", "hostPath"],
        "hostPathPrefixes": [
            {"path": "/mnt/datasets"},
            {"path": "/mnt/scratch", "readWrite": True},
            {"path": "/usr/local"},
        ],
        "imageRepositories": ["registry.example.internal/mnv2/"],
    }
}
SINGLE_NODE_POLICY = {
    "policy": {
        "volumeTypes": ["persistentVolumeClaim", "emptyDir", "hostPath"],
        "hostPathPrefixes": [{"path": "/srv/mnv2", "readWrite": True}],
        "singleNode": True,
    }
}


def load_config(override: dict[str, Any] | None, tmp: Path) -> OperatorConfig:
    if override is None:
        return load_operator_config(None)
    path = tmp / "operator.yaml"
    path.write_text(yaml.safe_dump(override))
    return load_operator_config(path)


def base_job(replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "training.mindspore.io/v1alpha1",
        "kind": "MobileNetV2TrainJob",
        "metadata": {"name": "attempt", "namespace": "team-a"},
        "spec": {
            "platform": "CPU",
            "replicas": replicas,
            "dataset": {"volume": copy.deepcopy(PVC)},
            "output": {"volume": {"persistentVolumeClaim": {"claimName": "checkpoints"}}},
            "scheduling": {"gang": False},
        },
    }


def host_path(path: str, kind: str | None = None) -> dict[str, Any]:
    return {"hostPath": {"path": path, **({"type": kind} if kind else {})}}


@dataclass
class Attempt:
    id: str
    spec: dict[str, Any]  # merged over base_job()'s spec (lists and mappings replaced)
    refusals: set[tuple[str, str]]  # (field path, rule name) that must be among the violations
    configs: tuple[str, ...] = ("default", "admin")
    replicas: int = 2
    notes: str = field(default="")

    def job(self) -> dict[str, Any]:
        job = base_job(self.replicas)
        job["spec"].update(copy.deepcopy(self.spec))
        return job


def _template_volume(path: str, kind: str | None = None, read_only: bool | None = None) -> dict[str, Any]:
    mount: dict[str, Any] = {"name": "host", "mountPath": "/host"}
    if read_only is not None:
        mount["readOnly"] = read_only
    return {"template": {"volumes": [{"name": "host", **host_path(path, kind)}], "volumeMounts": [mount]}}


RUNTIME_SOCKETS = ["/run/containerd/containerd.sock", "/var/run/docker.sock", "/var/run/crio/crio.sock"]
NODE_PATHS = ["/", "/etc", "/var/lib/kubelet", "/root", "/proc"]

ATTEMPTS: list[Attempt] = []
# Host paths as the dataset, the output and a template volume: off by default; outside the
# administrator's prefixes when hostPath is on.
for path in NODE_PATHS + RUNTIME_SOCKETS:
    kind = "Socket" if path.endswith(".sock") else None
    ATTEMPTS += [
        Attempt(
            f"dataset hostPath {path}",
            {"dataset": {"volume": host_path(path, kind)}},
            {("spec.dataset.volume.hostPath", "volumeType")},
            configs=("default",),
        ),
        Attempt(
            f"template hostPath {path}",
            _template_volume(path, kind),
            {("spec.template.volumes[0].hostPath", "volumeType")},
            configs=("default",),
        ),
        Attempt(
            f"template hostPath {path} past the prefixes",
            _template_volume(path, kind, read_only=True),
            {("spec.template.volumes[0].hostPath.path", "hostPathPrefix")},
            configs=("admin",),
        ),
        Attempt(
            f"output hostPath {path} past the prefixes",
            {"output": {"volume": host_path(path, kind)}},
            {("spec.output.volume.hostPath.path", "hostPathPrefix")},
            configs=("admin",),
            replicas=1,
        ),
    ]
for socket in RUNTIME_SOCKETS:
    ATTEMPTS.append(
        Attempt(
            f"runtime socket {socket} as a Socket",
            _template_volume(socket, "Socket", read_only=True),
            {("spec.template.volumes[0].hostPath.type", "hostPathType")},
            configs=("admin",),
        )
    )
ATTEMPTS += [
    # Path tricks: '..' escapes, '.' and empty segments, a prefix that is only a string prefix.
    Attempt(
        "'..' out of an allowed prefix",
        _template_volume("/mnt/datasets/../../etc", read_only=True),
        {("spec.template.volumes[0].hostPath.path", "hostPathNormalised")},
        configs=("admin",),
    ),
    Attempt(
        "/etc/../ into an allowed prefix",
        _template_volume("/etc/../mnt/datasets", read_only=True),
        {("spec.template.volumes[0].hostPath.path", "hostPathNormalised")},
        configs=("admin",),
    ),
    Attempt(
        "'.' and '//' segments",
        _template_volume("/mnt/datasets/.//x", read_only=True),
        {("spec.template.volumes[0].hostPath.path", "hostPathNormalised")},
        configs=("admin",),
    ),
    Attempt(
        "a sibling sharing the prefix's spelling",
        _template_volume("/mnt/datasets-private", read_only=True),
        {("spec.template.volumes[0].hostPath.path", "hostPathPrefix")},
        configs=("admin",),
    ),
    # Driver paths come from the platform profile only, even below an allowed prefix.
    Attempt(
        "the Ascend driver",
        _template_volume("/usr/local/Ascend/driver", read_only=True),
        {("spec.template.volumes[0].hostPath.path", "driverHostPath")},
        configs=("admin",),
    ),
    Attempt(
        "dcmi",
        _template_volume("/usr/local/dcmi", read_only=True),
        {("spec.template.volumes[0].hostPath.path", "driverHostPath")},
        configs=("admin",),
    ),
    Attempt(
        "npu-smi",
        {"dataset": {"volume": host_path("/usr/local/sbin/npu-smi", "File")}},
        {("spec.dataset.volume.hostPath.path", "driverHostPath")},
        configs=("admin",),
    ),
    Attempt(
        "a folder holding the driver",
        _template_volume("/usr/local", read_only=True),
        {("spec.template.volumes[0].hostPath.path", "driverHostPath")},
        configs=("admin",),
    ),
    # Read-only prefixes stay read-only.
    Attempt(
        "writing into a read-only prefix through a mount",
        _template_volume("/mnt/datasets/imagenet", read_only=False),
        {("spec.template.volumes[0].hostPath.path", "hostPathReadOnly")},
        configs=("admin",),
    ),
    Attempt(
        "a mount that does not say readOnly",
        _template_volume("/mnt/datasets/imagenet"),
        {("spec.template.volumes[0].hostPath.path", "hostPathReadOnly")},
        configs=("admin",),
    ),
    Attempt(
        "output into a read-only prefix",
        {"output": {"volume": host_path("/mnt/datasets/out")}},
        {("spec.output.volume.hostPath.path", "hostPathReadOnly")},
        configs=("admin",),
        replicas=1,
    ),
    # Volume types that reach around the other rules: an OCI image volume pulls any image, gitRepo
    # runs git on the node (CVE-2024-10220).
    Attempt(
        "an image volume",
        {"template": {"volumes": [{"name": "tools", "image": {"reference": "docker.io/attacker/tools:1"}}]}},
        {("spec.template.volumes[0].image", "volumeType")},
    ),
    Attempt(
        "a gitRepo volume",
        {"template": {"volumes": [{"name": "src", "gitRepo": {"repository": "https://example.com/x.git"}}]}},
        {("spec.template.volumes[0].gitRepo", "volumeType")},
    ),
    # Images from elsewhere.
    Attempt(
        "an image from Docker Hub", {"image": "docker.io/attacker/miner:latest"}, {("spec.image", "image")}
    ),
    Attempt(
        "an image named like the profile's", {"image": "mnv2-trainer-cpu-evil:1"}, {("spec.image", "image")}
    ),
    Attempt(
        "a registry named like the allowed one",
        {"image": "registry.example.internal/mnv2evil/trainer:1"},
        {("spec.image", "image")},
    ),
    Attempt("a tag hiding a path", {"image": "mnv2-trainer-cpu:1/../../evil"}, {("spec.image", "image")}),
    Attempt("a malformed digest", {"image": "mnv2-trainer-cpu@sha256:abc"}, {("spec.image", "image")}),
    # Annotations that lift confinement or forge what the device plugin writes.
    Attempt(
        "AppArmor unconfined",
        {
            "template": {
                "annotations": {"container.apparmor.security.beta.kubernetes.io/trainer": "unconfined"}
            }
        },
        {
            (
                "spec.template.annotations['container.apparmor.security.beta.kubernetes.io/trainer']",
                "reservedAnnotation",
            )
        },
    ),
    Attempt(
        "seccomp unconfined (pod)",
        {"template": {"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}}},
        {("spec.template.annotations['seccomp.security.alpha.kubernetes.io/pod']", "reservedAnnotation")},
    ),
    Attempt(
        "seccomp unconfined (container)",
        {
            "template": {
                "annotations": {"container.seccomp.security.alpha.kubernetes.io/trainer": "unconfined"}
            }
        },
        {
            (
                "spec.template.annotations['container.seccomp.security.alpha.kubernetes.io/trainer']",
                "reservedAnnotation",
            )
        },
    ),
    Attempt(
        "forged Ascend device IPs",
        {
            "template": {
                "annotations": {
                    "ascend.kubectl.kubernetes.io/ascend-910-configuration": (
                        '{"pod_name":"0","server_id":"10.0.0.1","devices":[{"device_id":"0","device_ip":"6.6.6.6"}]}'
                    )
                }
            }
        },
        {
            (
                "spec.template.annotations['ascend.kubectl.kubernetes.io/ascend-910-configuration']",
                "reservedAnnotation",
            )
        },
    ),
    Attempt(
        "forged Ascend card list",
        {"template": {"annotations": {"huawei.com/Ascend910": "Ascend910-0,Ascend910-1"}}},
        {("spec.template.annotations['huawei.com/Ascend910']", "reservedAnnotation")},
    ),
    Attempt(
        "a mirror-pod marker",
        {"template": {"annotations": {"kubernetes.io/config.mirror": "x"}}},
        {("spec.template.annotations['kubernetes.io/config.mirror']", "reservedAnnotation")},
    ),
    Attempt(
        "another job's Volcano PodGroup",
        {"template": {"annotations": {"scheduling.k8s.io/group-name": "other-job"}}},
        {("spec.template.annotations['scheduling.k8s.io/group-name']", "reservedAnnotation")},
    ),
    # Labels the operator and other controllers select on.
    Attempt(
        "joining another job's Service",
        {"template": {"labels": {"training.mindspore.io/job-name": "other-job"}}},
        {("spec.template.labels['training.mindspore.io/job-name']", "reservedLabel")},
    ),
    Attempt(
        "skipping the Kueue queue",
        {"template": {"labels": {"kueue.x-k8s.io/queue-name": "priority"}}},
        {("spec.template.labels['kueue.x-k8s.io/queue-name']", "reservedLabel")},
    ),
    Attempt(
        "a kubernetes.io label",
        {"template": {"labels": {"kubernetes.io/metadata.name": "kube-system"}}},
        {("spec.template.labels['kubernetes.io/metadata.name']", "reservedLabel")},
    ),
    # The launch contract.
    Attempt(
        "overriding the training configuration",
        {"template": {"env": [{"name": "MNV2_TRAINING_CONFIG", "value": "{}"}]}},
        {("spec.template.env[0].name", "reservedEnv")},
    ),
    Attempt(
        "pointing at another rank table",
        {
            "template": {
                "env": [{"name": "OK", "value": "1"}, {"name": "MNV2_RANK_TABLE_FILE", "value": "/x"}]
            }
        },
        {("spec.template.env[1].name", "reservedEnv")},
    ),
    # Node-local outputs for several replicas: ranks would not share one checkpoint folder.
    Attempt(
        "emptyDir output, 2 replicas",
        {"output": {"volume": {"emptyDir": {}}}},
        {("spec.output.volume.emptyDir", "nodeLocalOutput")},
        configs=("default", "admin", "single-node"),
    ),
    Attempt(
        "hostPath output, 4 replicas",
        {"output": {"volume": host_path("/mnt/scratch/run")}},
        {("spec.output.volume.hostPath", "nodeLocalOutput")},
        configs=("admin",),
        replicas=4,
    ),
]

# What the same policies let through (nothing above is refused for the wrong reason).
ALLOWED: list[Attempt] = [
    Attempt("the plain job", {}, set(), configs=("default", "admin", "single-node")),
    Attempt("one replica, emptyDir output", {"output": {"volume": {"emptyDir": {}}}}, set(), replicas=1),
    Attempt("the profile's image, another tag", {"image": "mnv2-trainer-cpu:0.2.0"}, set()),
    Attempt("the profile's image by digest", {"image": "mnv2-trainer-cpu@sha256:" + "ab" * 32}, set()),
    Attempt(
        "the team registry", {"image": "registry.example.internal/mnv2/trainer:1"}, set(), configs=("admin",)
    ),
    Attempt(
        "ordinary labels, annotations, env and volumes",
        {
            "template": {
                "labels": {"team": "vision", "example.com/cost-center": "ml"},
                "annotations": {"example.com/owner": "alice", "cluster-autoscaler.kubernetes.io/x": "y"},
                "env": [{"name": "HTTP_PROXY", "value": "http://proxy:3128"}],
                "volumes": [
                    {"name": "pretrained", "persistentVolumeClaim": {"claimName": "zoo", "readOnly": True}},
                    {"name": "settings", "configMap": {"name": "settings"}},
                ],
                "volumeMounts": [{"name": "pretrained", "mountPath": "/pretrained", "readOnly": True}],
            }
        },
        set(),
        configs=("default", "admin"),
    ),
    Attempt(
        "a dataset from an allowed prefix",
        {"dataset": {"volume": host_path("/mnt/datasets/imagenet", "Directory")}},
        set(),
        configs=("admin",),
    ),
    Attempt(
        "a read-only mount below an allowed prefix",
        _template_volume("/mnt/datasets/zoo", read_only=True),
        set(),
        configs=("admin",),
    ),
    Attempt(
        "output in a readWrite prefix, one replica",
        {"output": {"volume": host_path("/mnt/scratch/run", "DirectoryOrCreate")}},
        set(),
        configs=("admin",),
        replicas=1,
    ),
    Attempt(
        "a shared hostPath output on a single node",
        {
            "dataset": {"volume": host_path("/srv/mnv2/data")},
            "output": {"volume": host_path("/srv/mnv2/out")},
        },
        set(),
        configs=("single-node",),
        replicas=2,
    ),
]
