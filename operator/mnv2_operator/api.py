"""The MobileNetV2TrainJob resource: pydantic models of spec and status, and `parse_job`.

This is the one definition of the resource. The CRD schema (`crd.py`) is generated from these
models, `spec.training` is generated from the trainer's `TrainingConfig` (so the two never drift),
and every renderer starts from `parse_job`, which reports every problem at once with its field path
(`validation.py` holds the cross-field rules). No kopf, no Kubernetes client.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from mnv2 import launchenv
from mnv2.config import PRESET_FIELDS, FreezeLayer, Platform, TrainingConfig
from mnv2.exitcodes import ConfigError
from mnv2.progress import Progress
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    create_model,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

GROUP = "training.mindspore.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "MobileNetV2TrainJob"
PLURAL = "mobilenetv2trainjobs"
SINGULAR = "mobilenetv2trainjob"
SHORT_NAMES = ["mnv2job", "mnv2"]

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "FreezeLayer",
    "Job",
    "JobSpec",
    "JobStatus",
    "Mode",
    "Platform",
    "SpecError",
    "effective_training_config",
    "load_job_file",
    "one_line",
    "parse_job",
]


# Every character str.splitlines() breaks a line at, with the escape that keeps it visible.
_LINE_BREAKS = str.maketrans(
    {c: c.encode("unicode_escape").decode() for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}
)


def one_line(text: str) -> str:
    """`text` with line-breaking characters escaped: a user's key or value (a profile named '\\x1e',
    a path with a newline) can never split one problem of an error message over several lines."""
    return str(text).translate(_LINE_BREAKS)


class SpecError(ConfigError, ValueError):
    """A job manifest that cannot be run; `problems` lists (field path, message), all of them at once."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "job"):
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  {one_line(path)}: {one_line(message)}" for path, message in self.problems)
        super().__init__(f"{one_line(source)}: {len(self.problems)} problem(s):\n{lines}")


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields rejected (like kubectl's strict mode)."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, use_enum_values=False
    )


class Mode(StrEnum):
    TRAIN = "train"  # from scratch
    FINETUNE = "finetune"  # from pretrainedCheckpoint; freezeLayer picks whole network or head only
    EVAL = "eval"  # evaluate pretrainedCheckpoint on dataset.evalPath


class CleanPodPolicy(StrEnum):
    ALL = "All"
    RUNNING = "Running"
    NONE = "None"


class RestartPolicy(StrEnum):
    NEVER = "Never"
    ON_FAILURE = "OnFailure"
    EXIT_CODE = "ExitCode"  # retry only exit codes mnv2.exitcodes calls retryable


class GangScheduler(StrEnum):
    VOLCANO = "volcano"
    KUEUE = "kueue"


class JobState(StrEnum):
    CREATED = "Created"
    PENDING = "Pending"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


# An absolute POSIX path without '.'/'..' segments, empty segments or a trailing '/'.
ABS_PATH_PATTERN = r"^(/([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+))+$"
PATH_MAX = 4096
AbsPath = Annotated[str, Field(pattern=ABS_PATH_PATTERN, max_length=PATH_MAX)]
OptionalAbsPath = Annotated[str, Field(pattern=f"^$|{ABS_PATH_PATTERN}", max_length=PATH_MAX)]
Name = Annotated[str, Field(min_length=1, max_length=253)]
ShortString = Annotated[str, Field(max_length=1024)]
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LabelMap = Annotated[
    dict[
        Annotated[str, Field(max_length=317)],
        Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)],
    ],
    Field(max_length=64),
]
AnnotationMap = Annotated[
    dict[Annotated[str, Field(max_length=317)], Annotated[str, Field(max_length=65536)]], Field(max_length=64)
]

# --- Kubernetes shapes used by the spec (the common subset, passed through unchanged) ---

# resource.Quantity's serialised form, as controller-gen puts it into CRDs.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY = re.compile(QUANTITY_PATTERN)


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
DNS1123_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ENV_NAME_PATTERN = r"^[!-<>-~]+$"  # printable ASCII without '=' or spaces
IMAGE_PATTERN = r"^\S*$"


