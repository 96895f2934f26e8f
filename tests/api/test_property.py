"""Property: any manifest is either rejected with problems that name fields, or renders objects that
pass Kubernetes 1.37 strict schema validation and keep every name and label within its limits.

Examples mix valid and invalid values for every field, so both branches are exercised; the
reliability helper may raise MNV2_HYPOTHESIS_EXAMPLES for longer runs.
"""

from __future__ import annotations

import os
from typing import Any

from api_builders import validate_strict
from crd_check import cel_failures, cel_or_none, pruned, schema_errors
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mnv2_operator import names
from mnv2_operator.api import SpecError
from mnv2_operator.profiles import load_operator_config
from mnv2_operator.render import render_job

CONFIG = load_operator_config(None)
CEL = cel_or_none()
EXAMPLES = int(os.environ.get("MNV2_HYPOTHESIS_EXAMPLES", "200"))
FIELD_ROOTS = ("spec", "metadata", "apiVersion", "kind")

label_value = st.one_of(st.from_regex(r"\A[a-z0-9]([-a-z0-9_.]{0,20}[a-z0-9])?\Z"), st.text(max_size=70))
label_key = st.one_of(
    st.from_regex(r"\A([a-z0-9]{1,10}\.[a-z]{2,5}/)?[a-z][-a-z0-9]{0,20}\Z"),
    st.sampled_from(["app.kubernetes.io/name", "training.mindspore.io/x", "bad key", "a" * 70]),
)
quantity = st.one_of(
    st.integers(0, 2**40),
    st.from_regex(r"\A[0-9]{1,4}(m|Mi|Gi|k)?\Z"),
    st.text(max_size=8),
    st.floats(0, 10, allow_nan=False),
)
path = st.one_of(
    st.sampled_from(
        [
            "/data",
            "/data/train",
            "/data/val",
            "/output",
            "/cache",
            "/data/ckpt/m.ckpt",
            "/dev/shm",
            "relative",
            "/data/../etc",
            "/data/",
            "",
            "/",
        ]
    ),
    st.from_regex(r"\A(/[a-z0-9]{1,8}){1,3}\Z"),
)
volume_source = st.one_of(
    st.builds(
        lambda c: {"persistentVolumeClaim": {"claimName": c}}, st.sampled_from(["data", "", "x" * 300])
    ),
    st.builds(lambda p: {"hostPath": {"path": p}}, path),
    st.builds(
        lambda s, p: {"nfs": {"server": s, "path": p}}, st.sampled_from(["nfs.local", "10.0.0.1"]), path
    ),
    st.builds(
        lambda m: {"emptyDir": m},
        st.sampled_from([{}, {"medium": "Memory"}, {"sizeLimit": "1Gi"}, {"medium": "Disk"}]),
    ),
    st.just({}),
    st.just({"emptyDir": {}, "hostPath": {"path": "/x"}}),
)
training = st.fixed_dictionaries(
    {},
    optional={
        "epochs": st.integers(-1, 300),
        "warmupEpochs": st.integers(0, 10),
        "batchSize": st.one_of(st.integers(0, 300), st.just("32")),
        "imageSize": st.integers(16, 1100),
        "widthMult": st.floats(-0.5, 5, allow_nan=False),
        "numClasses": st.integers(0, 2000),
        "lrMax": st.floats(0, 2, allow_nan=False),
        "lrEnd": st.floats(0, 2, allow_nan=False),
        "ampLevel": st.sampled_from(["O0", "O2", "O3", "O1"]),
        "lossScale": st.sampled_from([1.0, 1024.0, 0.5]),
        "dynamicLossScale": st.booleans(),
        "onCorruptImage": st.sampled_from(["error", "skip", "ignore"]),
        "outputDir": st.just("/elsewhere"),
        "colour": st.just("red"),
    },
)
template = st.fixed_dictionaries(
    {},
    optional={
        "labels": st.dictionaries(label_key, label_value, max_size=3),
        "annotations": st.dictionaries(label_key, st.text(max_size=20), max_size=3),
        "nodeSelector": st.dictionaries(label_key, label_value, max_size=2),
        "env": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.sampled_from(["TZ", "A_B", "MNV2_PLATFORM", "", "x=y"]),
                    "value": st.text(max_size=10),
                }
            ),
            max_size=3,
        ),
        "resources": st.fixed_dictionaries(
            {},
            optional={
                "limits": st.dictionaries(
                    st.sampled_from(["cpu", "memory", "nvidia.com/gpu", "example.com/fpga"]),
                    quantity,
                    max_size=2,
                ),
                "requests": st.dictionaries(st.sampled_from(["cpu", "memory"]), quantity, max_size=2),
            },
        ),
        "volumes": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["cache", "scratch", "dataset", "Bad"]), "emptyDir": st.just({})}
            ),
            max_size=2,
        ),
        "volumeMounts": st.lists(
            st.fixed_dictionaries({"name": st.sampled_from(["cache", "scratch", "nope"]), "mountPath": path}),
            max_size=2,
        ),
        "tolerations": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "key": st.sampled_from(["dedicated", "nvidia.com/gpu"]),
                    "operator": st.sampled_from(["Exists", "Equal", "In"]),
                    "effect": st.sampled_from(["NoSchedule", "NoExecute", "Never"]),
                },
            ),
            max_size=2,
        ),
    },
)
spec = st.fixed_dictionaries(
    {
        "platform": st.sampled_from(["Ascend", "GPU", "CPU", "CPU", "TPU"]),
        "dataset": st.fixed_dictionaries(
            {"volume": volume_source}, optional={"mountPath": path, "trainPath": path, "evalPath": path}
        ),
        "output": st.fixed_dictionaries({"volume": volume_source}, optional={"path": path}),
    },
    optional={
        "replicas": st.one_of(st.integers(-1, 12), st.just(1024), st.just(1025), st.just("2")),
        "devicesPerReplica": st.integers(0, 70),
        "image": st.sampled_from(["", "example.org/mnv2:1", "x" * 1100]),
        "mode": st.sampled_from(["train", "finetune", "eval", "pretrain"]),
        "freezeLayer": st.sampled_from(["none", "backbone", "all"]),
        "pretrainedCheckpoint": path,
        "training": training,
        "runPolicy": st.fixed_dictionaries(
            {},
            optional={
                "backoffLimit": st.integers(-2, 1100),
                "cleanPodPolicy": st.sampled_from(["All", "Running", "None", "X"]),
                "restartPolicy": st.sampled_from(["Never", "OnFailure", "ExitCode", "Always"]),
                "suspend": st.booleans(),
                "activeDeadlineSeconds": st.integers(-1, 10**6),
                "ttlSecondsAfterFinished": st.integers(-1, 10**6),
                "pendingTimeoutSeconds": st.integers(-1, 10**6),
            },
        ),
        "scheduling": st.fixed_dictionaries(
            {},
            optional={
                "gang": st.booleans(),
                "gangScheduler": st.sampled_from(["volcano", "kueue", "slurm"]),
                "queue": st.sampled_from(["", "research", "Bad_Queue"]),
                "schedulerName": st.sampled_from(["", "volcano", "my-scheduler"]),
                "priorityClassName": st.sampled_from(["", "high", "HIGH"]),
            },
        ),
        "template": template,
        "metrics": st.fixed_dictionaries({"port": st.integers(0, 70000)}),
    },
)
job = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(["training.mindspore.io/v1alpha1"] * 9 + ["v1"]),
        "kind": st.just("MobileNetV2TrainJob"),
        "metadata": st.fixed_dictionaries(
            {
                "name": st.one_of(
                    st.from_regex(r"\A[a-z][-a-z0-9]{0,60}[a-z0-9]\Z"), st.text(min_size=1, max_size=70)
                ),
                "namespace": st.sampled_from(["default", "ml-team"]),
            },
            optional={"uid": st.uuids().map(str)},
        ),
        "spec": spec,
    }
)

