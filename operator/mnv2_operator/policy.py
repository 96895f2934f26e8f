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

import json
import posixpath
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from mnv2_operator import names
from mnv2_operator.api import ABS_PATH_PATTERN, GROUP, PLURAL, VERSION
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
TAG_OR_DIGEST_SUFFIX = f"(?:{_TAG})?(?:{_DIGEST})?$"  # Python re and Go RE2 alike (the chart uses it)
_TAG_OR_DIGEST_SUFFIX = re.compile(TAG_OR_DIGEST_SUFFIX)
ROOT_OR_ABS_PATH_PATTERN = f"^/$|{ABS_PATH_PATTERN}"
# A repository (no tag, no digest), or a prefix ending in '/' ("registry.example.internal/team/").
REPOSITORY_PATTERN = f"^(?:{_DOMAIN}/)?(?:{_COMPONENT}/)*(?:{_COMPONENT})?$"
Repository = Annotated[str, Field(min_length=1, max_length=1024, pattern=REPOSITORY_PATTERN)]

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
    image_repositories: list[Repository] = Field(
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
    """Host paths only profiles may mount: the known driver paths and every profile's hostPaths
    (those below another one left out: they add nothing to an overlap check)."""
    paths = set(DRIVER_HOST_PATHS)
    for profile in config.profiles.values():
        for volume in profile.volumes:
            host_path = (volume.model_extra or {}).get("hostPath")
            if isinstance(host_path, dict) and isinstance(host_path.get("path"), str):
                paths.add(posixpath.normpath(host_path["path"]))
    return sorted(p for p in paths if not any(q != p and _under(p, q) for q in paths))


def reserved_label_prefixes(config: OperatorConfig) -> list[str]:
    return sorted(set(names.RESERVED_LABEL_PREFIXES) | set(config.policy.reserved_label_prefixes))


def reserved_annotation_prefixes(config: OperatorConfig) -> list[str]:
    return sorted(set(names.RESERVED_ANNOTATION_PREFIXES) | set(config.policy.reserved_annotation_prefixes))


def host_path_prefixes(config: OperatorConfig) -> list[str]:
    return sorted({p.path for p in config.policy.host_path_prefixes})


def read_write_prefixes(config: OperatorConfig) -> list[str]:
    return sorted({p.path for p in config.policy.host_path_prefixes if p.read_write})


# --- the checks: one function per rule, each naming the fields it refuses ---


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _matches(pattern: str, text: Any) -> bool:
    """RE2's (CEL's) `matches` for an anchored pattern: `$` is the end of the text, never before a newline."""
    return isinstance(text, str) and re.fullmatch(pattern, text) is not None


def _under(path: str, prefix: str) -> bool:
    """`path` is `prefix` or below it (both normalised; "/" holds everything)."""
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def _overlap(a: str, b: str) -> bool:
    return _under(a, b) or _under(b, a)


Violation = tuple[str, str, str]  # (field path, what the rule says, rule name)


def _job_volumes(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any], bool]]:
    """(field, volume, mounted read-write) of every volume the job brings."""
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


def _volume_violations(spec: dict[str, Any], config: OperatorConfig) -> list[Violation]:
    allowed = config.policy.volume_types
    out: list[Violation] = []
    for field, volume, writable in _job_volumes(spec):
        kinds = [k for k, v in volume.items() if k != "name" and v is not None]
        for kind in kinds:
            if kind not in allowed:
                out.append(
                    (
                        f"{field}.{kind}",
                        f"volume type {kind} is not allowed (allowed: {', '.join(allowed)})",
                        "volumeType",
                    )
                )
        if "hostPath" in kinds and "hostPath" in allowed:
            out += _host_path_violations(field, _dict(volume.get("hostPath")), writable, config)
    return out


