"""Validation of a MobileNetV2TrainJob: every problem at once, each with its field path.

Three passes, all run even when an earlier one failed, so a user fixes a manifest in one round:
1. the pydantic models (types, enums, bounds, unknown fields), errors mapped to `spec.x.y` paths;
2. cross-field rules, written against the raw dict so they run even when unrelated fields are bad;
3. the trainer's own `TrainingConfig` on the effective configuration (e.g. fp16 on CPU).
The CRD carries the same rules as CEL (`crd.py`), so the API server rejects what this rejects.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping
from typing import Any

from mnv2 import launchenv
from mnv2.config import TrainingConfig
from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from mnv2_operator import names
from mnv2_operator.api import (
    ABS_PATH_PATTERN,
    DNS1123_LABEL_PATTERN,
    ENV_NAME_PATTERN,
    IMAGE_PATTERN,
    LABEL_VALUE_PATTERN,
    OPERATOR_SET_TRAINING_FIELDS,
    TRAINING_FIELD_SOURCES,
    VOLUME_SOURCE_FIELDS,
    Job,
    JobSpec,
    SpecError,
)

# Devices (trainer processes) one pod may hold, per platform. Ascend: HCCL's supported groupings
# within one server; GPU: one 8-GPU node; CPU: processes per pod.
DEVICE_CHOICES: dict[str, list[int]] = {
    "Ascend": [1, 2, 4, 8],
    "GPU": list(range(1, 9)),
    "CPU": list(range(1, 65)),
}
DEFAULT_DEVICES_PER_REPLICA = 1

# Names and paths the renderer uses itself; user overrides may not collide with them.
KERNEL_CACHE_VOLUME = "mnv2-kernel-cache"
RESERVED_VOLUME_NAMES = ("dataset", "output", "dshm", "ranktable", KERNEL_CACHE_VOLUME)
SHM_PATH = "/dev/shm"
KERNEL_CACHE_PATH = launchenv.KERNEL_CACHE_MOUNT
RANK_TABLE_DIR = posixpath.dirname(launchenv.DEFAULT_RANK_TABLE_PATH)
RESERVED_ENV_PREFIX = "MNV2_"
DEVICE_RESOURCE_PREFIXES = ("huawei.com/", "nvidia.com/gpu")
# runPolicy fields that may change while a job exists (everything else under spec is immutable).
MUTABLE_RUN_POLICY_FIELDS = (
    "suspend",
    "ttlSecondsAfterFinished",
    "activeDeadlineSeconds",
    "backoffLimit",
    "pendingTimeoutSeconds",
)

Problems = list[tuple[str, str]]


PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")  # used with fullmatch: `$` would let "key\n" through


def _path(loc: tuple[Any, ...]) -> str:
    """("spec", "template", "env", 0, "name") -> "spec.template.env[0].name"; odd keys quoted in brackets."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif PLAIN_KEY.fullmatch(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{str(part)!r}]"
    return out


_PATH_TEXT = "must be an absolute path without '.', '..' or empty segments or a trailing '/'"
# What each schema pattern means, for people (pydantic would print the regular expression).
PATTERN_MESSAGES = {
    ABS_PATH_PATTERN: _PATH_TEXT,
    f"^$|{ABS_PATH_PATTERN}": f"empty, or {_PATH_TEXT.removeprefix('must be ')}",
    LABEL_VALUE_PATTERN: "not a valid label value (letters, digits, '-', '_', '.'; alphanumeric ends)",
    DNS1123_LABEL_PATTERN: "must be a DNS-1123 label (lowercase letters, digits and '-')",
    ENV_NAME_PATTERN: "not a valid environment variable name (printable ASCII without '=' or spaces)",
    IMAGE_PATTERN: "an image reference has no whitespace",
}


def _message(item: dict[str, Any]) -> str:
    message = item["msg"].removeprefix("Value error, ")
    if item["type"] == "missing":
        return "required"
    if item["type"] == "extra_forbidden":
        return "unknown field"
    if item["type"] == "string_pattern_mismatch":
        return PATTERN_MESSAGES.get((item.get("ctx") or {}).get("pattern"), message)
    return message


def _pydantic_problems(error: ValidationError, prefix: tuple[Any, ...] = ()) -> Problems:
    return [(_path(prefix + tuple(item["loc"])), _message(item)) for item in error.errors()]


def _get(d: Any, *keys: str, default: Any = None) -> Any:
    """Defensive lookup in a raw manifest: the default when any level is missing or not a mapping."""
    for key in keys:
        if not isinstance(d, dict) or key not in d or d[key] is None:
            return default
        d = d[key]
    return d


