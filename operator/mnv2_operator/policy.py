"""What a job may ask of the cluster: volume types, host paths, images and reserved keys, defined once.

Whoever may create a MobileNetV2TrainJob must not get more than the namespace allows them: the
operator renders the job into pods with its own permissions, so a hostPath, an image or an
annotation in a job spec reaches the node as if the operator had chosen it. This module is the one
rule set, applied in three places (docs/security.md):

1. at admission: the chart's ValidatingAdmissionPolicy, whose CEL is `admission_policy()` below
   (tests/security evaluates it against the same catalogue of escalation attempts);
2. in the operator: `violations(job, config)` before anything is created (reason PolicyViolation);
3. in `mnv2 validate` and `mnv2 render`.

The rules work on the raw manifest, defensively, so they run even when other fields are invalid.
The operator's own volumes (shared memory, rank table, kernel cache) and the platform profile's
(the Ascend driver's host paths) are the administrator's choice and are not checked here.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from mnv2_operator import names
from mnv2_operator.api import ABS_PATH_PATTERN, GROUP, KIND, PLURAL, VERSION
from mnv2_operator.validation import RESERVED_ENV_PREFIX

if TYPE_CHECKING:
    from mnv2_operator.profiles import OperatorConfig

# Every volume source of core/v1 Volume (Kubernetes 1.37).
VolumeType = Literal[
    "awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "configMap", "csi",
    "downwardAPI", "emptyDir", "ephemeral", "fc", "flexVolume", "flocker", "gcePersistentDisk",
    "gitRepo", "glusterfs", "hostPath", "image", "iscsi", "nfs", "persistentVolumeClaim",
    "photonPersistentDisk", "portworxVolume", "projected", "quobyte", "rbd", "scaleIO", "secret",
    "storageos", "vsphereVolume",
]  # fmt: skip
# Pod Security Standards "restricted" volume types plus NFS; hostPath stays off.
DEFAULT_VOLUME_TYPES: tuple[VolumeType, ...] = (
    "persistentVolumeClaim", "nfs", "csi", "ephemeral", "configMap", "secret", "emptyDir",
    "projected", "downwardAPI",
)  # fmt: skip

# Keys that change how the node runs the pod or that other components write; a job setting them
# could lift its confinement (AppArmor, seccomp) or forge what the Ascend device plugin reports
# (the operator builds the HCCL rank table from those annotations). Kubernetes reserves the
# kubernetes.io/ and k8s.io/ prefixes for its own components.
SECURITY_ANNOTATION_PREFIXES = (
    "container.apparmor.security.beta.kubernetes.io/",
    "seccomp.security.alpha.kubernetes.io/",
    "container.seccomp.security.alpha.kubernetes.io/",
    "ascend.kubectl.kubernetes.io/",
    "huawei.com/",
    "kubernetes.io/",
    "k8s.io/",
    "scheduler.alpha.kubernetes.io/",
    "pod-security.kubernetes.io/",
)
SECURITY_LABEL_PREFIXES = (
    "kubernetes.io/",
    "k8s.io/",
    "huawei.com/",
    "ascend.kubectl.kubernetes.io/",
    "pod-security.kubernetes.io/",
)
# Host paths of accelerator drivers and tools (Ascend driver, dcmi, npu-smi) and device nodes: only a
# platform profile mounts them, never a job, even when an administrator allows a wider prefix.
DRIVER_HOST_PATHS = (
    "/dev",
    "/usr/local/Ascend",
    "/usr/local/dcmi",
    "/usr/local/bin/npu-smi",
    "/usr/local/sbin/npu-smi",
    "/etc/ascend_install.info",
)
# Host path types that hand a job a socket or a device of the node.
HOST_PATH_DEVICE_TYPES = ("Socket", "CharDevice", "BlockDevice")
# Docker/OCI image reference grammar (distribution/reference), in a form both Python's re and RE2 read.
_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_TAG = r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REFERENCE_PATTERN = f"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?:{_TAG})?(?:{_DIGEST})?$"
_TAG_OR_DIGEST_SUFFIX = re.compile(f"(?:{_TAG})?(?:{_DIGEST})?$")
ROOT_OR_ABS_PATH_PATTERN = f"^/$|{ABS_PATH_PATTERN}"

Problems = list[tuple[str, str]]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class HostPathPrefix(_Model):
    """A folder of the node that jobs may mount (with everything below it)."""

    path: str = Field(
        ...,
        pattern=ROOT_OR_ABS_PATH_PATTERN,
        max_length=4096,
        description="Normalised absolute path on the node (no '.', '..', '//' or trailing '/').",
    )
    read_write: bool = Field(
        False, description="Jobs may write below it (an output volume); otherwise mounts are read-only."
    )


class Policy(_Model):
    """What jobs may ask for; the defaults are safe for a cluster shared by several teams."""

    volume_types: list[VolumeType] = Field(
        default_factory=lambda: list(DEFAULT_VOLUME_TYPES),
        description="Volume types a job's volumes (dataset, output, template.volumes) may use; "
        "add hostPath only together with hostPathPrefixes.",
    )
    host_path_prefixes: list[HostPathPrefix] = Field(
        default_factory=list,
        description="Node folders hostPath volumes may name when volumeTypes allows hostPath; "
        "read-only unless readWrite.",
    )
    image_repositories: list[str] = Field(
        default_factory=list,
        description="Image repositories spec.image may name besides the profiles' "
        "(an entry ending in '/' allows every repository below it).",
    )
    reserved_label_prefixes: list[str] = Field(
        default_factory=lambda: list(SECURITY_LABEL_PREFIXES),
        description="Label key prefixes jobs may not set (the operator's own are always reserved).",
    )
    reserved_annotation_prefixes: list[str] = Field(
        default_factory=lambda: list(SECURITY_ANNOTATION_PREFIXES),
        description="Annotation key prefixes jobs may not set (the operator's own are always reserved).",
    )
    single_node: bool = Field(
        False,
        description="The cluster has one node, so a hostPath output is one folder for every replica.",
    )

    @field_validator("image_repositories")
    @classmethod
    def _repositories(cls, value: list[str]) -> list[str]:
        for entry in value:
            if not entry or re.search(r"[\s:@]", entry.split("/", 1)[-1] if "/" in entry else entry):
                raise ValueError(
                    f"{entry!r}: a repository without tag or digest (e.g. 'ghcr.io/team/trainer')"
                )
        return value


# `mnv2 run`: the job runs as local processes of the user who starts it, with local folders in place
# of volumes, so every folder is allowed (read-write) and replicas share them; nothing else changes.
LOCAL_POLICY = Policy(
    volume_types=[*DEFAULT_VOLUME_TYPES, "hostPath"],
    host_path_prefixes=[HostPathPrefix(path="/", read_write=True)],
    single_node=True,
)


def with_local_policy(config: OperatorConfig) -> OperatorConfig:
    """The operator configuration `mnv2 run` applies: `config` with LOCAL_POLICY in place of its policy."""
    return config.model_copy(update={"policy": LOCAL_POLICY})


# --- derived lists (shared by violations() and the admission policy's variables) ---


def repository(image: str) -> str:
    """The repository of an image reference: without tag and digest."""
    return _TAG_OR_DIGEST_SUFFIX.sub("", image, count=1)


def image_repositories(config: OperatorConfig) -> list[str]:
    """The repositories spec.image may name: the profiles' images' and the policy's extra ones."""
    repos = [repository(profile.image) for profile in config.profiles.values()]
    return sorted(set(repos) | set(config.policy.image_repositories))