def _host_path_violations(
    field: str, host_path: dict[str, Any], writable: bool, config: OperatorConfig
) -> list[Violation]:
    path, kind = host_path.get("path"), host_path.get("type")
    out: list[Violation] = []
    if kind in HOST_PATH_DEVICE_TYPES:
        out.append(
            (
                f"{field}.hostPath.type",
                f"{kind}: a job may not mount a socket or device of the node",
                "hostPathType",
            )
        )
    if not _matches(ROOT_OR_ABS_PATH_PATTERN, path):
        text = "must be a normalised absolute path (no '.', '..', '//' or trailing '/')"
        return [*out, (f"{field}.hostPath.path", text, "hostPathNormalised")]
    prefixes = host_path_prefixes(config)
    if not any(_under(path, prefix) for prefix in prefixes):
        text = f"{path} is outside the host paths the policy allows ({', '.join(prefixes) or 'none'})"
        return [*out, (f"{field}.hostPath.path", text, "hostPathPrefix")]
    drivers = [d for d in driver_host_paths(config) if _overlap(path, d)]
    if drivers:
        text = f"{path} overlaps {drivers[0]}: driver paths come from the platform profile only"
        out.append((f"{field}.hostPath.path", text, "driverHostPath"))
    if writable and not any(_under(path, prefix) for prefix in read_write_prefixes(config)):
        need = "the output needs a readWrite prefix" if field == "spec.output.volume" else "mount it readOnly"
        out.append((f"{field}.hostPath.path", f"{path} is read-only by policy: {need}", "hostPathReadOnly"))
    return out


def _image_allowed(image: str, repo: str) -> bool:
    if repo.endswith("/"):
        return image.startswith(repo)
    return image == repo or image.startswith(repo + ":") or image.startswith(repo + "@")


def _image_violations(spec: dict[str, Any], config: OperatorConfig) -> list[Violation]:
    image = spec.get("image")
    if not isinstance(image, str) or not image:
        return []  # the profile's image
    repos = image_repositories(config)
    if not _matches(IMAGE_REFERENCE_PATTERN, image):
        return [("spec.image", f"{image!r} is not an image reference (repository:tag or @digest)", "image")]
    if not any(_image_allowed(image, repo) for repo in repos):
        text = f"repository {repository(image)!r} is not allowed (allowed: {', '.join(repos)})"
        return [("spec.image", text, "image")]
    return []


def _key_violations(spec: dict[str, Any], config: OperatorConfig) -> list[Violation]:
    template = _dict(spec.get("template"))
    out: list[Violation] = []
    for field, prefixes, rule in (
        ("labels", reserved_label_prefixes(config), "reservedLabel"),
        ("annotations", reserved_annotation_prefixes(config), "reservedAnnotation"),
    ):
        for key in _dict(template.get(field)):
            hit = next((p for p in prefixes if isinstance(key, str) and key.startswith(p)), None)
            if hit is not None:
                out.append(
                    (f"spec.template.{field}[{key!r}]", f"keys with prefix {hit!r} are reserved", rule)
                )
    for i, env in enumerate(_list(template.get("env"))):
        name = _dict(env).get("name")
        if isinstance(name, str) and name.startswith(RESERVED_ENV_PREFIX):
            text = f"{RESERVED_ENV_PREFIX}* variables are set by the operator"
            out.append((f"spec.template.env[{i}].name", text, "reservedEnv"))
    return out


def _output_violations(spec: dict[str, Any], config: OperatorConfig) -> list[Violation]:
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas <= 1:
        return []
    volume = _dict(_dict(spec.get("output")).get("volume"))
    if volume.get("emptyDir") is not None:
        text = (
            f"{replicas} replicas cannot share an emptyDir output (each pod has its own): use a shared volume"
        )
        return [("spec.output.volume.emptyDir", text, "nodeLocalOutput")]
    if volume.get("hostPath") is not None and not config.policy.single_node:
        text = f"{replicas} replicas cannot share a node-local hostPath output: use a shared volume"
        return [("spec.output.volume.hostPath", text, "nodeLocalOutput")]
    return []