def _list(value: Any) -> list[Any]:
    """A raw value as a list to iterate, or [] when it is not one (the models report the type)."""
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _is_abs_path(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("/") and posixpath.normpath(value) == value.rstrip("/")


def _under(path: str, root: str) -> bool:
    path, root = posixpath.normpath(path), posixpath.normpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def _check_name(metadata: Any, spec: Any) -> Problems:
    name = _get(metadata, "name")
    if not isinstance(name, str) or not name:
        return []  # pydantic reports metadata.name missing
    problems: Problems = []
    if not names.DNS1035_LABEL.fullmatch(name):
        problems.append(
            (
                "metadata.name",
                "must be a DNS-1035 label: lowercase letters, digits and '-', "
                "starting with a letter and ending with a letter or digit",
            )
        )
    replicas = _get(spec, "replicas", default=1)
    replicas = replicas if isinstance(replicas, int) and replicas >= 1 else 1
    for kind, derived in names.derived_names(name, replicas).items():
        if len(derived) > names.DNS_LABEL_MAX:
            problems.append(
                (
                    "metadata.name",
                    f"too long: the {kind} name {derived!r} would exceed "
                    f"{names.DNS_LABEL_MAX} characters (at most {names.max_job_name_length(replicas)} "
                    f"characters for {replicas} replicas)",
                )
            )
            break
    return problems


def _check_volume_source(source: Any, path: str) -> Problems:
    if not isinstance(source, dict):
        return []
    present = [key for key in VOLUME_SOURCE_FIELDS if source.get(key) is not None]
    if len(present) != 1:
        return [(path, f"set exactly one of {', '.join(VOLUME_SOURCE_FIELDS)} (found {len(present)})")]
    if present[0] == "hostPath" and not _is_abs_path(_get(source, "hostPath", "path")):
        return [(f"{path}.hostPath.path", "must be an absolute path")]
    return []


def _check_devices(spec: dict[str, Any]) -> Problems:
    platform, devices = spec.get("platform"), spec.get("devicesPerReplica")
    if (
        not isinstance(platform, str)
        or platform not in DEVICE_CHOICES
        or not isinstance(devices, int)
        or isinstance(devices, bool)
    ):
        return []
    choices = DEVICE_CHOICES[platform]
    if devices not in choices:
        allowed = ", ".join(map(str, choices)) if len(choices) <= 4 else f"{choices[0]}-{choices[-1]}"
        return [("spec.devicesPerReplica", f"{platform} takes {allowed} devices per replica, not {devices}")]
    return []


def _check_precision(spec: dict[str, Any]) -> Problems:
    """MindSpore has no fp16 AMP or loss scaling on CPU (REFERENCE §1): reject, do not silently drop."""
    if spec.get("platform") != "CPU":
        return []
    problems: Problems = []
    if _get(spec, "training", "ampLevel") in ("O2", "O3"):
        problems.append(("spec.training.ampLevel", "fp16 mixed precision is not supported on CPU; use O0"))
    scale = _get(spec, "training", "lossScale")
    if isinstance(scale, int | float) and scale != 1:
        problems.append(("spec.training.lossScale", "loss scaling is not supported on CPU; use 1"))
    if _get(spec, "training", "dynamicLossScale") is True:
        problems.append(("spec.training.dynamicLossScale", "loss scaling is not supported on CPU"))
    return problems


def _check_mode(spec: dict[str, Any]) -> Problems:
    mode = spec.get("mode", "train")
    freeze = spec.get("freezeLayer", "none")
    checkpoint = spec.get("pretrainedCheckpoint") or ""
    problems: Problems = []
    if mode in ("finetune", "eval") and not checkpoint:
        problems.append(("spec.pretrainedCheckpoint", f"mode {mode} needs a pretrained checkpoint"))
    if mode == "train" and checkpoint:
        problems.append(
            (
                "spec.pretrainedCheckpoint",
                "mode train starts from scratch; use mode finetune to start from a checkpoint",
            )
        )
    if freeze == "backbone" and mode != "finetune":
        problems.append(
            (
                "spec.freezeLayer",
                "backbone (head-only training) needs mode finetune and a pretrainedCheckpoint",
            )
        )
    if mode == "eval" and _get(spec, "dataset", "evalPath", default="/data/val") == "":
        problems.append(("spec.dataset.evalPath", "mode eval needs an evaluation dataset"))
    return problems


def _mounts(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(mount path, field path) of every volume mounted into the trainer container."""
    # The operator's own mounts first, so an overlap is reported on the user's field.
    out = [(SHM_PATH, "the shared-memory volume"), (KERNEL_CACHE_PATH, "the kernel-cache volume")]
    if spec.get("platform") == "Ascend":
        out.append((RANK_TABLE_DIR, "the rank-table volume"))
    out += [
        (_get(spec, "dataset", "mountPath", default="/data"), "spec.dataset.mountPath"),
        (_get(spec, "output", "path", default="/output"), "spec.output.path"),
    ]
    for i, mount in enumerate(_list(_get(spec, "template", "volumeMounts"))):
        if isinstance(mount, dict) and isinstance(mount.get("mountPath"), str):
            out.append((mount["mountPath"], f"spec.template.volumeMounts[{i}].mountPath"))
    return out


def _check_paths(spec: dict[str, Any]) -> Problems:
    problems: Problems = []
    mounts = _mounts(spec)
    for mount, field in mounts:
        if field.startswith("spec.") and not _is_abs_path(mount):
            problems.append((field, "must be an absolute path without '..' or trailing '/'"))
    seen: dict[str, str] = {}
    for mount, field in mounts:
        if not _is_abs_path(mount):
            continue
        for other, other_field in seen.items():
            if _under(mount, other) or _under(other, mount):
                problems.append((field, f"mount path {mount} overlaps {other}, used by {other_field}"))
                break
        seen[mount] = field
    dataset_mount = _get(spec, "dataset", "mountPath", default="/data")
    for key, default in (("trainPath", "/data/train"), ("evalPath", "/data/val")):
        value = _get(spec, "dataset", key, default=default)
        if value == "" and key == "evalPath":
            continue
        if not _is_abs_path(value):
            problems.append((f"spec.dataset.{key}", "must be an absolute path without '..' or trailing '/'"))
        elif _is_abs_path(dataset_mount) and not _under(value, dataset_mount):
            problems.append(
                (f"spec.dataset.{key}", f"must be inside spec.dataset.mountPath ({dataset_mount})")
            )
    checkpoint = spec.get("pretrainedCheckpoint") or ""
    if checkpoint:
        roots = [m for m, f in mounts if f.startswith("spec.") and _is_abs_path(m)]
        if not _is_abs_path(checkpoint):
            problems.append(("spec.pretrainedCheckpoint", "must be an absolute path inside a mounted volume"))
        elif not any(_under(checkpoint, root) and checkpoint != root for root in roots):
            problems.append(
                ("spec.pretrainedCheckpoint", f"must be inside a mounted volume ({', '.join(roots)})")
            )
    return problems


def _check_template(spec: dict[str, Any]) -> Problems:
    template = _get(spec, "template", default={})
    if not isinstance(template, dict):
        return []
    problems: Problems = []
    for field, reserved in (
        ("labels", names.RESERVED_LABEL_PREFIXES),
        ("annotations", names.RESERVED_ANNOTATION_PREFIXES),
        ("nodeSelector", ()),
    ):
        mapping = template.get(field) or {}
        if not isinstance(mapping, dict):
            continue
        for key, value in mapping.items():
            path = _path(("spec", "template", field, key))
            if not isinstance(key, str) or not names.is_label_key(key):
                problems.append(
                    (path, "not a valid key (optional DNS prefix '/' name of at most 63 characters)")
                )
            elif key.startswith(reserved) if reserved else False:
                problems.append((path, "reserved for the operator"))
            if field != "annotations" and isinstance(value, str) and not names.is_label_value(value):
                problems.append((path, "not a valid label value (at most 63 letters, digits, '-', '_', '.')"))
    volume_names: set[str] = set()
    for i, volume in enumerate(_list(template.get("volumes"))):
        name = _get(volume, "name")
        if not isinstance(name, str):
            continue
        if not names.DNS1123_LABEL.fullmatch(name):
            problems.append((f"spec.template.volumes[{i}].name", "must be a DNS-1123 label"))
        if name in RESERVED_VOLUME_NAMES:
            problems.append((f"spec.template.volumes[{i}].name", f"{name!r} is used by the operator"))
        if name in volume_names:
            problems.append((f"spec.template.volumes[{i}].name", f"duplicate volume {name!r}"))
        volume_names.add(name)
    for i, mount in enumerate(_list(template.get("volumeMounts"))):
        name = _get(mount, "name")
        if isinstance(name, str) and name not in volume_names:
            problems.append(
                (f"spec.template.volumeMounts[{i}].name", f"no volume {name!r} in spec.template.volumes")
            )
    env_names: set[str] = set()
    for i, env in enumerate(_list(template.get("env"))):
        name = _get(env, "name")
        if not isinstance(name, str):
            continue
        if name.startswith(RESERVED_ENV_PREFIX):
            problems.append(
                (f"spec.template.env[{i}].name", f"{RESERVED_ENV_PREFIX}* variables are set by the operator")
            )
        elif not re.fullmatch(ENV_NAME_PATTERN, name):
            problems.append((f"spec.template.env[{i}].name", "not a valid environment variable name"))
        if name in env_names:
            problems.append((f"spec.template.env[{i}].name", f"duplicate variable {name!r}"))
        env_names.add(name)
        if isinstance(env, dict) and env.get("value") is not None and env.get("valueFrom") is not None:
            problems.append((f"spec.template.env[{i}]", "set value or valueFrom, not both"))
    for part in ("limits", "requests"):
        for key in _dict(_get(template, "resources", part)):
            if isinstance(key, str) and key.startswith(DEVICE_RESOURCE_PREFIXES):
                problems.append(
                    (
                        _path(("spec", "template", "resources", part, key)),
                        "device resources follow spec.devicesPerReplica; do not set them here",
                    )
                )
    return problems


def _check_scheduling(spec: dict[str, Any]) -> Problems:
    problems: Problems = []
    scheduling = _get(spec, "scheduling", default={})
    if not isinstance(scheduling, dict):
        return []
    for key in ("schedulerName", "priorityClassName", "queue"):
        value = scheduling.get(key) or ""
        if (
            isinstance(value, str)
            and value
            and not (len(value) <= 253 and names.DNS1123_SUBDOMAIN.fullmatch(value))
        ):
            problems.append(
                (f"spec.scheduling.{key}", "must be a DNS-1123 subdomain (lowercase, digits, '-', '.')")
            )
    queue = scheduling.get("queue") or ""
    if scheduling.get("gang", True) and scheduling.get("gangScheduler") == "kueue":
        if not queue:
            problems.append(("spec.scheduling.queue", "gangScheduler kueue needs a LocalQueue name"))
        elif isinstance(queue, str) and not names.is_label_value(queue):
            problems.append(("spec.scheduling.queue", "a Kueue queue name must be a valid label value"))
    return problems


def _check_ports(spec: dict[str, Any]) -> Problems:
    port = _get(spec, "metrics", "port", default=launchenv.DEFAULT_METRICS_PORT)
    devices = spec.get("devicesPerReplica") or DEFAULT_DEVICES_PER_REPLICA
    if not isinstance(port, int) or not isinstance(devices, int):
        return []
    last = port + devices - 1
    if last > 65535:
        return [("spec.metrics.port", f"local ranks serve on {port}-{last}; the last must be <= 65535")]
    if port <= launchenv.DEFAULT_SCHEDULER_PORT <= last:
        return [
            (
                "spec.metrics.port",
                f"ports {port}-{last} include the scheduler port {launchenv.DEFAULT_SCHEDULER_PORT}",
            )
        ]
    return []


def cross_field_problems(obj: dict[str, Any]) -> Problems:
    """The rules no single field can check, on the raw manifest (defaults assumed where unset)."""
    spec = obj.get("spec")
    problems = _check_name(obj.get("metadata"), spec)
    if not isinstance(spec, dict):
        return problems
    problems += _check_devices(spec)
    problems += _check_mode(spec)
    problems += _check_precision(spec)
    for field in ("dataset", "output"):
        problems += _check_volume_source(_get(spec, field, "volume"), f"spec.{field}.volume")
    problems += _check_paths(spec)
    problems += _check_template(spec)
    problems += _check_scheduling(spec)
    problems += _check_ports(spec)
    return problems


_TRAINING_ALIASES = {to_camel(name): name for name in TrainingConfig.model_fields}


def training_layer(spec: JobSpec | dict[str, Any]) -> dict[str, Any]:
    """spec.training (snake_case) plus the trainer fields the operator derives from the rest of spec."""
    if isinstance(spec, JobSpec):
        spec = spec.model_dump(by_alias=True, mode="json")
    training = _get(spec, "training", default={})
    layer: dict[str, Any] = {}
    if isinstance(training, dict):
        for key, value in training.items():
            name = _TRAINING_ALIASES.get(key, key)
            if (
                value is not None
                and name in TrainingConfig.model_fields
                and name not in OPERATOR_SET_TRAINING_FIELDS
            ):
                layer[name] = value
    mode = spec.get("mode", "train")
    eval_path = _get(spec, "dataset", "evalPath", default="/data/val")
    layer.update(
        platform=spec.get("platform"),
        dataset_path=eval_path
        if mode == "eval"
        else _get(spec, "dataset", "trainPath", default="/data/train"),
        eval_dataset_path=eval_path,
        pretrain_ckpt=(spec.get("pretrainedCheckpoint") or "") if mode != "train" else "",
        freeze_layer=spec.get("freezeLayer", "none") if mode == "finetune" else "none",
        output_dir=_get(spec, "output", "path", default="/output"),
        metrics_port=_get(spec, "metrics", "port", default=launchenv.DEFAULT_METRICS_PORT),
        # Restarts of the whole job continue from the latest checkpoint on the output volume.
        resume=mode != "eval",
        export_formats=[] if mode == "eval" else _get(spec, "output", "export", default=["MINDIR"]),
    )
    return layer


def _training_path(field: str) -> str:
    if field in TRAINING_FIELD_SOURCES:
        return TRAINING_FIELD_SOURCES[field]
    return f"spec.training.{to_camel(field)}"


def training_problems(obj: dict[str, Any]) -> Problems:
    """Run the trainer's own validation on the effective configuration; paths point into the spec."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return []
    try:
        TrainingConfig.model_validate(training_layer(spec))
    except ValidationError as error:
        problems: Problems = []
        for item in error.errors():
            message = _message(item)
            if item["loc"]:
                field = str(item["loc"][0])
                field = _TRAINING_ALIASES.get(field, field)
                problems.append((_training_path(field), message))
            else:
                field, sep, rest = message.partition(": ")
                if sep and field in TrainingConfig.model_fields:
                    problems.append((_training_path(field), rest))
                else:
                    problems.append(("spec.training", message))
        return problems
    return []


def _without_nulls(node: Any) -> Any:
    """Plain dicts and lists (kopf hands over Mapping views), null-valued keys dropped as the API
    server prunes nulls of non-nullable fields (the CRD has none)."""
    if isinstance(node, Mapping):
        return {k: _without_nulls(v) for k, v in node.items() if v is not None}
    if isinstance(node, list | tuple):
        return [_without_nulls(v) for v in node]
    return node


def validate_job(obj: Any, source: str = "job") -> Job:
    """Validate a whole manifest; SpecError lists every problem (deduplicated by field path)."""
    if not isinstance(obj, Mapping):
        raise SpecError([("", "a job manifest must be a mapping")], source)
    obj = _without_nulls(obj)
    problems: Problems = []
    job: Job | None = None
    try:
        # Strict JSON validation behaves like the API server: "2" is not an integer, 0.5 not a quantity.
        job = Job.model_validate_json(json.dumps(obj, default=str), strict=True)
    except ValidationError as error:
        problems += _pydantic_problems(error)
    problems += cross_field_problems(obj)
    problems += training_problems(obj)
    unique: Problems = []
    seen_paths: set[str] = set()
    for path, message in problems:
        if path not in seen_paths:
            unique.append((path, message))
            seen_paths.add(path)
    if unique or job is None:
        raise SpecError(unique, source)
    return job


def _normalised(spec: dict[str, Any]) -> dict[str, Any]:
    try:
        return JobSpec.model_validate(spec).model_dump(by_alias=True, mode="json", exclude_none=True)
    except ValidationError:
        return spec


def _diff(old: Any, new: Any, path: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(key), new.get(key), f"{path}.{key}")
        return out
    return [] if old == new else [path]


def immutable_changes(old_spec: dict[str, Any], new_spec: dict[str, Any]) -> list[str]:
    """Field paths under spec that changed but may not change while the job exists.

    Only runPolicy's suspend, ttlSecondsAfterFinished, activeDeadlineSeconds, backoffLimit and
    pendingTimeoutSeconds may change. Specs are compared with defaults filled in, so spelling out
    a default is not a change.
    """
    old, new = _normalised(_without_nulls(old_spec or {})), _normalised(_without_nulls(new_spec or {}))
    changes = []
    for path in _diff(old, new, "spec"):
        parts = path.split(".")
        if len(parts) >= 3 and parts[1] == "runPolicy" and parts[2] in MUTABLE_RUN_POLICY_FIELDS:
            continue
        changes.append(path)
    return changes
