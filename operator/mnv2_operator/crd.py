"""The CustomResourceDefinition, generated from the pydantic models so schema and code never drift.

Pydantic's JSON Schema is turned into a Kubernetes *structural* schema: `$ref`s inlined, optional
fields as plain (non-nullable) properties so a null is pruned like an absent field, int-or-string
quantities marked, `additionalProperties: true` as `x-kubernetes-preserve-unknown-fields`, and the
cross-field rules of `validation.py` as CEL (`x-kubernetes-validations`), immutability included.
`mnv2 crd` prints it; the chart's `crds/` file is this output, checked for drift by a test.
"""

from __future__ import annotations

import copy
from typing import Any

from mnv2_operator import names
from mnv2_operator.api import (
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    JobSpec,
    JobStatus,
)
from mnv2_operator.validation import (
    DEVICE_CHOICES,
    DEVICE_RESOURCE_PREFIXES,
    KERNEL_CACHE_PATH,
    MUTABLE_RUN_POLICY_FIELDS,
    RANK_TABLE_DIR,
    RESERVED_ENV_PREFIX,
    RESERVED_VOLUME_NAMES,
    SHM_PATH,
)

# Scheduling directives that may change while the job is suspended (batch/v1 Job's mutable
# scheduling directives; Kueue sets them at admission): (parent, field) under spec. Kept equal to
# reconcile.MUTABLE_WHILE_SUSPENDED (a test checks).
MUTABLE_WHILE_SUSPENDED = (
    ("template", "nodeSelector"),
    ("template", "tolerations"),
    ("scheduling", "queue"),
    ("scheduling", "priorityClassName"),
)
# Objects whose absence means "all defaults": defaulted to {} so the API server fills their fields.
# Immutable, but checked only by the operator: no CEL cost bound is possible for pass-through data.
CEL_UNBOUNDED_TEMPLATE_FIELDS = ("volumes",)
DEFAULT_EMPTY_OBJECTS = ("training", "runPolicy", "scheduling", "template", "metrics")
# JSON Schema keywords with no place in a structural schema; propertyNames (map key bounds) is
# checked by validation.py instead.
_DROP_KEYS = {"title", "discriminator", "examples", "propertyNames"}
_KEPT_KEYS = {
    "type",
    "description",
    "default",
    "enum",
    "format",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "multipleOf",
    "minProperties",
    "maxProperties",
    "required",
}
_KEY_ORDER = ("type", "description")