def rule_violations(job: Mapping[str, Any], config: OperatorConfig) -> list[Violation]:
    """(field path, rule text, rule name) for everything `job` asks that `config.policy` does not allow."""
    spec = _dict(_dict(job).get("spec"))
    return [
        *_volume_violations(spec, config),
        *_image_violations(spec, config),
        *_key_violations(spec, config),
        *_output_violations(spec, config),
    ]


def violations(job: Mapping[str, Any], config: OperatorConfig) -> list[tuple[str, str]]:
    """(field path, rule) for everything `job` asks that `config.policy` does not allow; [] when none.

    The operator calls this before creating anything (a job that breaks the policy fails with
    reason PolicyViolation); `mnv2 validate` and `mnv2 render` print the same list.
    """
    return [(path, text) for path, text, _ in rule_violations(job, config)]


# --- the same rules as a ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1, Kubernetes 1.30+) ---
#
# The policy's data (allowed types, prefixes, repositories) are CEL variables rendered from the
# operator configuration; the rules below are fixed text, each the CEL twin of one check above.
# The chart writes the variables from its values and copies these rules from files/ (hack/generate.py).

_ABS = ROOT_OR_ABS_PATH_PATTERN.replace("\\", "\\\\")
_IMG = IMAGE_REFERENCE_PATTERN.replace("\\", "\\\\")
_DEVICE_TYPES = "[" + ", ".join(f"'{t}'" for t in HOST_PATH_DEVICE_TYPES) + "]"


def _cel_under(path: str, prefix: str) -> str:
    return f"({prefix} == '/' || {path} == {prefix} || {path}.startsWith({prefix} + '/'))"


def _cel_overlap(a: str, b: str) -> str:
    return f"({_cel_under(a, b)} || {_cel_under(b, a)})"


def _template_list(field: str) -> str:
    return (
        f"has(object.spec.template) && has(object.spec.template.{field}) ? object.spec.template.{field} : []"
    )


def _template_map(field: str) -> str:
    present = f"has(object.spec.template) && has(object.spec.template.{field})"
    return f"{present} ? object.spec.template.{field} : {{}}"


# Variables computed from the object (after the data variables).
DERIVED_VARIABLES = [
    ("templateVolumes", _template_list("volumes")),
    ("templateMounts", _template_list("volumeMounts")),
    ("templateEnv", _template_list("env")),
    ("labels", _template_map("labels")),
    ("annotations", _template_map("annotations")),
    ("hostPathAllowed", "'hostPath' in variables.volumeTypes"),
    # Host paths a job brings, as [field, path, type, writable] rows of strings (CEL lists are homogeneous).
    (
        "hostPaths",
        "(has(object.spec.dataset.volume.hostPath) ? [['spec.dataset.volume', "
        "object.spec.dataset.volume.hostPath.path, has(object.spec.dataset.volume.hostPath.type) ? "
        "object.spec.dataset.volume.hostPath.type : '', 'ro']] : []) + "
        "(has(object.spec.output.volume.hostPath) ? [['spec.output.volume', "
        "object.spec.output.volume.hostPath.path, has(object.spec.output.volume.hostPath.type) ? "
        "object.spec.output.volume.hostPath.type : '', 'rw']] : []) + "
        "variables.templateVolumes.filter(v, has(v.hostPath))"
        ".map(v, ['spec.template.volumes[' + v.name + ']', "
        "has(v.hostPath.path) ? string(v.hostPath.path) : '', "
        "has(v.hostPath.type) ? string(v.hostPath.type) : '', "
        "variables.templateMounts.exists(m, m.name == v.name && !(has(m.readOnly) && m.readOnly == true)) "
        "? 'rw' : 'ro'])",
    ),
    # ... of them, those that are normalised and inside an allowed prefix.
    (
        "allowedHostPaths",
        f"variables.hostPaths.filter(h, h[1].matches('{_ABS}') && "
        f"variables.hostPathPrefixes.exists(p, {_cel_under('h[1]', 'p')}))",
    ),
]