def _check_quantity(value: Any) -> int | str:
    """A Kubernetes quantity: an integer or a string like "500m", "8Gi" (a float is not one)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("a quantity is an integer or a string such as '500m' or '8Gi'")
    if isinstance(value, str) and not _QUANTITY.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. '500m', '2', '8Gi')")
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        raise ValueError("an integer quantity must fit 64 bits; use a suffix such as 'Ei'")
    return value


def _out_of_int64(node: Any) -> bool:
    if isinstance(node, dict):
        return any(_out_of_int64(v) for v in node.values())
    if isinstance(node, list):
        return any(_out_of_int64(v) for v in node)
    return isinstance(node, int) and not isinstance(node, bool) and not INT64_MIN <= node <= INT64_MAX


Quantity = Annotated[
    Any,
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
        }
    ),
]


class PersistentVolumeClaimSource(_Model):
    claim_name: Name = Field(..., description="Name of a PVC in the job's namespace.")
    read_only: bool | None = None


class HostPathSource(_Model):
    path: AbsPath = Field(..., description="Absolute path on the node.")
    type: (
        Literal[
            "",
            "DirectoryOrCreate",
            "Directory",
            "FileOrCreate",
            "File",
            "Socket",
            "CharDevice",
            "BlockDevice",
        ]
        | None
    ) = Field(None, description="Kubernetes hostPath type.")


class NFSSource(_Model):
    server: Name
    path: AbsPath
    read_only: bool | None = None


class EmptyDirSource(_Model):
    medium: Literal["", "Memory"] | None = None
    size_limit: Quantity | None = None


class VolumeSource(_Model):
    """Exactly one Kubernetes volume source; copied unchanged into the pod."""

    persistent_volume_claim: PersistentVolumeClaimSource | None = None
    host_path: HostPathSource | None = None
    nfs: NFSSource | None = None
    empty_dir: EmptyDirSource | None = None

    def to_k8s(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


VOLUME_SOURCE_FIELDS = ("persistentVolumeClaim", "hostPath", "nfs", "emptyDir")


class Toleration(_Model):
    key: Annotated[str, Field(max_length=317)] | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: Annotated[str, Field(max_length=63)] | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(None, ge=INT64_MIN, le=INT64_MAX)


ResourceMap = Annotated[dict[Annotated[str, Field(max_length=317)], Quantity], Field(max_length=32)]


class ResourceRequirements(_Model):
    limits: ResourceMap = Field(default_factory=dict)
    requests: ResourceMap = Field(default_factory=dict)


class ObjectFieldSelector(_Model):
    field_path: str = Field(..., min_length=1, max_length=253)
    api_version: Annotated[str, Field(max_length=253)] | None = None


class ResourceFieldSelector(_Model):
    resource: str = Field(..., min_length=1, max_length=253)
    container_name: Annotated[str, Field(max_length=63)] | None = None
    divisor: Quantity | None = None


class KeySelector(_Model):
    key: str = Field(..., min_length=1, max_length=253)
    name: Annotated[str, Field(max_length=253)] | None = None
    optional: bool | None = None


class EnvVarSource(_Model):
    """Where a variable's value comes from (the downward API, a ConfigMap or a Secret)."""

    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None
    config_map_key_ref: KeySelector | None = None
    secret_key_ref: KeySelector | None = None


class EnvVar(_Model):
    """A container environment variable, as in a pod."""

    name: str = Field(..., min_length=1, max_length=1024, pattern=ENV_NAME_PATTERN)
    value: Annotated[str, Field(max_length=32768)] | None = None
    value_from: EnvVarSource | None = None


