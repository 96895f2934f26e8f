"""The generated CRD: structural, accepted by a 1.37 schema check, and equivalent to the models.

The same manifests go through the pydantic models and through the CRD's OpenAPI schema
(`jsonschema`, with unknown fields rejected as `kubectl --validate=strict` does), and through the
CEL rules (cel-python) with the schema's defaults applied first, as the API server does.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from api_builders import KUBE_VERSION, MODES, PLATFORMS, make_job
from crd_check import Cel, apply_defaults, cel_failures, draft4
from mnv2.config import TrainingConfig
from mnv2_operator.api import OPERATOR_SET_TRAINING_FIELDS, JobSpec, SpecError, parse_job
from mnv2_operator.crd import PRINTER_COLUMNS, generate_crd
from mnv2_operator.validation import immutable_changes
from pydantic import ValidationError
from pydantic.alias_generators import to_camel

CRD = generate_crd()
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
SPEC_SCHEMA = SCHEMA["properties"]["spec"]
# Where the schema keeps unknown fields on purpose: full Kubernetes volumes (any source), and the
# copy of the spec the operator accepted (already validated as spec; no second set of defaults/rules).
PRESERVED = {"spec.template.volumes[]", "status.acceptedSpec"}
STRUCTURAL_KEYS = {
    "type",
    "description",
    "default",
    "enum",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
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
    "items",
    "properties",
    "additionalProperties",
    "anyOf",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
}


def _walk(node: dict[str, Any], path: str = ""):
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}" if path else name)
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_crd_identity_and_printer_columns():
    names = CRD["spec"]["names"]
    assert CRD["metadata"]["name"] == "mobilenetv2trainjobs.training.mindspore.io"
    assert (CRD["spec"]["group"], CRD["spec"]["scope"]) == ("training.mindspore.io", "Namespaced")
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "MobileNetV2TrainJob",
        "mobilenetv2trainjobs",
        ["mnv2job", "mnv2"],
    )
    assert VERSION["name"] == "v1alpha1" and VERSION["subresources"] == {"status": {}}
    assert [c["name"] for c in VERSION["additionalPrinterColumns"]] == [
        "Platform",
        "Replicas",
        "State",
        "Progress",
        "Top-1",
        "Age",
        "Checkpoint",
        "Exports",
    ]
    # -o wide only (priority 1): where the model went
    assert [c.get("priority", 0) for c in VERSION["additionalPrinterColumns"]] == [0] * 6 + [1, 1]
    assert VERSION["additionalPrinterColumns"] == PRINTER_COLUMNS


def test_crd_passes_strict_upstream_validation():
    kubernetes_validate.validate(CRD, KUBE_VERSION, strict=True)


def test_schema_is_structural():
    text = json.dumps(SCHEMA)
    assert "$ref" not in text and "$defs" not in text and '"nullable"' not in text
    for path, node in _walk(SCHEMA):
        assert set(node) <= STRUCTURAL_KEYS, (path, set(node) - STRUCTURAL_KEYS)
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}] and "type" not in node, path
            continue
        assert "anyOf" not in node, path
        assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, path
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("x-kubernetes-preserve-unknown-fields"):
            assert path in PRESERVED, path
        if "enum" in node:
            assert all(isinstance(v, str) for v in node["enum"]) == (node["type"] == "string"), path
        if "default" in node:  # a default must be valid under its own schema (the API server checks)
            jsonschema.Draft4Validator(draft4(node)).validate(node["default"])
        for field in node.get("required", []):
            assert field in node.get("properties", {}), (path, field)
    assert SCHEMA["properties"]["metadata"] == {"type": "object"}


def test_training_schema_is_the_trainers_configuration():
    training = SPEC_SCHEMA["properties"]["training"]
    expected = {to_camel(f) for f in TrainingConfig.model_fields} - {
        to_camel(f) for f in OPERATOR_SET_TRAINING_FIELDS
    }
    assert set(training["properties"]) == expected
    assert training["properties"]["imageSize"] | {"description": ""} == {
        "type": "integer",
        "description": "",
        "minimum": 32,
        "maximum": 1024,
    }
    assert training["properties"]["ampLevel"]["enum"] == ["O0", "O2", "O3"]
    assert "default" not in training["properties"]["batchSize"]  # the platform preset applies


def test_defaults_in_the_schema_are_the_models_defaults():
    defaulted = apply_defaults(make_job()["spec"], SPEC_SCHEMA)
    model = JobSpec.model_validate(make_job()["spec"]).model_dump(
        by_alias=True, mode="json", exclude_none=True
    )
    for key in ("runPolicy", "scheduling", "metrics", "mode", "freezeLayer", "replicas"):
        assert defaulted[key] == model[key], key
    assert defaulted["dataset"]["mountPath"] == "/data" and defaulted["output"]["path"] == "/output"


# --- the same manifests through the models and the schema ---


SPEC_VALIDATOR = jsonschema.Draft4Validator(draft4(SPEC_SCHEMA))


def _model_accepts(spec: dict[str, Any]) -> bool:
    try:
        JobSpec.model_validate_json(json.dumps(spec), strict=True)
    except ValidationError:
        return False
    return True


def _schema_accepts(spec: dict[str, Any]) -> bool:
    return SPEC_VALIDATOR.is_valid(spec)


def _valid_specs() -> list[dict[str, Any]]:
    return [make_job(p, m, devices=1)["spec"] for p in PLATFORMS for m in MODES]


def _mutations() -> list[tuple[str, Any]]:
    return [
        ("replicas", 0),
        ("replicas", 1025),
        ("replicas", "2"),
        ("replicas", 2.5),
        ("devicesPerReplica", 0),
        ("devicesPerReplica", 65),
        ("platform", "TPU"),
        ("mode", "pretrain"),
        ("freezeLayer", "all"),
        ("image", 5),
        ("training.epochs", 0),
        ("training.epochs", "3"),
        ("training.widthMult", 0),
        ("training.widthMult", 4.5),
        ("training.momentum", 1.0),
        ("training.ampLevel", "O1"),
        ("training.onCorruptImage", "ignore"),
        ("training.colour", "red"),
        ("training.platform", "CPU"),
        ("dataset.volume.persistentVolumeClaim", {"claimName": ""}),
        ("dataset.volume.nfs", {"server": "x"}),
        ("dataset.volume.hostPath", {"path": "relative"}),
        ("dataset.volume.hostPath", {"path": "/x", "type": "Dir"}),
        ("dataset.volume.gitRepo", {"repository": "x"}),
        ("dataset.trainPath", "/data/../x"),
        ("dataset.trainPath", "/data/"),
        ("dataset.evalPath", ""),
        ("output.path", "out"),
        ("runPolicy.backoffLimit", -1),
        ("runPolicy.backoffLimit", 1001),
        ("runPolicy.cleanPodPolicy", "Some"),
        ("runPolicy.restartPolicy", "Always"),
        ("runPolicy.suspend", "yes"),
        ("runPolicy.activeDeadlineSeconds", 0),
        ("runPolicy.ttlSecondsAfterFinished", -5),
        ("runPolicy.pendingTimeoutSeconds", 60),
        ("scheduling.gang", "true"),
        ("scheduling.gangScheduler", "yunikorn"),
        ("scheduling.queue", "q" * 254),
        ("metrics.port", 1023),
        ("metrics.port", 65536),
        ("metrics.port", 9100),
        ("template.resources.limits", {"cpu": "500m", "memory": 1073741824}),
        ("template.resources.limits", {"cpu": 0.5}),
        ("template.resources.limits", {"memory": "1 GiB"}),
        ("template.resources.claims", [{"name": "x"}]),
        ("template.tolerations", [{"effect": "Sometimes"}]),
        ("template.env", [{"name": ""}]),
        ("template.env", [{"name": "A", "valueFrom": {"anything": {"x": 1}}}]),
        ("template.env", [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
        ("template.env", [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]),
        (
            "template.env",
            [{"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}}],
        ),
        ("template.volumes", [{"name": "cache", "csi": {"driver": "x"}}]),
        ("template.volumes", [{"csi": {}}]),
        ("template.volumeMounts", [{"name": "x", "mountPath": "/x", "mountPropagation": "None"}]),
        ("template.labels", {"team": 5}),
        ("template.nodeSelector", {"a": "b" * 64}),
        ("template.env", [{"name": f"V{i}", "value": "1"} for i in range(257)]),
    ]


def _mutated(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    node = spec
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return spec


def test_valid_specs_pass_models_and_schema():
    for spec in _valid_specs():
        assert _model_accepts(spec) and _schema_accepts(spec), spec


@pytest.mark.parametrize("path, value", _mutations(), ids=lambda v: str(v)[:40])
def test_models_and_schema_agree(path, value):
    spec = _mutated(make_job("GPU", "finetune")["spec"], path, value)
    assert _model_accepts(spec) == _schema_accepts(spec), (
        f"model {'accepts' if _model_accepts(spec) else 'rejects'}, schema "
        f"{'accepts' if _schema_accepts(spec) else 'rejects'}: "
        + "; ".join(e.message for e in SPEC_VALIDATOR.iter_errors(spec))
    )


# --- the CEL rules, evaluated with cel-python ---


@pytest.fixture(scope="module")
def cel() -> Cel:
    return Cel()


def _python_problems(obj: dict[str, Any]) -> set[str]:
    try:
        parse_job(obj)
    except SpecError as error:
        return {path for path, _ in error.problems}
    return set()


CEL_CASES = [
    ({"platform": "Ascend", "devices": 3}, "spec.devicesPerReplica"),
    ({"platform": "GPU", "devices": 16}, "spec.devicesPerReplica"),
    ({"mode": "train", "pretrainedCheckpoint": "/data/x.ckpt"}, "spec.pretrainedCheckpoint"),
    ({"mode": "finetune", "pretrainedCheckpoint": ""}, "spec.pretrainedCheckpoint"),
    ({"mode": "eval", "pretrainedCheckpoint": ""}, "spec.pretrainedCheckpoint"),
    ({"mode": "train", "freezeLayer": "backbone"}, "spec.freezeLayer"),
    (
        {
            "mode": "eval",
            "pretrainedCheckpoint": "/data/x.ckpt",
            "dataset": {"volume": {"emptyDir": {}}, "evalPath": ""},
        },
        "spec.dataset.evalPath",
    ),
    ({"platform": "CPU", "training": {"ampLevel": "O2"}}, "spec.training.ampLevel"),
    ({"platform": "CPU", "training": {"lossScale": 128}}, "spec.training.lossScale"),
    ({"platform": "CPU", "training": {"dynamicLossScale": True}}, "spec.training.dynamicLossScale"),
    ({"scheduling": {"gangScheduler": "kueue"}}, "spec.scheduling.queue"),
    ({"dataset": {"volume": {"emptyDir": {}}, "trainPath": "/train"}}, "spec.dataset.trainPath"),
    ({"dataset": {"volume": {"emptyDir": {}}, "evalPath": "/val"}}, "spec.dataset.evalPath"),
    ({"dataset": {"volume": {}}}, "spec.dataset.volume"),
    ({"output": {"volume": {"emptyDir": {}, "nfs": {"server": "s", "path": "/p"}}}}, "spec.output.volume"),
    ({"devices": 8, "metrics": {"port": 65530}}, "spec.metrics.port"),
    ({"output": {"volume": {"emptyDir": {}}, "path": "/data/out"}}, "spec.output.path"),
    ({"output": {"volume": {"emptyDir": {}}, "path": "/dev/shm"}}, "spec"),
    ({"platform": "Ascend", "output": {"volume": {"emptyDir": {}}, "path": "/etc/mnv2"}}, "spec"),
    (
        {
            "template": {
                "volumes": [{"name": "c", "emptyDir": {}}],
                "volumeMounts": [{"name": "c", "mountPath": "/output/c"}],
            }
        },
        "spec.template.volumeMounts",
    ),
    (
        {
            "template": {
                "volumes": [{"name": "c", "emptyDir": {}}],
                "volumeMounts": [{"name": "c", "mountPath": "/c"}, {"name": "c", "mountPath": "/c/d"}],
            }
        },
        "spec.template.volumeMounts",
    ),
    ({"template": {"volumeMounts": [{"name": "c", "mountPath": "/c"}]}}, "spec.template.volumeMounts"),
    ({"mode": "finetune", "pretrainedCheckpoint": "/elsewhere/x.ckpt"}, "spec.pretrainedCheckpoint"),
    ({"mode": "finetune", "pretrainedCheckpoint": "/data"}, "spec.pretrainedCheckpoint"),
    ({"template": {"env": [{"name": "MNV2_X", "value": "1"}]}}, "spec.template.env"),
    ({"template": {"labels": {"app.kubernetes.io/name": "x"}}}, "spec.template.labels"),
    ({"template": {"annotations": {"prometheus.io/port": "1"}}}, "spec.template.annotations"),
    ({"template": {"volumes": [{"name": "dataset", "emptyDir": {}}]}}, "spec.template.volumes"),
    (
        {"template": {"volumes": [{"name": "c", "emptyDir": {}}, {"name": "c", "emptyDir": {}}]}},
        "spec.template.volumes",
    ),
    (
        {"platform": "GPU", "template": {"resources": {"requests": {"nvidia.com/gpu": 1}}}},
        "spec.template.resources",
    ),
    ({"platform": "GPU", "training": {"lrEnd": 0.9, "lrMax": 0.8}}, "spec.training"),
    ({"platform": "GPU", "training": {"warmupEpochs": 9, "epochs": 8}}, "spec.training"),
    ({"platform": "GPU", "training": {"keepBest": True}}, "spec.training"),
    (
        {
            "platform": "GPU",
            "output": {"volume": {"persistentVolumeClaim": {"claimName": "o"}}, "export": ["AIR"]},
        },
        "spec.output.export",
    ),
    ({"name": "a" * 54}, "metadata.name"),
    ({"name": "-bad"}, "metadata.name"),
]


def _case_job(case: dict[str, Any]) -> dict[str, Any]:
    case = dict(case)
    platform = case.pop("platform", "GPU")
    devices = case.pop("devices", None)
    name = case.pop("name", "demo")
    return make_job(platform, devices=devices, name=name, **case)


@pytest.mark.parametrize("case, path", CEL_CASES, ids=[p + str(i) for i, (_, p) in enumerate(CEL_CASES)])
def test_cel_rules_reject_what_parse_job_rejects(cel, case, path):
    obj = _case_job(case)
    cel_paths = {p or "metadata.name" for p in cel_failures(cel, obj)}  # root rules are about the name
    assert path in cel_paths, cel_paths
    python = _python_problems(obj)
    assert any(p == path or p.startswith((f"{path}.", f"{path}[")) for p in python), python


# A value the user gives never fails on a preset they did not give (mnv2.config since d20024d: lr_end
# lifts a preset lr_max, a preset warm-up is cut to given epochs); the API server must agree.
ONE_SIDED_TRAINING = [
    {"platform": "GPU", "training": {"lrEnd": 0.9}},  # the GPU preset's lrMax is 0.8
    {"platform": "CPU", "training": {"lrMax": 0.01}},  # the CPU preset's lrEnd is 0.03
    {"platform": "Ascend", "training": {"epochs": 3}},  # the Ascend preset warms up 4 epochs
]


@pytest.mark.parametrize("case", ONE_SIDED_TRAINING, ids=lambda c: f"{c['platform']}-{c['training']}")
def test_cel_accepts_a_value_that_only_meets_a_preset(cel, case):
    obj = _case_job(case)
    assert _python_problems(obj) == set()
    assert cel_failures(cel, obj) == set()


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("mode", MODES)
def test_cel_rules_accept_valid_jobs(cel, platform, mode):
    obj = make_job(platform, mode)
    assert _python_problems(obj) == set()
    assert cel_failures(cel, obj) == set()


def test_cel_immutability_matches_immutable_changes(cel):
    old = make_job("GPU", "finetune", devices=2)
    changes = [
        ("spec.runPolicy.suspend", True, False),
        ("spec.runPolicy.backoffLimit", 9, False),
        ("spec.runPolicy.ttlSecondsAfterFinished", 30, False),
        ("spec.runPolicy.activeDeadlineSeconds", 99, False),
        ("spec.runPolicy.pendingTimeoutSeconds", 60, False),
        ("spec.runPolicy.cleanPodPolicy", "All", True),
        ("spec.runPolicy.restartPolicy", "Never", True),
        ("spec.replicas", 3, True),
        ("spec.devicesPerReplica", 4, True),
        ("spec.training.epochs", 9, True),
        ("spec.image", "x:1", True),
        ("spec.template.labels", {"a": "b"}, True),
        ("spec.scheduling.queue", "q", True),
        ("spec.dataset.trainPath", "/data/t2", True),
        ("spec.metrics.port", 9300, True),
    ]
    for path, value, immutable in changes:
        new = copy.deepcopy(old)
        node = new
        *parents, last = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
        python = immutable_changes(old["spec"], new["spec"])
        cel_rejects = bool(cel_failures(cel, new, old))
        assert bool(python) == immutable == cel_rejects, (path, python, cel_rejects)
    removed = copy.deepcopy(old)
    del removed["spec"]["devicesPerReplica"]
    assert cel_failures(cel, removed, old) == {"spec.devicesPerReplica"}
    assert immutable_changes(old["spec"], removed["spec"]) == ["spec.devicesPerReplica"]


def test_crd_command_prints_the_generated_crd(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mnv2", "crd"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout) == CRD
    out = tmp_path / "crd.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "mnv2", "crd", "-o", str(out)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and yaml.safe_load(out.read_text()) == CRD
