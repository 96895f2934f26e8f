"""Validation reports every problem at once, each under the field path a user would edit."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from api_builders import make_job
from mnv2.exitcodes import ConfigError
from mnv2_operator.api import SpecError, load_job_file, parse_job
from mnv2_operator.validation import immutable_changes


def _problems(obj: dict) -> dict[str, str]:
    with pytest.raises(SpecError) as error:
        parse_job(obj)
    return dict(error.value.problems)


def _with(path: str, value, **job_kwargs) -> dict:
    """make_job(...) with one dotted path under the manifest set to `value`."""
    obj = make_job(**job_kwargs)
    node = obj
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return obj


CASES = [
    # (path set, value, make_job kwargs, expected field path, message fragment)
    ("spec.replicas", 0, {}, "spec.replicas", "greater than or equal to 1"),
    ("spec.replicas", "2", {}, "spec.replicas", "valid integer"),
    (
        "spec.devicesPerReplica",
        3,
        {"platform": "Ascend"},
        "spec.devicesPerReplica",
        "Ascend takes 1, 2, 4, 8",
    ),
    (
        "spec.devicesPerReplica",
        9,
        {"platform": "GPU"},
        "spec.devicesPerReplica",
        "GPU takes 1-8 devices per replica, not 9",
    ),
    ("spec.devicesPerReplica", 12, {"platform": "GPU"}, "spec.devicesPerReplica", "GPU takes 1-8"),
    ("spec.devicesPerReplica", 65, {"platform": "CPU"}, "spec.devicesPerReplica", "less than or equal to 64"),
    ("spec.platform", "TPU", {}, "spec.platform", "'Ascend', 'GPU' or 'CPU'"),
    ("spec.mode", "finetune", {}, "spec.pretrainedCheckpoint", "mode finetune needs a pretrained checkpoint"),
    ("spec.mode", "eval", {}, "spec.pretrainedCheckpoint", "mode eval needs a pretrained checkpoint"),
    ("spec.freezeLayer", "backbone", {}, "spec.freezeLayer", "needs mode finetune"),
    ("spec.pretrainedCheckpoint", "/data/a.ckpt", {}, "spec.pretrainedCheckpoint", "use mode finetune"),
    (
        "spec.pretrainedCheckpoint",
        "/elsewhere/a.ckpt",
        {"mode": "finetune"},
        "spec.pretrainedCheckpoint",
        "inside a mounted volume",
    ),
    (
        "spec.pretrainedCheckpoint",
        "ckpt/a.ckpt",
        {"mode": "finetune"},
        "spec.pretrainedCheckpoint",
        "empty, or an absolute path",
    ),
    ("spec.training.ampLevel", "O2", {"platform": "CPU"}, "spec.training.ampLevel", "fp16"),
    ("spec.training.lossScale", 1024, {"platform": "CPU"}, "spec.training.lossScale", "not supported on CPU"),
    ("spec.training.warmupEpochs", 9, {}, "spec.training.warmupEpochs", "must not exceed epochs"),
    (
        "spec.training.lrEnd",
        0.9,
        {"platform": "GPU", "training": {"lrMax": 0.8}},
        "spec.training.lrEnd",
        "must not exceed lr_max",
    ),
    ("spec.training.frobnicate", 1, {}, "spec.training.frobnicate", "unknown field"),
    ("spec.training.platform", "GPU", {}, "spec.training.platform", "unknown field"),
    ("spec.training.outputDir", "/x", {}, "spec.training.outputDir", "unknown field"),
    ("spec.training.widthMult", 0, {}, "spec.training.widthMult", "greater than 0"),
    ("spec.frobnicate", 1, {}, "spec.frobnicate", "unknown field"),
    ("spec.image", "my image:1", {}, "spec.image", "no whitespace"),
    ("metadata.name", "Demo", {}, "metadata.name", "DNS-1035"),
    ("metadata.name", "9lives", {}, "metadata.name", "DNS-1035"),
    ("metadata.name", "a" * 54, {}, "metadata.name", "at most 53 characters"),
    ("kind", "PyTorchJob", {}, "kind", "MobileNetV2TrainJob"),
    ("apiVersion", "training.mindspore.io/v1", {}, "apiVersion", "v1alpha1"),
    ("spec.dataset", None, {}, "spec.dataset", "required"),
    ("spec.dataset.volume", {}, {}, "spec.dataset.volume", "exactly one of"),
    (
        "spec.dataset.volume",
        {"emptyDir": {}, "hostPath": {"path": "/d"}},
        {},
        "spec.dataset.volume",
        "found 2",
    ),
    (
        "spec.dataset.volume",
        {"hostPath": {"path": "d"}},
        {},
        "spec.dataset.volume.hostPath.path",
        "must be an absolute path",
    ),
    ("spec.dataset.volume", {"csi": {"driver": "x"}}, {}, "spec.dataset.volume.csi", "unknown field"),
    (
        "spec.dataset.trainPath",
        "/train",
        {},
        "spec.dataset.trainPath",
        "inside spec.dataset.mountPath (/data)",
    ),
    ("spec.dataset.trainPath", "/data/../etc", {}, "spec.dataset.trainPath", "without '.', '..'"),
    (
        "spec.dataset.evalPath",
        "",
        {"mode": "eval", "pretrainedCheckpoint": "/data/c.ckpt"},
        "spec.dataset.evalPath",
        "mode eval needs an evaluation dataset",
    ),
    (
        "spec.output.path",
        "/data/out",
        {},
        "spec.output.path",
        "overlaps /data, used by spec.dataset.mountPath",
    ),
    (
        "spec.output.path",
        "/dev/shm",
        {},
        "spec.output.path",
        "overlaps /dev/shm, used by the shared-memory volume",
    ),
    ("spec.runPolicy.backoffLimit", -1, {}, "spec.runPolicy.backoffLimit", "greater than or equal to 0"),
    ("spec.runPolicy.cleanPodPolicy", "Sometimes", {}, "spec.runPolicy.cleanPodPolicy", "'All', 'Running'"),
    ("spec.runPolicy.restartPolicy", "Always", {}, "spec.runPolicy.restartPolicy", "'ExitCode'"),
    ("spec.runPolicy.activeDeadlineSeconds", 0, {}, "spec.runPolicy.activeDeadlineSeconds", "greater than"),
    ("spec.scheduling.gangScheduler", "kueue", {}, "spec.scheduling.queue", "needs a LocalQueue name"),
    ("spec.scheduling.gangScheduler", "slurm", {}, "spec.scheduling.gangScheduler", "'volcano' or 'kueue'"),
    (
        "spec.scheduling.priorityClassName",
        "High_Priority",
        {},
        "spec.scheduling.priorityClassName",
        "DNS-1123",
    ),
    ("spec.metrics.port", 80, {}, "spec.metrics.port", "greater than or equal to 1024"),
    ("spec.metrics.port", 8115, {"devices": 8}, "spec.metrics.port", "include the scheduler port 8118"),
    ("spec.metrics.port", 65530, {"devices": 8}, "spec.metrics.port", "must be <= 65535"),
    (
        "spec.template.labels",
        {"app.kubernetes.io/name": "x"},
        {},
        "spec.template.labels['app.kubernetes.io/name']",
        "reserved",
    ),
    ("spec.template.labels", {"team": "a b"}, {}, "spec.template.labels.team", "not a valid label value"),
    ("spec.template.labels", {"bad key!": "x"}, {}, "spec.template.labels['bad key!']", "not a valid key"),
    (
        "spec.template.annotations",
        {"prometheus.io/port": "1"},
        {},
        "spec.template.annotations['prometheus.io/port']",
        "reserved",
    ),
    (
        "spec.template.env",
        [{"name": "MNV2_PLATFORM", "value": "GPU"}],
        {},
        "spec.template.env[0].name",
        "set by the operator",
    ),
    (
        "spec.template.env",
        [{"name": "A", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}],
        {},
        "spec.template.env[0]",
        "not both",
    ),
    (
        "spec.template.volumes",
        [{"name": "dataset", "emptyDir": {}}],
        {},
        "spec.template.volumes[0].name",
        "used by the operator",
    ),
    (
        "spec.template.volumeMounts",
        [{"name": "cache", "mountPath": "/cache"}],
        {},
        "spec.template.volumeMounts[0].name",
        "no volume 'cache'",
    ),
    (
        "spec.template.resources",
        {"limits": {"nvidia.com/gpu": 2}},
        {"platform": "GPU"},
        "spec.template.resources.limits['nvidia.com/gpu']",
        "follow spec.devicesPerReplica",
    ),
    (
        "spec.template.resources",
        {"limits": {"cpu": 0.5}},
        {},
        "spec.template.resources.limits.cpu",
        "quantity",
    ),
    (
        "spec.template.resources",
        {"limits": {"memory": "8 GB"}},
        {},
        "spec.template.resources.limits.memory",
        "not a Kubernetes quantity",
    ),
    (
        "spec.template.tolerations",
        [{"operator": "Maybe"}],
        {},
        "spec.template.tolerations[0].operator",
        "'Exists' or 'Equal'",
    ),
]


@pytest.mark.parametrize(
    "path, value, kwargs, field, fragment", CASES, ids=[f"{c[0]}={c[1]!r}"[:60] for c in CASES]
)
def test_each_problem_is_reported_under_its_field(path, value, kwargs, field, fragment):
    kwargs = dict(kwargs)
    if "devices" in kwargs:
        kwargs["devices"] = kwargs.pop("devices")
    problems = _problems(_with(path, value, **kwargs))
    assert field in problems, problems
    assert fragment in problems[field], problems


def test_every_problem_is_reported_at_once():
    obj = make_job("CPU", name="Bad_Name", replicas=0, devices=200)
    obj["spec"].update(mode="eval", freezeLayer="backbone", runPolicy={"backoffLimit": -1})
    obj["spec"]["training"].update(ampLevel="O3", epochs=0, colour="red")
    obj["spec"]["template"] = {"env": [{"name": "MNV2_JOB_NAME", "value": "x"}]}
    problems = _problems(obj)
    assert set(problems) >= {
        "metadata.name",
        "spec.replicas",
        "spec.devicesPerReplica",
        "spec.pretrainedCheckpoint",
        "spec.freezeLayer",
        "spec.runPolicy.backoffLimit",
        "spec.training.ampLevel",
        "spec.training.epochs",
        "spec.training.colour",
        "spec.template.env[0].name",
    }
    with pytest.raises(SpecError) as error:
        parse_job(obj, source="job.yaml")
    assert str(error.value).startswith(f"job.yaml: {len(problems)} problem(s):\n  ")


def test_name_length_depends_on_the_longest_derived_name():
    assert parse_job(make_job(name="a" * 53, replicas=1024))
    assert "metadata.name" in _problems(make_job(name="a" * 54, replicas=2))


def test_a_valid_job_has_defaults_filled():
    job = parse_job(make_job("GPU"))
    spec = job.spec
    assert (spec.mode, spec.freeze_layer, spec.devices_per_replica) == ("train", "none", None)
    assert spec.run_policy.backoff_limit == 3
    assert spec.run_policy.clean_pod_policy == "Running" and spec.run_policy.restart_policy == "ExitCode"
    assert spec.run_policy.suspend is False and spec.scheduling.gang is True
    assert spec.metrics.port == 9090 and spec.dataset.mount_path == "/data"


def test_status_never_makes_a_job_invalid():
    obj = make_job()
    obj["status"] = {"state": "Whatever", "progress": {"percent": 500}}
    assert parse_job(obj).status == obj["status"]


def test_a_read_only_mapping_view_is_accepted():
    from types import MappingProxyType

    obj = make_job()
    view = MappingProxyType({**obj, "spec": MappingProxyType(obj["spec"])})  # like kopf's Body
    assert parse_job(view).spec.replicas == 2  # type: ignore[arg-type]


def test_not_a_mapping():
    with pytest.raises(SpecError) as error:
        parse_job(["a list"])  # type: ignore[arg-type]
    assert error.value.problems == [("", "a job manifest must be a mapping")]


# --- immutability ---


def test_only_runpolicy_knobs_may_change():
    old = make_job()["spec"]
    new = make_job()["spec"]
    new["runPolicy"] = {
        "suspend": True,
        "backoffLimit": 7,
        "ttlSecondsAfterFinished": 60,
        "activeDeadlineSeconds": 3600,
        "pendingTimeoutSeconds": 600,
    }
    assert immutable_changes(old, new) == []
    new["replicas"] = 4
    new["training"]["epochs"] = 50
    new["runPolicy"]["cleanPodPolicy"] = "All"
    new["template"] = {"labels": {"team": "x"}}
    assert immutable_changes(old, new) == [
        "spec.replicas",
        "spec.runPolicy.cleanPodPolicy",
        "spec.template.labels.team",
        "spec.training.epochs",
    ]


def test_spelling_out_a_default_is_not_a_change():
    old = make_job()["spec"]
    new = {**old, "mode": "train", "runPolicy": {"restartPolicy": "ExitCode"}, "metrics": {"port": 9090}}
    assert immutable_changes(old, new) == []


# --- files and the command line ---


def test_load_job_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match=f"{missing}: cannot read"):
        load_job_file(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed\n")
    with pytest.raises(ConfigError, match=f"{bad}: not valid YAML"):
        load_job_file(bad)
    many = tmp_path / "many.yaml"
    many.write_text(yaml.safe_dump_all([make_job(name="a"), make_job(name="b")]))
    with pytest.raises(ConfigError, match="expected one MobileNetV2TrainJob manifest, found 2"):
        load_job_file(many)
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text(
        yaml.safe_dump_all([{"kind": "Namespace", "metadata": {"name": "ml"}}, make_job(name="c")])
    )
    assert load_job_file(mixed)["metadata"]["name"] == "c"


def _mnv2(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnv2", *args], capture_output=True, text=True, timeout=60)


def test_validate_command_exit_codes(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(make_job("GPU", "finetune", devices=4)))
    result = _mnv2("validate", str(good))
    assert result.returncode == 0, result.stderr
    assert "valid: ml/demo, GPU, mode finetune, 2 replica(s) x 4 device(s)" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_with("spec.training.ampLevel", "O2", platform="CPU", replicas=0)))
    result = _mnv2("validate", str(bad))
    assert result.returncode == 64
    assert f"{bad}: invalid, 2 problem(s):" in result.stderr
    assert "  spec.replicas: " in result.stderr and "  spec.training.ampLevel: fp16" in result.stderr


def test_render_command_prints_every_object(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(make_job("Ascend", replicas=2)))
    result = _mnv2("render", str(path), "--namespace", "team-a")
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in docs] == ["PodGroup", "Service", "ConfigMap", "Pod", "Pod"]
    assert {d["metadata"]["namespace"] for d in docs} == {"team-a"}
    path.write_text(yaml.safe_dump(_with("spec.replicas", -1)))
    result = _mnv2("render", str(path))
    assert result.returncode == 64 and "spec.replicas" in result.stderr and result.stdout == ""


@pytest.mark.parametrize("name", ["demo\n", "team\n"])
def test_a_trailing_newline_is_not_a_valid_name_or_label(name):
    """Python's `$` also matches before a final newline; Kubernetes' name and label grammars do not
    allow one (apimachinery validation: DNS-1035 label, qualified name, label value)."""
    from mnv2_operator import names

    assert not names.is_label_key(name) and not names.is_label_value(name)
    assert not names.DNS1035_LABEL.fullmatch(name) and not names.DNS1123_SUBDOMAIN.fullmatch(name)
    with pytest.raises(SpecError, match=r"metadata\.name"):
        parse_job(make_job(name=name))