class SchemaError(ValueError):
    """The models produced a JSON Schema construct that has no structural equivalent."""


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline a `$ref` (and a one-element allOf), keeping sibling keys such as description."""
    while True:
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            node = {**copy.deepcopy(target), **siblings}
        elif "allOf" in node and len(node["allOf"]) == 1:
            siblings = {k: v for k, v in node.items() if k != "allOf"}
            node = {**node["allOf"][0], **siblings}
        else:
            return node


def _enum_type(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "boolean"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "integer"
    if all(isinstance(v, str) for v in values):
        return "string"
    raise SchemaError(f"enum with mixed types: {values}")


def structural(node: dict[str, Any], defs: dict[str, Any], where: str = "") -> dict[str, Any]:
    """One pydantic JSON Schema node -> a structural OpenAPI v3 node (recursively)."""
    node = _resolve(node, defs)
    if node.get("x-kubernetes-int-or-string"):
        # The one anyOf a structural schema allows: integer or string, as controller-gen writes it.
        out: dict[str, Any] = {k: node[k] for k in ("description", "pattern") if k in node}
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        out["x-kubernetes-int-or-string"] = True
        return out
    if "anyOf" in node:
        options = [_resolve(o, defs) for o in node["anyOf"] if o.get("type") != "null"]
        outer = {k: v for k, v in node.items() if k != "anyOf"}
        if len(options) == 1:
            return structural({**options[0], **outer}, defs, where)
        types = {o.get("type") for o in options}
        if types == {"integer", "string"} or any(o.get("x-kubernetes-int-or-string") for o in options):
            return structural({"x-kubernetes-int-or-string": True, **outer}, defs, where)
        raise SchemaError(f"{where or '<root>'}: anyOf {options} has no structural form")
    out = {}
    for key, value in node.items():
        if key in _DROP_KEYS or key.startswith("$"):
            continue
        if key == "default" and value is None:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "properties":
            out["properties"] = {
                name: structural(sub, defs, f"{where}.{name}" if where else name)
                for name, sub in value.items()
            }
        elif key == "items":
            out["items"] = structural(value, defs, f"{where}[]")
        elif key == "additionalProperties":
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out["additionalProperties"] = structural(value, defs, f"{where}{{}}")
            # False: pruning of unknown fields is the API server's default
        elif key in _KEPT_KEYS or key.startswith("x-kubernetes-"):
            out[key] = copy.deepcopy(value)
        else:
            raise SchemaError(f"{where or '<root>'}: JSON Schema keyword {key!r} has no structural form")
    if "enum" in out and "type" not in out:
        out["type"] = _enum_type(out["enum"])
    if out.get("x-kubernetes-preserve-unknown-fields") and "type" not in out:
        out["type"] = "object"
    if "type" not in out:
        raise SchemaError(f"{where or '<root>'}: no type in {node}")
    if out["type"] == "object" and "properties" in out and "additionalProperties" in out:
        raise SchemaError(f"{where}: properties and additionalProperties together are not structural")
    return {
        **{k: out[k] for k in _KEY_ORDER if k in out},
        **{k: v for k, v in out.items() if k not in _KEY_ORDER},
    }


def _model_schema(model: Any) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation", ref_template="#/$defs/{model}")
    return structural(schema, schema.get("$defs", {}))


def _rule(
    rule: str, message: str, field_path: str | None = None, reason: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


def _spec_rules() -> list[dict[str, Any]]:
    """Cross-field rules of `validation.py`, as CEL on spec (defaults are applied before these run)."""
    rules = []
    for platform, choices in DEVICE_CHOICES.items():
        if platform == "CPU":
            continue  # the schema's bounds (1-64) are CPU's range
        allowed = ", ".join(map(str, choices)) if len(choices) <= 4 else f"{choices[0]}-{choices[-1]}"
        rules.append(
            _rule(
                f"self.platform != '{platform}' || !has(self.devicesPerReplica) || "
                f"self.devicesPerReplica in [{', '.join(map(str, choices))}]",
                f"{platform} takes {allowed} devices per replica",
                ".devicesPerReplica",
            )
        )
    has_ckpt = "(has(self.pretrainedCheckpoint) && self.pretrainedCheckpoint != '')"
    training = "has(self.training)"
    rules += [
        _rule(
            f"self.mode == 'train' || {has_ckpt}",
            "mode finetune and eval need a pretrained checkpoint",
            ".pretrainedCheckpoint",
        ),
        _rule(
            f"self.mode != 'train' || !{has_ckpt}",
            "mode train starts from scratch; use mode finetune to start from a checkpoint",
            ".pretrainedCheckpoint",
        ),
        _rule(
            "self.freezeLayer == 'none' || self.mode == 'finetune'",
            "freezeLayer backbone (head-only training) needs mode finetune",
            ".freezeLayer",
        ),
        _rule(
            "self.mode != 'eval' || self.dataset.evalPath != ''",
            "mode eval needs an evaluation dataset",
            ".dataset.evalPath",
        ),
        _rule(
            f"self.platform != 'CPU' || !{training} || !has(self.training.ampLevel) || "
            "self.training.ampLevel == 'O0'",
            "fp16 mixed precision is not supported on CPU; use O0",
            ".training.ampLevel",
        ),
        _rule(
            f"self.platform != 'CPU' || !{training} || !has(self.training.lossScale) || "
            "self.training.lossScale == 1.0",
            "loss scaling is not supported on CPU; use 1",
            ".training.lossScale",
        ),
        _rule(
            f"self.platform != 'CPU' || !{training} || !has(self.training.dynamicLossScale) || "
            "!self.training.dynamicLossScale",
            "loss scaling is not supported on CPU",
            ".training.dynamicLossScale",
        ),
        _rule(
            "!has(self.scheduling) || !self.scheduling.gang || !has(self.scheduling.gangScheduler) || "
            "self.scheduling.gangScheduler != 'kueue' || self.scheduling.queue != ''",
            "gangScheduler kueue needs a LocalQueue name",
            ".scheduling.queue",
        ),
        _rule(
            "self.dataset.trainPath == self.dataset.mountPath || "
            "self.dataset.trainPath.startsWith(self.dataset.mountPath + '/')",
            "must be inside spec.dataset.mountPath",
            ".dataset.trainPath",
        ),
        _rule(
            "self.dataset.evalPath == '' || self.dataset.evalPath == self.dataset.mountPath || "
            "self.dataset.evalPath.startsWith(self.dataset.mountPath + '/')",
            "must be inside spec.dataset.mountPath",
            ".dataset.evalPath",
        ),
        _rule(
            "!has(self.devicesPerReplica) || !has(self.metrics) || "
            "self.metrics.port + self.devicesPerReplica - 1 <= 65535",
            "local ranks serve on metrics.port + local rank; the last port must be <= 65535",
            ".metrics.port",
        ),
    ]
    return rules


def _overlap(a: str, b: str) -> str:
    """CEL: two normalised absolute paths are the same or one contains the other."""
    return f"({a} == {b} || {a}.startsWith({b} + '/') || {b}.startsWith({a} + '/'))"


def _mount_rules() -> list[dict[str, Any]]:
    """Where things are mounted: the same checks as validation._check_paths and _check_template."""
    dataset, output = "self.dataset.mountPath", "self.output.path"
    mounts = "self.template.volumeMounts"
    has_mounts = f"has(self.template) && has({mounts})"
    shm, rank_table, kernels = f"'{SHM_PATH}'", f"'{RANK_TABLE_DIR}'", f"'{KERNEL_CACHE_PATH}'"
    checkpoint = "self.pretrainedCheckpoint"
    return [
        _rule(
            f"!{_overlap(dataset, output)}",
            "must not overlap spec.dataset.mountPath",
            ".output.path",
        ),
        _rule(
            f"!{_overlap(dataset, shm)} && !{_overlap(output, shm)} && "
            f"!{_overlap(dataset, kernels)} && !{_overlap(output, kernels)}",
            f"spec.dataset.mountPath and spec.output.path must not overlap {SHM_PATH} or {KERNEL_CACHE_PATH}",
        ),
        _rule(
            f"self.platform != 'Ascend' || (!{_overlap(dataset, rank_table)} && "
            f"!{_overlap(output, rank_table)} && "
            f"(!({has_mounts}) || {mounts}.all(m, !{_overlap('m.mountPath', rank_table)})))",
            f"mount paths must not overlap the rank table's {RANK_TABLE_DIR}",
        ),
        _rule(
            f"!({has_mounts}) || {mounts}.all(m, !{_overlap('m.mountPath', dataset)} && "
            f"!{_overlap('m.mountPath', output)} && !{_overlap('m.mountPath', shm)} && "
            f"!{_overlap('m.mountPath', kernels)} && "
            f"{mounts}.filter(n, {_overlap('n.mountPath', 'm.mountPath')}).size() == 1)",
            "mount paths must not overlap each other, spec.dataset.mountPath, spec.output.path, /dev/shm "
            f"or {KERNEL_CACHE_PATH}",
            ".template.volumeMounts",
        ),
        _rule(
            f"!({has_mounts}) || {mounts}.all(m, has(self.template.volumes) && "
            "self.template.volumes.exists(v, v.name == m.name))",
            "every volumeMount needs a volume of that name in spec.template.volumes",
            ".template.volumeMounts",
        ),
        _rule(
            f"{checkpoint} == '' || {checkpoint}.startsWith({dataset} + '/') || "
            f"{checkpoint}.startsWith({output} + '/') || "
            f"({has_mounts} && {mounts}.exists(m, {checkpoint}.startsWith(m.mountPath + '/')))",
            "must be inside a mounted volume",
            ".pretrainedCheckpoint",
        ),
    ]


def _prefixes(var: str, prefixes: tuple[str, ...]) -> str:
    return " || ".join(f"{var}.startsWith('{prefix}')" for prefix in prefixes)


def _template_rules() -> list[dict[str, Any]]:
    """Names in spec.template the operator keeps for itself."""
    template = "has(self.template)"
    reserved_volumes = ", ".join(f"'{name}'" for name in RESERVED_VOLUME_NAMES)
    return [
        _rule(
            f"!{template} || !has(self.template.env) || "
            f"self.template.env.all(e, !e.name.startsWith('{RESERVED_ENV_PREFIX}'))",
            f"{RESERVED_ENV_PREFIX}* variables are set by the operator",
            ".template.env",
        ),
        _rule(
            f"!{template} || !has(self.template.labels) || "
            f"self.template.labels.all(k, !({_prefixes('k', names.RESERVED_LABEL_PREFIXES)}))",
            "label keys with these prefixes are reserved for the operator: "
            + ", ".join(names.RESERVED_LABEL_PREFIXES),
            ".template.labels",
        ),
        _rule(
            f"!{template} || !has(self.template.annotations) || "
            f"self.template.annotations.all(k, !({_prefixes('k', names.RESERVED_ANNOTATION_PREFIXES)}))",
            "annotation keys with these prefixes are reserved for the operator: "
            + ", ".join(names.RESERVED_ANNOTATION_PREFIXES),
            ".template.annotations",
        ),
        _rule(
            f"!{template} || !has(self.template.volumes) || "
            "self.template.volumes.all(v, self.template.volumes.filter(w, w.name == v.name).size() == 1)",
            "volume names must be unique",
            ".template.volumes",
        ),
        _rule(
            f"!{template} || !has(self.template.resources) || "
            + " && ".join(
                f"(!has(self.template.resources.{part}) || self.template.resources.{part}.all(k, "
                f"!({_prefixes('k', DEVICE_RESOURCE_PREFIXES)})))"
                for part in ("limits", "requests")
            ),
            "device resources follow spec.devicesPerReplica; do not set them here",
            ".template.resources",
        ),
        _rule(
            f"!{template} || !has(self.template.volumes) || "
            f"self.template.volumes.all(v, !(v.name in [{reserved_volumes}]))",
            f"volume names {reserved_volumes} are used by the operator",
            ".template.volumes",
        ),
    ]


def _preset_rules() -> list[dict[str, Any]]:
    """TrainingConfig's cross-field rules. A preset the user leaves unset follows the values the user
    gives (mnv2.config.apply_presets), so only two given values can conflict."""
    t = "self.training"

    def both(a: str, b: str) -> str:
        return f"!has({t}) || !has({t}.{a}) || !has({t}.{b}) || "

    return [
        _rule(both("warmupEpochs", "epochs") + f"{t}.warmupEpochs <= {t}.epochs",
              "warmupEpochs must not exceed epochs", ".training"),
        _rule(both("lrEnd", "lrMax") + f"{t}.lrEnd <= {t}.lrMax", "lrEnd must not exceed lrMax", ".training"),
        _rule(f"!has({t}) || !has({t}.keepBest) || !{t}.keepBest || "
              f"(has({t}.evalInterval) && {t}.evalInterval > 0)",
              "keepBest needs evalInterval > 0", ".training"),
        _rule("self.platform == 'Ascend' || !has(self.output.export) || !('AIR' in self.output.export)",
              "AIR is written only on Ascend: use MINDIR or ONNX", ".output.export"),
    ]


def _volume_rule() -> dict[str, Any]:
    present = ", ".join(
        f"has(self.{field})" for field in ("persistentVolumeClaim", "hostPath", "nfs", "emptyDir")
    )
    return _rule(
        f"[{present}].filter(x, x).size() == 1",
        "set exactly one of persistentVolumeClaim, hostPath, nfs, emptyDir",
    )


def _immutable(spec_schema: dict[str, Any]) -> None:
    """`self == oldSelf` on every spec field except runPolicy's mutable ones, plus presence rules
    (a transition rule does not run when the field is added or removed)."""
    properties = spec_schema["properties"]
    presence = []
    for name, prop in properties.items():
        if name == "runPolicy":
            for sub_name, sub in prop["properties"].items():
                if sub_name not in MUTABLE_RUN_POLICY_FIELDS:
                    sub.setdefault("x-kubernetes-validations", []).append(
                        _rule(
                            "self == oldSelf",
                            f"spec.runPolicy.{sub_name} is immutable",
                            reason="FieldValueForbidden",
                        )
                    )
            continue
        if name in ("template", "scheduling"):
            # Per field: template.volumes holds arbitrary volume sources (unknown fields kept), whose
            # size CEL cannot bound, so its immutability is the operator's alone (immutable_changes);
            # scheduling directives may change while suspended (_suspended_changes below).
            for sub_name, sub in prop["properties"].items():
                if sub_name in CEL_UNBOUNDED_TEMPLATE_FIELDS or (name, sub_name) in MUTABLE_WHILE_SUSPENDED:
                    continue
                message = f"spec.{name}.{sub_name} is immutable"
                sub.setdefault("x-kubernetes-validations", []).append(
                    _rule("self == oldSelf", message, reason="FieldValueForbidden")
                )
                prop.setdefault("x-kubernetes-validations", []).append(
                    _rule(
                        f"has(self.{sub_name}) == has(oldSelf.{sub_name})",
                        message,
                        f".{sub_name}",
                        "FieldValueForbidden",
                    )
                )
        else:
            prop.setdefault("x-kubernetes-validations", []).append(
                _rule("self == oldSelf", f"spec.{name} is immutable", reason="FieldValueForbidden")
            )
        if name not in spec_schema.get("required", []):
            presence.append(
                _rule(
                    f"has(self.{name}) == has(oldSelf.{name})",
                    f"spec.{name} is immutable",
                    f".{name}",
                    "FieldValueForbidden",
                )
            )
    spec_schema.setdefault("x-kubernetes-validations", []).extend(presence + _suspended_changes())


def _suspended_changes() -> list[dict[str, Any]]:
    """Transition rules: a scheduling directive changes only while the stored job is suspended (the
    update that resumes it may carry the change, as Kueue's admission does)."""
    was_suspended = "(has(oldSelf.runPolicy) && has(oldSelf.runPolicy.suspend) && oldSelf.runPolicy.suspend)"
    rules = []
    for parent, field in MUTABLE_WHILE_SUSPENDED:
        new, old = f"self.{parent}", f"oldSelf.{parent}"
        same = (
            f"has({new}) == has({old}) && (!has({new}) || (has({new}.{field}) == has({old}.{field}) && "
            f"(!has({new}.{field}) || {new}.{field} == {old}.{field})))"
        )
        rules.append(
            _rule(
                f"{was_suspended} || ({same})",
                f"spec.{parent}.{field} is immutable unless the job is suspended",
                f".{parent}.{field}",
                "FieldValueForbidden",
            )
        )
    return rules


def spec_schema() -> dict[str, Any]:
    schema = _model_schema(JobSpec)
    schema["description"] = "What to train and how to run it."
    for name in DEFAULT_EMPTY_OBJECTS:
        schema["properties"][name].setdefault("default", {})
    for field in ("dataset", "output"):
        schema["properties"][field]["properties"]["volume"]["x-kubernetes-validations"] = [_volume_rule()]
    schema["x-kubernetes-validations"] = _spec_rules() + _preset_rules() + _mount_rules() + _template_rules()
    _immutable(schema)
    return schema


def status_schema() -> dict[str, Any]:
    schema = _model_schema(JobStatus)
    schema["description"] = "Observed state, written by the operator."
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return schema


def stored_form(value: Any, schema: dict[str, Any]) -> Any:
    """`value` as kube-apiserver stores it under the structural `schema`: unknown fields pruned
    (unless x-kubernetes-preserve-unknown-fields), then defaults applied, recursively.

    The operator compares what it computes with what is stored through this, so a field the CRD
    does not keep can never cause a write on every pass.
    """
    if isinstance(value, dict) and schema.get("type") == "object":
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        keep = schema.get("x-kubernetes-preserve-unknown-fields", False)
        out: dict[str, Any] = {}
        for key, item in value.items():
            if item is None and not (properties.get(key) or {}).get("nullable"):
                continue  # a null for a non-nullable field is pruned before defaulting
            if key in properties:
                out[key] = stored_form(item, properties[key])
            elif isinstance(extra, dict):
                out[key] = stored_form(item, extra)
            elif keep:
                out[key] = copy.deepcopy(item)
        for key, prop in properties.items():
            if key not in out and "default" in prop:
                out[key] = stored_form(copy.deepcopy(prop["default"]), prop)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [stored_form(item, schema["items"]) for item in value]
    return copy.deepcopy(value)


_STATUS_SCHEMA: dict[str, Any] | None = None


def stored_status(status: dict[str, Any]) -> dict[str, Any]:
    """The job status as the API server would keep it (see stored_form)."""
    global _STATUS_SCHEMA
    if _STATUS_SCHEMA is None:
        _STATUS_SCHEMA = status_schema()
    return stored_form(status, _STATUS_SCHEMA)


def openapi_schema() -> dict[str, Any]:
    max_name = names.DNS_LABEL_MAX - len(names.RANK_TABLE_SUFFIX)
    return {
        "type": "object",
        "description": "A MobileNetV2 training, fine-tuning or evaluation job on MindSpore.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        },
        "x-kubernetes-validations": [
            _rule(
                f"self.metadata.name.size() <= {max_name}",
                f"metadata.name: at most {max_name} characters, so that every derived name "
                f"(<name>{names.RANK_TABLE_SUFFIX}, <name>-<replica>) stays a DNS label",
            ),
            _rule(
                "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
                "metadata.name: must be a DNS-1035 label (lowercase letters, digits, '-', "
                "starting with a letter)",
            ),
        ],
    }


PRINTER_COLUMNS = [
    {"name": "Platform", "type": "string", "jsonPath": ".spec.platform"},
    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
    {"name": "State", "type": "string", "jsonPath": ".status.state"},
    {
        "name": "Progress",
        "type": "number",
        "format": "float",
        "jsonPath": ".status.progress.percent",
        "description": "Percent of all training steps done",
    },
    {
        "name": "Top-1",
        "type": "number",
        "format": "float",
        "jsonPath": ".status.progress.top1",
        "description": "Latest top-1 accuracy (0-1)",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    # -o wide: where the model went (status.artifacts, paths relative to the output volume)
    {
        "name": "Checkpoint",
        "type": "string",
        "jsonPath": ".status.artifacts.checkpoint",
        "description": "Final checkpoint, relative to the output volume",
        "priority": 1,
    },
    {
        "name": "Exports",
        "type": "string",
        "jsonPath": ".status.artifacts.exports",
        "description": "Exported model files, relative to the output volume",
        "priority": 1,
    },
]


def generate_crd() -> dict[str, Any]:
    """The apiextensions.k8s.io/v1 CustomResourceDefinition of MobileNetV2TrainJob."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {names.LABEL_NAME: "mobilenetv2-operator", "app.kubernetes.io/part-of": "mnv2"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["all", "mindspore"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": copy.deepcopy(PRINTER_COLUMNS),
                }
            ],
        },
    }