def driver_host_paths(config: OperatorConfig) -> list[str]:
    """Host paths only profiles may mount: the known driver paths and every profile's hostPaths."""
    paths = set(DRIVER_HOST_PATHS)
    for profile in config.profiles.values():
        for volume in profile.volumes:
            host_path = (volume.model_extra or {}).get("hostPath")
            if isinstance(host_path, dict) and isinstance(host_path.get("path"), str):
                paths.add(posixpath.normpath(host_path["path"]))
    return sorted(paths)


def reserved_label_prefixes(config: OperatorConfig) -> list[str]:
    return sorted(set(names.RESERVED_LABEL_PREFIXES) | set(config.policy.reserved_label_prefixes))


def reserved_annotation_prefixes(config: OperatorConfig) -> list[str]:
    return sorted(set(names.RESERVED_ANNOTATION_PREFIXES) | set(config.policy.reserved_annotation_prefixes))


def host_path_prefixes(config: OperatorConfig) -> list[str]:
    return sorted({p.path for p in config.policy.host_path_prefixes})


def read_write_prefixes(config: OperatorConfig) -> list[str]:
    return sorted({p.path for p in config.policy.host_path_prefixes if p.read_write})


# --- the checks ---


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _under(path: str, prefix: str) -> bool:
    """`path` is `prefix` or below it (both normalised; "/" holds everything)."""
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def _overlap(a: str, b: str) -> bool:
    return _under(a, b) or _under(b, a)


def _key_path(field: str, key: str) -> str:
    return f"spec.template.{field}[{key!r}]"


def _volume_types(source: Mapping[str, Any]) -> list[str]:
    return [k for k, v in source.items() if k != "name" and v is not None]


def _job_volumes(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any], bool]]:
    """(field, volume source, mounted read-write) of every volume the job brings."""
    template = _dict(spec.get("template"))
    mounts = [_dict(m) for m in _list(template.get("volumeMounts"))]
    out = [
        ("spec.dataset.volume", _dict(_dict(spec.get("dataset")).get("volume")), False),
        ("spec.output.volume", _dict(_dict(spec.get("output")).get("volume")), True),
    ]
    for i, volume in enumerate(_list(template.get("volumes"))):
        volume = _dict(volume)
        writable = any(m.get("name") == volume.get("name") and m.get("readOnly") is not True for m in mounts)
        out.append((f"spec.template.volumes[{i}]", volume, writable))
    return out