class Volume(BaseModel):
    """A full Kubernetes volume (any source), passed through unchanged."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(..., min_length=1, max_length=63, pattern=DNS1123_LABEL_PATTERN)

    @model_validator(mode="after")
    def _json_integers(self) -> Volume:
        if _out_of_int64(self.model_extra or {}):
            raise ValueError("integers must fit 64 bits, as Kubernetes stores them")
        return self


class VolumeMount(_Model):
    name: str = Field(..., min_length=1, max_length=63, pattern=DNS1123_LABEL_PATTERN)
    mount_path: AbsPath
    read_only: bool | None = None
    sub_path: Annotated[str, Field(max_length=PATH_MAX)] | None = None


# --- the spec ---


class DatasetSpec(_Model):
    volume: VolumeSource = Field(..., description="Volume holding the image folders (mounted read-only).")
    mount_path: AbsPath = Field("/data", description="Where the dataset volume is mounted in the pod.")
    train_path: AbsPath = Field("/data/train", description="Training image folder (inside mountPath).")
    eval_path: OptionalAbsPath = Field(
        "/data/val", description="Evaluation image folder (inside mountPath); empty: none."
    )


class OutputSpec(_Model):
    volume: VolumeSource = Field(..., description="Volume for checkpoints, logs and the saved configuration.")
    path: AbsPath = Field("/output", description="Mount path of the output volume; the trainer's output_dir.")
    export: list[Literal["MINDIR", "ONNX", "AIR"]] = Field(
        default_factory=lambda: ["MINDIR"],
        max_length=3,
        description="Formats the trainer exports when training ends (logits and the model zoo's softmax "
        "graph, with a manifest); AIR only on Ascend; [] for none. Mode eval exports nothing.",
    )


MAX_SECONDS = 2**31 - 1  # about 68 years; keeps every duration a 32-bit integer, as Kubernetes' own


class RunPolicy(_Model):
    backoff_limit: int = Field(3, ge=0, le=1000, description="Whole-job restarts before the job fails.")
    active_deadline_seconds: int | None = Field(
        None, ge=1, le=MAX_SECONDS, description="Fail the job after this long."
    )
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, le=MAX_SECONDS, description="Delete the finished job after this long."
    )
    clean_pod_policy: CleanPodPolicy = Field(
        CleanPodPolicy.RUNNING, description="Pods to delete when the job finishes: All, Running or None."
    )
    suspend: bool = Field(False, description="Delete the pods and hold the job (Kueue-style queueing).")
    restart_policy: RestartPolicy = Field(
        RestartPolicy.EXIT_CODE,
        description="Never, OnFailure, or ExitCode (restart only on retryable trainer exit codes).",
    )
    pending_timeout_seconds: int | None = Field(
        None, ge=1, le=MAX_SECONDS, description="Fail the job when a pod stays Pending this long."
    )


class SchedulingSpec(_Model):
    scheduler_name: str = Field(
        "", max_length=253, description="Pod schedulerName; empty: default (volcano when gang uses it)."
    )
    queue: str = Field("", max_length=253, description="Volcano queue or Kueue LocalQueue name.")
    priority_class_name: str = Field("", max_length=253, description="Pod priorityClassName.")
    gang: bool = Field(True, description="Schedule all replicas together or none.")
    gang_scheduler: GangScheduler | None = Field(
        None, description="volcano (PodGroup) or kueue (pod-group labels); empty: the operator's default."
    )


class TemplateSpec(_Model):
    """Additions to every pod; user labels never enter a selector."""

    node_selector: LabelMap = Field(
        default_factory=dict, description="Merged over the profile's node selector."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=64, description="Added to the profile's tolerations."
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements,
        description="Container requests and limits over the profile's; devices come from devicesPerReplica.",
    )
    env: list[EnvVar] = Field(
        default_factory=list, max_length=256, description="Extra variables (MNV2_* belong to the operator)."
    )
    volumes: list[Volume] = Field(
        default_factory=list, max_length=16, description="Extra Kubernetes volumes, passed through unchanged."
    )
    volume_mounts: list[VolumeMount] = Field(
        default_factory=list,
        max_length=16,
        description="Mounts of the extra volumes into the trainer container.",
    )
    annotations: AnnotationMap = Field(default_factory=dict, description="Extra pod annotations.")
    labels: LabelMap = Field(default_factory=dict, description="Extra pod labels (never used in selectors).")


class MetricsSpec(_Model):
    port: int = Field(
        launchenv.DEFAULT_METRICS_PORT,
        ge=1024,
        le=65535,
        description="Prometheus port of local rank 0; local rank r serves on port + r.",
    )


# Trainer settings the operator derives from other spec fields (never set in spec.training).
OPERATOR_SET_TRAINING_FIELDS = frozenset(
    {
        "platform",
        "dataset_path",
        "eval_dataset_path",
        "pretrain_ckpt",
        "freeze_layer",
        "output_dir",
        "metrics_port",
        "resume",
        "export_formats",
    }
)
# Where each operator-set trainer field comes from, for error messages.
TRAINING_FIELD_SOURCES = {
    "platform": "spec.platform",
    "dataset_path": "spec.dataset.trainPath",
    "eval_dataset_path": "spec.dataset.evalPath",
    "pretrain_ckpt": "spec.pretrainedCheckpoint",
    "freeze_layer": "spec.freezeLayer",
    "output_dir": "spec.output.path",
    "metrics_port": "spec.metrics.port",
    "resume": "spec.mode",
    "export_formats": "spec.output.export",
}


def _training_spec_model() -> type[BaseModel]:
    """spec.training: TrainingConfig's fields minus those the operator sets, all optional.

    Unset fields take the trainer's default or the platform preset, so the schema carries no
    defaults of its own; the description says which applies.
    """
    fields: dict[str, Any] = {}
    for name, info in TrainingConfig.model_fields.items():
        if name in OPERATOR_SET_TRAINING_FIELDS:
            continue
        default_note = "platform preset" if name in PRESET_FIELDS else f"default {json.dumps(info.default)}"
        description = (info.description or "").rstrip(".")
        if "(preset)" in description:
            description = description.replace(" (preset)", "")
        merged = FieldInfo.merge_field_infos(
            info, default=None, description=f"{description} ({default_note})."
        )
        fields[name] = (info.annotation | None, merged)
    return create_model(
        "TrainingSpec",
        __config__=ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True),
        __doc__="The trainer's configuration (mnv2.config.TrainingConfig), camelCase keys.",
        **fields,
    )


TrainingSpec = _training_spec_model()


class JobSpec(_Model):
    platform: Platform = Field(..., description="Device target: Ascend, GPU or CPU.")
    replicas: int = Field(1, ge=1, le=1024, description="Number of pods.")
    devices_per_replica: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Trainer processes (devices) per pod. Empty: the platform profile's default.",
    )
    image: str = Field(
        "",
        max_length=1024,
        pattern=IMAGE_PATTERN,
        description="Trainer image; empty: the platform profile's image.",
    )
    mode: Mode = Field(Mode.TRAIN, description="train, finetune or eval.")
    freeze_layer: FreezeLayer = Field(
        FreezeLayer.NONE, description="none: whole network; backbone: head only (mode finetune)."
    )
    pretrained_checkpoint: OptionalAbsPath = Field(
        "", description="Checkpoint path inside a mounted volume (finetune and eval need one)."
    )
    training: TrainingSpec = Field(  # type: ignore[valid-type]
        default_factory=TrainingSpec,
        description="The trainer's configuration (camelCase); unset fields take the trainer's defaults "
        "and the platform preset.",
    )
    dataset: DatasetSpec = Field(..., description="Where the image folders are.")
    output: OutputSpec = Field(..., description="Where checkpoints and logs go.")
    run_policy: RunPolicy = Field(
        default_factory=RunPolicy, description="Restarts, deadlines, cleanup, suspend."
    )
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec, description="Scheduler, queue, gang.")
    template: TemplateSpec = Field(default_factory=TemplateSpec, description="Additions to every pod.")
    metrics: MetricsSpec = Field(default_factory=MetricsSpec, description="Trainer Prometheus metrics.")


# --- the status (written by the operator; the model is the schema's source) ---


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = Field(None, json_schema_extra={"format": "date-time"})
    last_update_time: str | None = Field(None, json_schema_extra={"format": "date-time"})
    observed_generation: int | None = Field(
        None, ge=0, description="The spec generation the condition was set from (metav1.Condition)."
    )


class ReplicaCounts(_Model):
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0


class Artifacts(_Model):
    """Where the model went: rank 0's termination message (mnv2.artifacts), paths relative to outputPath."""

    output_path: str | None = Field(None, description="The output volume's mount path in the pods.")
    checkpoint: str | None = Field(None, description="The final checkpoint.")
    best_checkpoint: str | None = Field(None, description="The best checkpoint by top-1 (keepBest).")
    best_top1: float | None = Field(None, ge=0.0, le=1.0, description="Its top-1 accuracy.")
    top1: float | None = Field(None, ge=0.0, le=1.0, description="The final top-1 accuracy.")
    exports: list[str] | None = Field(None, description="Exported model files and their manifest.")


