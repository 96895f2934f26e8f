"""Fuzz job specs and operator configurations with Hypothesis.

Job specs: a valid job with one to three fields replaced by generated values (hostile strings,
wrong types, out-of-range numbers, unknown keys). Each is either rejected by `parse_job` with
problems that carry field paths, or rendered (`render_job`) into objects a Kubernetes 1.37 API
server accepts (strict schema, name and label limits) with no shell anywhere, user strings reaching
pods only as whole field values. Whatever the spec, `compute_status` (what the operator runs on
every pass) never raises: an invalid spec becomes a Failed/InvalidSpec status naming the field.

Operator configurations: an override file merged over the defaults by `load_operator_config`
(the real loader, a real file). Each is rejected with a message naming the file and the field, or
every platform's job renders valid objects under it.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from figures import add
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from k8scheck import containers, strings_in, validate_object
from mnv2.exitcodes import ConfigError
from mnv2_operator import api
from mnv2_operator.profiles import load_operator_config
from mnv2_operator.render import render_job
from mnv2_operator.status import compute_status
from strategies import (
    dns_label,
    dns_label_long,
    hostile,
    json_value,
    labels,
    name_like,
    wrong_type,
)

EXAMPLES, SOAK_EXAMPLES = 1000, 5000
NOW = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_CONFIG = load_operator_config(None)


def base_job(platform: str = "CPU", replicas: int = 2, name: str = "job") -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION, "kind": api.KIND,
        "metadata": {"name": name, "namespace": "team-a", "uid": "0f0e0d0c-0000-4000-8000-000000000001",
                     "generation": 1},
        "spec": {
            "platform": platform, "replicas": replicas,
            "dataset": {"volume": {"persistentVolumeClaim": {"claimName": "imagenet"}}},
            "output": {"volume": {"persistentVolumeClaim": {"claimName": "checkpoints"}}},
            "training": {"epochs": 2, "warmupEpochs": 0, "batchSize": 16},
        },
    }


abs_path = st.one_of(
    st.from_regex(r"\A(/[a-z0-9_-]{1,8}){1,4}\Z"),
    st.builds(lambda s: "/data/" + s, hostile),
    st.sampled_from(["relative/path", "/a/../b", "/a//b", "/trailing/", "/", "", "/data/$(MNV2_JOB_NAME)"]),
)
small_int = st.integers(-3, 3000)
env_var = st.fixed_dictionaries({"name": st.one_of(st.from_regex(r"\A[A-Z_][A-Z0-9_]{0,10}\Z"), hostile)},
                                optional={"value": hostile})
# (path, values): the fields a case may replace, with what it replaces them by.
MUTATIONS: list[tuple[tuple[str, ...], st.SearchStrategy]] = [
    (("metadata", "name"), st.one_of(dns_label, dns_label_long, name_like)),
    (("spec", "platform"), st.one_of(st.sampled_from(["CPU", "GPU", "Ascend", "cpu", "TPU"]), wrong_type)),
    (("spec", "replicas"), st.one_of(small_int, wrong_type)),
    (("spec", "devicesPerReplica"), st.one_of(st.integers(-1, 70), wrong_type)),
    (("spec", "image"), st.one_of(st.just("registry.example/mnv2:1"), hostile)),
    (("spec", "mode"), st.sampled_from(["train", "finetune", "eval", "predict", ""])),
    (("spec", "freezeLayer"), st.sampled_from(["none", "backbone", "all"])),
    (("spec", "pretrainedCheckpoint"), abs_path),
    (("spec", "training", "batchSize"), st.one_of(small_int, wrong_type)),
    (("spec", "training", "epochs"), st.one_of(small_int, wrong_type)),
    (("spec", "training", "lrMax"), st.one_of(st.floats(-1, 200, allow_nan=False), wrong_type)),
    (("spec", "training", "widthMult"), st.one_of(st.floats(-1, 5, allow_nan=False), wrong_type)),
    (("spec", "training", "imageSize"), st.one_of(small_int, wrong_type)),
    (("spec", "training", "onCorruptImage"), st.sampled_from(["error", "skip", "ignore"])),
    (("spec", "training", "outputDir"), abs_path),
    (("spec", "training", "bogusSetting"), wrong_type),
    (("spec", "dataset", "mountPath"), abs_path),
    (("spec", "dataset", "trainPath"), abs_path),
    (("spec", "dataset", "evalPath"), abs_path),
    (("spec", "dataset", "volume"), st.one_of(
        st.just({"hostPath": {"path": "/srv/imagenet"}}), st.just({"nfs": {"server": "nfs", "path": "/x"}}),
        st.just({}), st.just({"emptyDir": {}, "hostPath": {"path": "/x"}}),
        st.builds(lambda c: {"persistentVolumeClaim": {"claimName": c}}, name_like))),
    (("spec", "output", "path"), abs_path),
    (("spec", "runPolicy", "backoffLimit"), st.one_of(small_int, wrong_type)),
    (("spec", "runPolicy", "activeDeadlineSeconds"), st.one_of(small_int, wrong_type)),
    (("spec", "runPolicy", "ttlSecondsAfterFinished"), st.one_of(small_int, wrong_type)),
    (("spec", "runPolicy", "cleanPodPolicy"), st.sampled_from(["All", "Running", "None", "Some"])),
    (("spec", "runPolicy", "restartPolicy"), st.sampled_from(["Never", "OnFailure", "ExitCode", "Always"])),
    (("spec", "runPolicy", "pendingTimeoutSeconds"), st.one_of(small_int, wrong_type)),
    (("spec", "scheduling", "schedulerName"), st.one_of(st.just(""), name_like)),
    (("spec", "scheduling", "queue"), st.one_of(st.just(""), name_like)),
    (("spec", "scheduling", "priorityClassName"), st.one_of(st.just(""), name_like)),
    (("spec", "scheduling", "gang"), st.one_of(st.booleans(), wrong_type)),
    (("spec", "scheduling", "gangScheduler"), st.sampled_from(["volcano", "kueue", "yunikorn"])),
    (("spec", "template", "nodeSelector"), labels),
    (("spec", "template", "labels"), labels),
    (("spec", "template", "annotations"), st.dictionaries(dns_label, hostile, max_size=3)),
    (("spec", "template", "env"), st.lists(env_var, max_size=3)),
    (("spec", "template", "resources"), st.fixed_dictionaries({}, optional={
        "limits": st.dictionaries(st.sampled_from(["cpu", "memory", "nvidia.com/gpu"]),
                                  st.one_of(st.sampled_from(["1", "500m", "2Gi"]), st.integers(0, 4),
                                            hostile),
                                  max_size=2)})),
    (("spec", "template", "volumeMounts"), st.lists(st.fixed_dictionaries(
        {"name": name_like, "mountPath": abs_path}), max_size=2)),
    (("spec", "metrics", "port"), st.one_of(st.integers(0, 70000), wrong_type)),
    (("spec", "unknownField"), json_value),
]


def set_path(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = obj
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


@st.composite
def job_case(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[str, ...]]]:
    job = base_job(draw(st.sampled_from(["CPU", "GPU", "Ascend"])), draw(st.integers(1, 4)))
    if draw(st.integers(0, 4)) == 0:
        return job, []  # a valid job as it is
    chosen = draw(st.lists(st.sampled_from(range(len(MUTATIONS))), min_size=1, max_size=3, unique=True))
    paths = []
    for i in chosen:
        path, values = MUTATIONS[i]
        set_path(job, path, draw(values))
        paths.append(path)
    return job, paths


def _related(problem_path: str, mutated: list[tuple[str, ...]], message: str) -> bool:
    """The problem is at (or above, or below) a changed field, or its message names one
    (a cross-field rule such as `lrEnd: must not exceed lr_max` after lrMax changed)."""
    for path in mutated:
        dotted = ".".join(path)
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", path[-1]).lower()
        if problem_path.startswith(dotted) or dotted.startswith(problem_path) or path[-1] in message \
                or snake in message:
            return True
    return False


def check_job(job: dict[str, Any], mutated: list[tuple[str, ...]], stats: Counter) -> None:
    stats["examples"] += 1
    original = copy.deepcopy(job)
    status = compute_status(copy.deepcopy(job), [], NOW)  # what the operator runs: must never raise
    try:
        api.parse_job(job)
    except api.SpecError as error:
        stats["rejected"] += 1
        assert error.problems, "a SpecError without problems"
        for path, message in error.problems:
            assert path and message, f"a problem without a field path or message: {error.problems}"
        if len(mutated) == 1:
            assert any(_related(p, mutated, m) for p, m in error.problems), (
                f"changed {'.'.join(mutated[0])}, but the problems name other fields: {error.problems}"
            )
        assert status["state"] == "Failed" and status["reason"] == "InvalidSpec", status
        assert any(path in status["message"] for path, _ in error.problems), status["message"]
        return
    assert status.get("state") != "Failed" or status.get("reason") != "InvalidSpec", status
    objects = render_job(job, DEFAULT_CONFIG)
    stats["rendered"] += 1
    user_strings = [*strings_in(original["spec"]), original["metadata"]["name"]]
    problems: list[str] = []
    for obj in objects:
        stats["objects"] += 1
        problems += validate_object(obj, user_strings)
    # User environment variables arrive byte for byte, as values (never concatenated into a command).
    wanted = {e["name"]: e.get("value") for e in ((original["spec"].get("template") or {}).get("env") or [])}
    for obj in objects:
        for container in containers(obj):
            got = {e["name"]: e.get("value") for e in container.get("env") or []}
            for name, value in wanted.items():
                if got.get(name) != value:
                    problems.append(f"{obj['kind']}: env {name!r} is {got.get(name)!r}, not {value!r}")
            # What the trainer sees: kubelet reduces the renderer's `$$` escapes to `$`.
            config = json.loads(got["MNV2_TRAINING_CONFIG"].replace("$$", "$"))
            dataset = original["spec"].get("dataset") or {}
            if "trainPath" in dataset and config["dataset_path"] != dataset["trainPath"]:
                problems.append(f"dataset_path {config['dataset_path']!r} != {dataset['trainPath']!r}")
    assert not problems, "\n".join(problems[:10])


def test_job_spec_fuzz(soak: bool) -> None:
    stats: Counter[str] = Counter()
    examples = SOAK_EXAMPLES if soak else EXAMPLES

    @settings(max_examples=examples, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(case=job_case())
    def check(case: tuple[dict[str, Any], list[tuple[str, ...]]]) -> None:
        check_job(case[0], case[1], stats)

    try:
        check()
    finally:
        add("fuzz-jobs", **stats)
    assert stats["examples"] >= examples
    assert stats["rendered"] > examples // 10 and stats["rejected"] > examples // 10, stats


# --- operator configurations ------------------------------------------------------------------

label_name = st.from_regex(r"\A[A-Za-z0-9]([-A-Za-z0-9_.]{0,15}[A-Za-z0-9])?\Z")
good_labels = st.dictionaries(label_name, st.one_of(st.just(""), label_name), max_size=3)
good_env_var = st.fixed_dictionaries({"name": st.from_regex(r"\A[A-Z_][A-Z0-9_]{0,10}\Z")},
                                     optional={"value": hostile})
good_quantity = st.one_of(st.sampled_from(["1", "2Gi", "100m", "512Mi"]), st.integers(1, 8))


@st.composite
def good_profile(draw: st.DrawFn) -> dict[str, Any]:
    """A profile override a cluster admin could write (the platform's device resource kept)."""
    most = draw(st.integers(1, 64))
    # The two device counts go together: a max alone could fall below the default's default.
    devices = {"defaultDevicesPerReplica": draw(st.integers(1, most)), "maxDevicesPerReplica": most} \
        if draw(st.booleans()) else {}
    return devices | draw(st.fixed_dictionaries({}, optional={
        "image": st.one_of(st.just("registry.example/trainer:2"), hostile.filter(bool)),
        "imagePullPolicy": st.sampled_from(["Always", "IfNotPresent", "Never"]),
        "nodeSelector": good_labels,
        "runtimeClassName": st.one_of(st.none(), dns_label),
        "requests": st.dictionaries(st.sampled_from(["cpu", "memory"]), good_quantity, max_size=2),
        "shmSize": st.sampled_from(["1Gi", "64Mi"]),
        "env": st.lists(good_env_var, max_size=2),
        "security": st.fixed_dictionaries({}, optional={
            "runAsNonRoot": st.booleans(), "runAsUser": st.one_of(st.none(), st.integers(1, 70000)),
            "allowPrivilegeEscalation": st.booleans(),
            "addCapabilities": st.lists(st.sampled_from(["NET_ADMIN", "SYS_PTRACE"]), max_size=2),
            "seccompProfile": st.sampled_from(["RuntimeDefault", "Unconfined"]),
        }),
    }))


good_override = st.fixed_dictionaries({}, optional={
    "namespaces": st.lists(dns_label, max_size=2),
    "clusterDomain": st.sampled_from(["", "cluster.local"]),
    "gangScheduler": st.sampled_from(["volcano", "kueue"]),
    "schedulerPort": st.integers(1024, 65535),
    "rankTableTimeoutSeconds": st.integers(1, 10000),
    "terminationGracePeriodSeconds": st.integers(0, 10000),
    "profiles": st.dictionaries(st.sampled_from(["CPU", "GPU", "Ascend"]), good_profile(), max_size=2),
})
CONFIG_MUTATIONS = [
    ("namespaces",), ("clusterDomain",), ("gangScheduler",), ("schedulerPort",), ("rankTableTimeoutSeconds",),
    ("terminationGracePeriodSeconds",), ("profiles",), ("typoKey",), ("profiles", "TPU"),
    ("profiles", "CPU", "image"), ("profiles", "GPU", "imagePullPolicy"),
    ("profiles", "Ascend", "launchMode"),
    ("profiles", "CPU", "defaultDevicesPerReplica"), ("profiles", "GPU", "maxDevicesPerReplica"),
    ("profiles", "CPU", "requests"), ("profiles", "GPU", "shmSize"), ("profiles", "Ascend", "env"),
    ("profiles", "CPU", "security", "runAsUser"), ("profiles", "GPU", "security", "seccompProfile"),
    ("profiles", "CPU", "unknownKey"),
]


@st.composite
def config_case(draw: st.DrawFn) -> tuple[dict[str, Any], tuple[str, ...] | None]:
    override = draw(good_override)
    if draw(st.booleans()):
        return override, None
    path = draw(st.sampled_from(CONFIG_MUTATIONS))
    override = copy.deepcopy(override)
    set_path(override, path, draw(st.one_of(wrong_type, hostile, st.integers(-(2**33), 2**33),
                                            st.sampled_from(["Sometimes", "mpi", "-1", "1 Gi"]))))
    return override, path


def check_config(override: dict[str, Any], broken: tuple[str, ...] | None, folder: Path,
                 stats: Counter) -> None:
    stats["examples"] += 1
    path = folder / f"operator-{stats['examples']}.yaml"
    path.write_text(yaml.safe_dump(override))
    try:
        config = load_operator_config(path)
    except ConfigError as error:
        stats["rejected"] += 1
        text = str(error)
        for line in text.splitlines():
            assert line.startswith(f"{path}: "), f"a problem that does not name the file: {line}"
            where = line.removeprefix(f"{path}: ").split(":", 1)[0]
            assert where and where.split(".")[0] in override, line
            if broken is not None:  # the one broken field is what the message names
                assert where.startswith(".".join(broken[:2])) or broken[-1] in line, (broken, line)
        if broken is None:
            stats["rejected_unbroken"] += 1
        return
    stats["accepted"] += 1
    user_strings = list(strings_in(override))
    for platform in ("CPU", "GPU", "Ascend"):
        job = base_job(platform, 2)
        try:
            api.parse_job(job)
        except api.SpecError as error:  # e.g. a profile whose device limits no job can meet
            stats["job_rejected_by_profile"] += 1
            assert all(p and m for p, m in error.problems), error.problems
            continue
        problems = []
        for obj in render_job(job, config):
            stats["objects"] += 1
            problems += validate_object(obj, user_strings)
        assert not problems, "\n".join(problems[:10])
        stats["rendered"] += 1


def test_operator_config_fuzz(soak: bool, tmp_path: Path) -> None:
    stats: Counter[str] = Counter()
    examples = SOAK_EXAMPLES if soak else EXAMPLES

    @settings(max_examples=examples, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(case=config_case())
    # Found by this fuzzer in CI (issue 12): a profile key that is a control character str.splitlines()
    # breaks on; the error message must still name the file on every line.
    @example(case=({"profiles": {"\x1e": 0}}, ("profiles",)))
    def check(case: tuple[dict[str, Any], tuple[str, ...] | None]) -> None:
        check_config(case[0], case[1], tmp_path, stats)

    try:
        check()
    finally:
        add("fuzz-operator-config", **stats)
    assert stats["examples"] >= examples
    assert stats["accepted"] > examples // 10 and stats["rejected"] > examples // 10, stats


def test_ci_runs_are_derandomized(soak: bool) -> None:
    """CI draws the same examples on every run (tests/conftest.py's `ci` profile), so its result
    depends only on the code; random exploration is the soak mode's."""
    from hypothesis import settings as current

    if soak or os.environ.get("HYPOTHESIS_PROFILE"):
        pytest.skip("soak mode or an explicit profile: random exploration is intended")
    assert current.default.derandomize is True and current.default.database is None


def test_operator_env_values_escape_kubelet_expansion() -> None:
    job = base_job("CPU", 1)
    job["spec"]["dataset"]["trainPath"] = "/data/$(MNV2_JOB_NAME)"
    api.parse_job(job)
    pod = next(o for o in render_job(job, DEFAULT_CONFIG) if o["kind"] == "Pod")
    for env in pod["spec"]["containers"][0]["env"]:
        value = env.get("value") or ""
        if env["name"].startswith("MNV2_"):
            assert "$(" not in value.replace("$$(", ""), f"{env['name']} would be expanded: {value[:120]}"


@pytest.mark.parametrize("platform", [[], {"name": "CPU"}])
def test_non_string_platform_is_a_spec_error(platform: Any) -> None:
    """Found by this fuzzer (a TypeError in validation._check_devices), fixed; kept as a regression."""
    job = base_job("CPU", 1)
    job["spec"]["platform"] = platform
    with pytest.raises(api.SpecError) as error:
        api.parse_job(job)
    assert any(path == "spec.platform" for path, _ in error.value.problems)