def _host_path_problems(
    field: str, source: dict[str, Any], writable: bool, config: OperatorConfig
) -> Problems:
    host_path = _dict(source.get("hostPath"))
    path, kind = host_path.get("path"), host_path.get("type")
    problems: Problems = []
    if kind in HOST_PATH_DEVICE_TYPES:
        problems.append(
            (f"{field}.hostPath.type", f"{kind}: a job may not mount a socket or device of the node")
        )
    if not isinstance(path, str) or not re.match(ABS_PATH_PATTERN, path):
        problems.append(
            (
                f"{field}.hostPath.path",
                "must be a normalised absolute path (no '.', '..', '//' or trailing '/')",
            )
        )
        return problems
    prefixes = host_path_prefixes(config)
    if not any(_under(path, prefix) for prefix in prefixes):
        allowed = ", ".join(prefixes) or "none"
        problems.append(
            (f"{field}.hostPath.path", f"{path} is outside the host paths the policy allows ({allowed})")
        )
        return problems
    drivers = [d for d in driver_host_paths(config) if _overlap(path, d)]
    if drivers:
        problems.append(
            (
                f"{field}.hostPath.path",
                f"{path} overlaps {drivers[0]}: driver paths come from the platform profile only",
            )
        )
    if writable and not any(_under(path, prefix) for prefix in read_write_prefixes(config)):
        if field == "spec.output.volume":
            problems.append(
                (
                    f"{field}.hostPath.path",
                    f"{path} is read-only by policy; the output needs a readWrite prefix",
                )
            )
        else:
            problems.append(
                (f"{field}.hostPath.path", f"{path} is read-only by policy: mount it with readOnly: true")
            )
    return problems


def _volume_problems(spec: dict[str, Any], config: OperatorConfig) -> Problems:
    allowed = config.policy.volume_types
    problems: Problems = []
    for field, source, writable in _job_volumes(spec):
        kinds = _volume_types(source)
        for kind in kinds:
            if kind not in allowed:
                problems.append(
                    (
                        f"{field}.{kind}",
                        f"volume type {kind} is not allowed by policy (allowed: {', '.join(allowed)})",
                    )
                )
        if "hostPath" in kinds and "hostPath" in allowed:
            problems += _host_path_problems(field, source, writable, config)
    return problems


def _image_problems(spec: dict[str, Any], config: OperatorConfig) -> Problems:
    image = spec.get("image")
    if not isinstance(image, str) or not image:
        return []  # the profile's image
    if not re.match(IMAGE_REFERENCE_PATTERN, image):
        return [("spec.image", f"{image!r} is not an image reference (registry/repository:tag or @digest)")]
    repos = image_repositories(config)
    if not any(_image_allowed(image, repo) for repo in repos):
        return [
            (
                "spec.image",
                f"repository {repository(image)!r} is not allowed by policy (allowed: {', '.join(repos)})",
            )
        ]
    return []


def _image_allowed(image: str, repo: str) -> bool:
    if repo.endswith("/"):
        return image.startswith(repo)
    return image == repo or image.startswith(repo + ":") or image.startswith(repo + "@")


def _key_problems(spec: dict[str, Any], config: OperatorConfig) -> Problems:
    template = _dict(spec.get("template"))
    problems: Problems = []
    for field, prefixes in (
        ("labels", reserved_label_prefixes(config)),
        ("annotations", reserved_annotation_prefixes(config)),
    ):
        for key in _dict(template.get(field)):
            hit = next((p for p in prefixes if isinstance(key, str) and key.startswith(p)), None)
            if hit is not None:
                problems.append((_key_path(field, key), f"keys with prefix {hit!r} are reserved"))
    for i, env in enumerate(_list(template.get("env"))):
        name = _dict(env).get("name")
        if isinstance(name, str) and name.startswith(RESERVED_ENV_PREFIX):
            problems.append(
                (f"spec.template.env[{i}].name", f"{RESERVED_ENV_PREFIX}* variables are set by the operator")
            )
    return problems


def _output_problems(spec: dict[str, Any], config: OperatorConfig) -> Problems:
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or replicas <= 1:
        return []
    source = _dict(_dict(spec.get("output")).get("volume"))
    if source.get("emptyDir") is not None:
        return [
            (
                "spec.output.volume.emptyDir",
                f"{replicas} replicas cannot share an emptyDir output (each pod gets its own): "
                "use a shared volume",
            )
        ]
    if source.get("hostPath") is not None and not config.policy.single_node:
        return [
            (
                "spec.output.volume.hostPath",
                f"{replicas} replicas cannot share a node-local hostPath output: use a shared volume",
            )
        ]
    return []


def violations(job: Mapping[str, Any], config: OperatorConfig) -> Problems:
    """(field path, rule) for everything `job` asks that `config.policy` does not allow; [] when none."""
    spec = _dict(_dict(job).get("spec"))
    return [
        *_volume_problems(spec, config),
        *_image_problems(spec, config),
        *_key_problems(spec, config),
        *_output_problems(spec, config),
    ]


__all__ = [
    "DEFAULT_VOLUME_TYPES",
    "DRIVER_HOST_PATHS",
    "GROUP",
    "KIND",
    "LOCAL_POLICY",
    "PLURAL",
    "VERSION",
    "HostPathPrefix",
    "Policy",
    "violations",
    "with_local_policy",
]