_TYPES_OF = "v.filter(k, k != 'name' && !(k in variables.volumeTypes))"
# (rule name, CEL that must hold, CEL naming what breaks it); names match rule_violations().
ADMISSION_RULES: list[tuple[str, str, str]] = [
    (
        "volumeType",
        "[object.spec.dataset.volume, object.spec.output.volume].all(v, v.all(k, k in variables.volumeTypes))"
        " && variables.templateVolumes.all(v, v.all(k, k == 'name' || k in variables.volumeTypes))",
        "'volume types the policy does not allow (allowed: ' + variables.volumeTypes.join(', ') + '): ' + "
        f"([object.spec.dataset.volume].filter(v, {_TYPES_OF}.size() > 0).map(v, 'spec.dataset.volume') + "
        f"[object.spec.output.volume].filter(v, {_TYPES_OF}.size() > 0).map(v, 'spec.output.volume') + "
        f"variables.templateVolumes.filter(v, {_TYPES_OF}.size() > 0)"
        ".map(v, 'spec.template.volumes[' + v.name + ']')).join(', ')",
    ),
    (
        "hostPathType",
        f"!variables.hostPathAllowed || variables.hostPaths.all(h, !(h[2] in {_DEVICE_TYPES}))",
        f"'a job may not mount a socket or device of the node: ' + variables.hostPaths.filter(h, h[2] in "
        f"{_DEVICE_TYPES}).map(h, h[0] + '.hostPath.type').join(', ')",
    ),
    (
        "hostPathNormalised",
        f"!variables.hostPathAllowed || variables.hostPaths.all(h, h[1].matches('{_ABS}'))",
        "'host paths must be normalised absolute paths (no ., .., // or trailing /): ' + "
        f"variables.hostPaths.filter(h, !h[1].matches('{_ABS}')).map(h, h[0] + '.hostPath.path').join(', ')",
    ),
    (
        "hostPathPrefix",
        f"!variables.hostPathAllowed || variables.hostPaths.all(h, !h[1].matches('{_ABS}') || "
        f"variables.hostPathPrefixes.exists(p, {_cel_under('h[1]', 'p')}))",
        "'host paths outside the prefixes the policy allows (' + "
        "variables.hostPathPrefixes.join(', ') + '): ' + "
        f"variables.hostPaths.filter(h, h[1].matches('{_ABS}') && "
        f"!variables.hostPathPrefixes.exists(p, {_cel_under('h[1]', 'p')}))"
        ".map(h, h[0] + '.hostPath.path ' + h[1]).join(', ')",
    ),
    (
        "driverHostPath",
        f"!variables.hostPathAllowed || variables.allowedHostPaths.all(h, "
        f"!variables.driverHostPaths.exists(d, {_cel_overlap('h[1]', 'd')}))",
        "'driver paths come from the platform profile only: ' + variables.allowedHostPaths.filter(h, "
        f"variables.driverHostPaths.exists(d, {_cel_overlap('h[1]', 'd')}))"
        ".map(h, h[0] + '.hostPath.path ' + h[1]).join(', ')",
    ),
    (
        "hostPathReadOnly",
        "!variables.hostPathAllowed || variables.allowedHostPaths.all(h, h[3] == 'ro' || "
        f"variables.readWritePrefixes.exists(p, {_cel_under('h[1]', 'p')}))",
        "'read-only host paths (mount them readOnly; an output needs a readWrite prefix): ' + "
        "variables.allowedHostPaths.filter(h, h[3] == 'rw' && "
        f"!variables.readWritePrefixes.exists(p, {_cel_under('h[1]', 'p')}))"
        ".map(h, h[0] + '.hostPath.path ' + h[1]).join(', ')",
    ),
    (
        "image",
        "!has(object.spec.image) || object.spec.image == '' || "
        f"(object.spec.image.matches('{_IMG}') && variables.imageRepositories.exists(r, r.endsWith('/') ? "
        "object.spec.image.startsWith(r) : (object.spec.image == r || "
        "object.spec.image.startsWith(r + ':') || "
        "object.spec.image.startsWith(r + '@'))))",
        "'spec.image: ' + object.spec.image + ' is not from a repository the policy allows (' + "
        "variables.imageRepositories.join(', ') + ')'",
    ),
    (
        "reservedLabel",
        "variables.labels.all(k, !variables.reservedLabelPrefixes.exists(p, k.startsWith(p)))",
        "'reserved label keys in spec.template.labels: ' + "
        "variables.labels.filter(k, variables.reservedLabelPrefixes.exists(p, k.startsWith(p))).join(', ')",
    ),
    (
        "reservedAnnotation",
        "variables.annotations.all(k, !variables.reservedAnnotationPrefixes.exists(p, k.startsWith(p)))",
        "'reserved annotation keys in spec.template.annotations: ' + "
        "variables.annotations.filter(k, variables.reservedAnnotationPrefixes.exists(p, k.startsWith(p)))"
        ".join(', ')",
    ),
    (
        "reservedEnv",
        f"variables.templateEnv.all(e, !e.name.startsWith('{RESERVED_ENV_PREFIX}'))",
        f"'spec.template.env: {RESERVED_ENV_PREFIX}* variables are set by the operator: ' + "
        f"variables.templateEnv.filter(e, e.name.startsWith('{RESERVED_ENV_PREFIX}'))"
        ".map(e, e.name).join(', ')",
    ),
    (
        "nodeLocalOutput",
        "!has(object.spec.replicas) || object.spec.replicas <= 1 || "
        "(!has(object.spec.output.volume.emptyDir) && "
        "(variables.singleNode || !has(object.spec.output.volume.hostPath)))",
        "'spec.output.volume: ' + string(object.spec.replicas) + ' replicas cannot share a node-local "
        "(emptyDir or hostPath) output: use a shared volume'",
    ),
]