class JobStatus(_Model):
    state: JobState | None = Field(
        None, description="Created, Pending, Running, Restarting, Suspended, Succeeded or Failed."
    )
    reason: str | None = Field(None, description="Why the job is in its state (CamelCase).")
    message: str | None = Field(None, description="The same for people, naming the pod or field at fault.")
    conditions: list[Condition] = Field(
        default_factory=list, description="Kubeflow-style conditions, one per type."
    )
    replicas: ReplicaCounts | None = Field(None, description="Pods by phase.")
    start_time: str | None = Field(None, json_schema_extra={"format": "date-time"})
    completion_time: str | None = Field(None, json_schema_extra={"format": "date-time"})
    restart_count: int | None = Field(None, ge=0, description="Whole-job restarts so far.")
    progress: Progress | None = Field(None, description="Rank 0's training progress, from its metrics.")
    observed_generation: int | None = Field(None, description="The spec generation this status describes.")
    disruption_count: int | None = Field(
        None, ge=0, description="Restarts caused by disruptions (preemption, eviction, lost node); not "
        "counted against backoffLimit.",
    )
    restart_after: str | None = Field(
        None, description="A restart's new pods are created at this time (exponential backoff).",
        json_schema_extra={"format": "date-time"},
    )
    artifacts: Artifacts | None = Field(None, description="Where the model went, once the job succeeded.")
    accepted_spec: dict[str, Any] | None = Field(
        None,
        description="The spec the job's pods run, recorded with its first status: later changes to "
        "immutable fields are refused against it.",
    )