# Jobs that should mostly be valid: every platform, mode, size and gang variant, valid overrides.
DEVICES = {"Ascend": [1, 2, 4, 8], "GPU": list(range(1, 9)), "CPU": list(range(1, 5))}


@st.composite
def plausible_job(draw) -> dict[str, Any]:
    platform = draw(st.sampled_from(["Ascend", "GPU", "CPU"]))
    mode = draw(st.sampled_from(["train", "finetune", "head-only", "eval"]))
    gang = draw(st.sampled_from(["volcano", "kueue", None]))
    body: dict[str, Any] = {
        "platform": platform,
        "replicas": draw(st.integers(1, 6)),
        "devicesPerReplica": draw(st.sampled_from(DEVICES[platform])),
        "training": {"epochs": draw(st.integers(4, 50)), "batchSize": draw(st.integers(1, 256))},
        "dataset": {
            "volume": draw(
                st.sampled_from(
                    [
                        {"persistentVolumeClaim": {"claimName": "data"}},
                        {"hostPath": {"path": "/mnt/data"}},
                        {"nfs": {"server": "nfs", "path": "/exports/d"}},
                    ]
                )
            )
        },
        "output": {"volume": {"emptyDir": {}}, "path": draw(st.sampled_from(["/output", "/results/run1"]))},
        "scheduling": {"gang": gang is not None, "gangScheduler": gang or "volcano", "queue": "research"},
        "metrics": {"port": draw(st.integers(1024, 8100))},
        "template": {
            "labels": draw(
                st.dictionaries(
                    st.from_regex(r"\A[a-z][a-z0-9-]{0,10}[a-z0-9]\Z"),
                    st.from_regex(r"\A[a-z0-9]{0,12}\Z"),
                    max_size=3,
                )
            ),
            "resources": {
                "requests": {
                    "cpu": draw(st.sampled_from(["500m", "2", 4])),
                    "memory": draw(st.sampled_from(["1Gi", 1073741824, "512M"])),
                }
            },
        },
    }
    if mode != "train":
        body["mode"] = "finetune" if mode == "head-only" else mode
        body["pretrainedCheckpoint"] = "/data/pretrained/mobilenetv2.ckpt"
    if mode == "head-only":
        body["freezeLayer"] = "backbone"
    name = draw(st.from_regex(r"\A[a-z][-a-z0-9]{0,40}[a-z0-9]\Z"))
    return {
        "apiVersion": "training.mindspore.io/v1alpha1",
        "kind": "MobileNetV2TrainJob",
        "metadata": {"name": name, "namespace": "ml", "uid": "6a1b"},
        "spec": body,
    }