def data_variables(config: OperatorConfig) -> dict[str, Any]:
    """The policy's data, as the admission policy's CEL variables hold them."""
    return {
        "volumeTypes": list(config.policy.volume_types),
        "hostPathPrefixes": host_path_prefixes(config),
        "readWritePrefixes": read_write_prefixes(config),
        "driverHostPaths": driver_host_paths(config),
        "imageRepositories": image_repositories(config),
        "reservedLabelPrefixes": reserved_label_prefixes(config),
        "reservedAnnotationPrefixes": reserved_annotation_prefixes(config),
        "singleNode": config.policy.single_node,
    }


def admission_variables(config: OperatorConfig) -> list[dict[str, str]]:
    """Every variable of the admission policy: the data (JSON literals are CEL literals), then the derived."""
    data = [{"name": k, "expression": json.dumps(v)} for k, v in data_variables(config).items()]
    return data + [{"name": name, "expression": expression} for name, expression in DERIVED_VARIABLES]


NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by kube-apiserver on every namespace
# Only a new job or a changed spec is checked: the operator must still be able to remove its
# finalizer from (and so delete) a job created before the policy changed.
MATCH_CONDITIONS = [
    {"name": "spec-changed", "expression": "request.operation == 'CREATE' || object.spec != oldObject.spec"}
]


def admission_validations() -> list[dict[str, str]]:
    return [
        {
            "expression": expression,
            "messageExpression": message,
            "message": f"the job breaks the operator's policy ({name}); see docs/security.md",
            "reason": "Forbidden",
        }
        for name, expression, message in ADMISSION_RULES
    ]


def admission_policy(config: OperatorConfig, name: str = "mnv2-job-policy") -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicy and its binding that refuse, at `kubectl apply`, the jobs
    `violations()` refuses (the chart renders the same objects from its values)."""
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [GROUP],
                        "apiVersions": [VERSION],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": [PLURAL],
                    }
                ]
            },
            "matchConditions": MATCH_CONDITIONS,
            "variables": admission_variables(config),
            "validations": admission_validations(),
        },
    }
    binding: dict[str, Any] = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    }
    if config.namespaces:  # the namespaces this operator watches (the chart's watchNamespaces)
        binding["spec"]["matchResources"] = {
            "namespaceSelector": {
                "matchExpressions": [
                    {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": sorted(set(config.namespaces))}
                ]
            }
        }
    return [policy, binding]