class ObjectMeta(BaseModel):
    """The parts of metadata the operator reads; everything else passes through."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(..., min_length=1)
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Job(_Model):
    api_version: Literal["training.mindspore.io/v1alpha1"]
    kind: Literal["MobileNetV2TrainJob"]
    metadata: ObjectMeta
    spec: JobSpec
    status: dict[str, Any] | None = None  # the operator's business; never a reason to reject a job

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace


def parse_job(obj: dict[str, Any], source: str = "job") -> Job:
    """Whole CR dict -> validated `Job`; raises SpecError listing every problem with its field path."""
    from mnv2_operator.validation import validate_job  # the rules need the models above

    return validate_job(obj, source=source)


def load_job_file(path: str | Path) -> dict[str, Any]:
    """Read one YAML manifest; errors name the file (exit code 64 through ConfigError)."""
    path = Path(path)
    try:
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the job manifest: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    jobs = [doc for doc in docs if isinstance(doc, dict) and doc.get("kind") == KIND]
    if len(docs) == 1 and isinstance(docs[0], dict):
        return docs[0]
    if len(jobs) != 1:
        raise ConfigError(
            f"{path}: expected one {KIND} manifest, found {len(jobs)} among {len(docs)} documents"
        )
    return jobs[0]


def effective_training_config(job: Job | dict[str, Any]) -> TrainingConfig:
    """The TrainingConfig every trainer process of this job runs with: spec.training plus the
    fields derived from the rest of the spec (paths inside the pod, platform, mode)."""
    from mnv2_operator.validation import training_layer

    if isinstance(job, dict):
        job = parse_job(job)
    return TrainingConfig.model_validate(training_layer(job.spec))