@st.composite
def one_fault(draw) -> dict[str, Any]:
    """A plausible job with one field replaced by an arbitrary value from the wide strategies."""
    manifest = draw(plausible_job())
    field, value = draw(
        st.one_of(
            st.tuples(st.just("replicas"), st.one_of(st.integers(-2, 2000), st.text(max_size=3))),
            st.tuples(st.just("devicesPerReplica"), st.integers(0, 70)),
            st.tuples(st.just("training"), training),
            st.tuples(st.just("template"), template),
            st.tuples(st.just("pretrainedCheckpoint"), path),
            st.tuples(
                st.just("dataset"),
                st.fixed_dictionaries(
                    {"volume": volume_source},
                    optional={"mountPath": path, "trainPath": path, "evalPath": path},
                ),
            ),
            st.tuples(st.just("metrics"), st.fixed_dictionaries({"port": st.integers(0, 70000)})),
        )
    )
    manifest["spec"][field] = value
    return manifest


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


@st.composite
def hostile_job(draw) -> dict[str, Any]:
    """A plausible job with any one node (or a new key beside it) replaced by arbitrary JSON."""
    manifest = draw(plausible_job())
    where = draw(st.sampled_from(_paths(manifest)))
    node = manifest
    for key in where[:-1]:
        node = node[key]
    key = where[-1] if draw(st.booleans()) or not isinstance(node, dict) else draw(st.text(max_size=8))
    node[key] = draw(json_value)
    return manifest


def _check_rendered(objects: list[dict[str, Any]]) -> None:
    kinds = [o["kind"] for o in objects]
    assert kinds.count("Service") == 1 and kinds.count("Pod") >= 1
    for obj in objects:
        meta = obj["metadata"]
        assert names.DNS1123_LABEL.fullmatch(meta["name"]) and len(meta["name"]) <= 63, meta["name"]
        for key, value in meta.get("labels", {}).items():
            assert names.is_label_key(key) and names.is_label_value(value), (key, value)
        for key in meta.get("annotations", {}):
            assert names.is_label_key(key), key
        if obj["kind"] == "Pod":
            spec = obj["spec"]
            assert names.DNS1123_LABEL.fullmatch(spec["hostname"]) and len(spec["hostname"]) <= 63
            mounts = [m["mountPath"] for m in spec["containers"][0]["volumeMounts"]]
            assert len(mounts) == len(set(mounts))
            volume_names = [v["name"] for v in spec["volumes"]]
            assert len(volume_names) == len(set(volume_names))
            assert {m["name"] for m in spec["containers"][0]["volumeMounts"]} <= set(volume_names)
            env_names = [e["name"] for e in spec["containers"][0]["env"]]
            assert len(env_names) == len(set(env_names))
            for selector_key, value in spec.get("nodeSelector", {}).items():
                assert names.is_label_key(selector_key) and names.is_label_value(value)
        if obj["kind"] != "PodGroup":  # Volcano's PodGroup has no upstream schema
            validate_strict(obj)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.one_of(job, plausible_job(), one_fault(), hostile_job()))
def test_random_jobs_are_rejected_with_field_paths_or_render_valid_objects(manifest):
    try:
        objects = render_job(manifest, CONFIG)
    except SpecError as error:
        event("rejected")
        assert error.problems
        for field, message in error.problems:
            assert field, message
            root = field.split(".")[0].split("[")[0]
            assert root in FIELD_ROOTS or message == "unknown field", (field, message)
            assert message.strip(), field
        return
    event("rendered")
    _check_rendered(objects)
    # What the operator accepts, the API server must accept too (schema and CEL rules of the CRD).
    assert schema_errors(pruned(manifest)) == []
    if CEL is not None:
        assert cel_failures(CEL, manifest) == set()
