"""Every example manifest is a valid job and renders objects a Kubernetes 1.37 API server accepts.

The examples are the documentation users copy from, so each is checked for what it claims to show
(the seed's Ascend recipe, head-only fine-tuning, Kueue labels, a Volcano PodGroup, ...), against the
packaged operator defaults and against examples/operator-config.yaml.
"""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CONFIGS = {"operator-config.yaml", "policy-single-node.yaml"}  # operator configurations, not jobs
JOBS = sorted(p for p in EXAMPLES.glob("*.yaml") if p.name not in CONFIGS)
KUBE_VERSION = "1.37"
EXPECTED = {
    "cpu-quickstart.yaml",
    "ascend-2x8-train.yaml",
    "gpu-finetune.yaml",
    "cpu-head-only.yaml",
    "eval.yaml",
    "kueue-queued.yaml",
    "volcano-gang.yaml",
}

api = pytest.importorskip("mnv2_operator.api", reason="mnv2_operator.api (API helper) not written yet")
profiles = pytest.importorskip("mnv2_operator.profiles", reason="mnv2_operator.profiles not written yet")
render = pytest.importorskip("mnv2_operator.render", reason="mnv2_operator.render not written yet")


def _job(name: str):
    return api.parse_job(api.load_job_file(EXAMPLES / name))


def _objects(name: str, config_path: Path | None = None) -> list[dict]:
    config = profiles.load_operator_config(config_path)
    return render.render_job(api.load_job_file(EXAMPLES / name), config)


def _pods(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] == "Pod"]


def test_every_documented_example_exists():
    assert {p.name for p in JOBS} == EXPECTED


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_example_is_a_valid_job(path: Path):
    job = api.parse_job(api.load_job_file(path))
    assert job.metadata.name
    api.effective_training_config(job)  # the trainer would accept its configuration too


@pytest.mark.parametrize(
    "config", [None, EXAMPLES / "operator-config.yaml"], ids=["defaults", "operator-config"]
)
@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_rendered_objects_pass_strict_validation(path: Path, config: Path | None):
    objects = _objects(path.name, config)
    assert _pods(objects), "a job renders at least one pod"
    for obj in objects:
        if obj["apiVersion"].startswith("scheduling.volcano.sh/"):
            assert obj["kind"] == "PodGroup" and obj["spec"]["minMember"] >= 1  # no upstream schema
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{path.name}: {obj['kind']}/{obj['metadata']['name']}: {error}")


def test_operator_config_example_loads_and_sets_images():
    config = profiles.load_operator_config(EXAMPLES / "operator-config.yaml")
    for platform in ("CPU", "GPU", "Ascend"):
        assert config.profile(platform).image.startswith("registry.example.internal/mnv2/")
    images = {
        p["spec"]["containers"][0]["image"]
        for p in _pods(_objects("volcano-gang.yaml", EXAMPLES / "operator-config.yaml"))
    }
    assert images == {"registry.example.internal/mnv2/mnv2-trainer-gpu:0.1.0"}


def test_quickstart_is_the_small_cpu_job_the_readme_runs():
    job = _job("cpu-quickstart.yaml")
    spec = job.spec
    assert (spec.platform.value, spec.replicas, spec.devices_per_replica) == ("CPU", 2, 1)
    assert spec.mode.value == "train"
    assert spec.dataset.volume.host_path.path == "/tmp/mnv2-quickstart/data"
    assert spec.output.volume.host_path.path == "/tmp/mnv2-quickstart/output"
    assert (spec.dataset.train_path, spec.dataset.eval_path) == ("/data/train", "/data/val")
    config = api.effective_training_config(job)
    assert (config.image_size, config.width_mult, config.num_classes, config.batch_size) == (32, 0.35, 10, 32)
    pods = _pods(_objects("cpu-quickstart.yaml"))
    assert [p["metadata"]["name"] for p in pods] == ["cpu-quickstart-0", "cpu-quickstart-1"]
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        assert container["command"] == ["mnv2", "launch"]
        assert not any(
            "nvidia.com" in key or "huawei.com" in key
            for key in container.get("resources", {}).get("limits", {})
        )


def test_ascend_example_is_the_seed_recipe():
    from mnv2.config import PRESETS, Platform

    job = _job("ascend-2x8-train.yaml")
    assert (job.spec.replicas, job.spec.devices_per_replica) == (2, 8)
    config = api.effective_training_config(job)
    for key, value in PRESETS[Platform.ASCEND].items():
        assert getattr(config, key) == value, f"{key}: {getattr(config, key)} != seed's {value}"
    assert (config.num_classes, config.image_size, config.width_mult) == (1000, 224, 1.0)
    assert (config.momentum, config.weight_decay, config.label_smoothing) == (0.9, 4e-5, 0.1)
    objects = _objects("ascend-2x8-train.yaml")
    kinds = [o["kind"] for o in objects]
    assert "ConfigMap" in kinds, "the rank-table ConfigMap"
    for pod in _pods(objects):
        limits = pod["spec"]["containers"][0]["resources"]["limits"]
        assert str(limits["huawei.com/Ascend910"]) == "8"


def test_gpu_finetune_trains_the_whole_network_from_a_checkpoint():
    job = _job("gpu-finetune.yaml")
    assert (job.spec.mode.value, job.spec.freeze_layer.value) == ("finetune", "none")
    config = api.effective_training_config(job)
    assert config.pretrain_ckpt == "/pretrained/mobilenetv2_imagenet.ckpt"
    (pod,) = _pods(_objects("gpu-finetune.yaml"))
    container = pod["spec"]["containers"][0]
    assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "4"
    assert any(m["mountPath"] == "/pretrained" for m in container["volumeMounts"])


def test_cpu_head_only_freezes_the_backbone():
    config = api.effective_training_config(_job("cpu-head-only.yaml"))
    assert (config.platform.value, config.freeze_layer.value) == ("CPU", "backbone")
    assert config.pretrain_ckpt


def test_eval_example_evaluates_a_checkpoint():
    job = _job("eval.yaml")
    assert job.spec.mode.value == "eval"
    assert job.spec.pretrained_checkpoint.startswith(job.spec.output.path + "/")


def test_kueue_example_carries_kueue_pod_group_labels():
    pods = _pods(_objects("kueue-queued.yaml"))
    assert len(pods) == 2
    for pod in pods:
        labels, annotations = pod["metadata"]["labels"], pod["metadata"]["annotations"]
        assert labels["kueue.x-k8s.io/queue-name"] == "team-gpu"
        assert labels["kueue.x-k8s.io/pod-group-name"] == "mobilenetv2-queued"
        assert annotations["kueue.x-k8s.io/pod-group-total-count"] == "2"


def test_volcano_example_gang_schedules_every_replica():
    objects = _objects("volcano-gang.yaml")
    (group,) = [o for o in objects if o["kind"] == "PodGroup"]
    assert group["spec"]["minMember"] == 4 and group["spec"]["queue"] == "research"
    pods = _pods(objects)
    assert len(pods) == 4
    for pod in pods:
        assert pod["spec"]["schedulerName"] == "volcano"
        assert pod["metadata"]["annotations"]["scheduling.k8s.io/group-name"] == group["metadata"]["name"]


def test_examples_pass_the_default_policy_and_the_quickstart_its_single_node_one():
    """Issue 13: every example validates under the default policy, except the quickstart, whose
    hostPath folders need the policy a single-node cluster's administrator sets (stated in it)."""
    from mnv2_operator import policy

    default = profiles.load_operator_config(None)
    single_node = profiles.load_operator_config(EXAMPLES / "policy-single-node.yaml")
    for path in JOBS:
        job = api.load_job_file(path)
        if path.name == "cpu-quickstart.yaml":
            refused = {rule for _, _, rule in policy.rule_violations(job, default)}
            assert refused == {"volumeType", "nodeLocalOutput"}, refused
            assert policy.violations(job, single_node) == []
        else:
            assert policy.violations(job, default) == [], path.name
    assert policy.violations(
        api.load_job_file(EXAMPLES / "cpu-quickstart.yaml"),
        profiles.load_operator_config(EXAMPLES / "operator-config.yaml"),
    )


def test_a_broken_example_is_reported_with_field_paths(tmp_path: Path):
    """The check above is only worth something if parse_job rejects bad manifests naming the field."""
    text = (EXAMPLES / "cpu-quickstart.yaml").read_text().replace("replicas: 2", "replicas: 0")
    broken = tmp_path / "broken.yaml"
    broken.write_text(text)
    with pytest.raises(api.SpecError) as caught:
        api.parse_job(api.load_job_file(broken))
    assert any(path == "spec.replicas" for path, _ in caught.value.problems)


def _restricted_problems():
    """The Pod Security "restricted" check shared with tests/chart (loaded by path: no package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("chartlib_psa", ROOT / "tests" / "chart" / "chartlib.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.restricted_problems


# What keeps each example from the restricted profile: only what its user chose (hostPath, NFS)
# or the Ascend profile's documented exception (driver hostPaths, root).
EXPECTED_EXCEPTIONS = {
    "cpu-quickstart.yaml": {"volume dataset uses {'hostPath'}", "volume output uses {'hostPath'}"},
    "volcano-gang.yaml": {"volume dataset uses {'nfs'}"},
    "ascend-2x8-train.yaml": {
        "volume ascend-driver uses {'hostPath'}",
        "volume ascend-dcmi uses {'hostPath'}",
        "trainer: runAsNonRoot must be true",
    },
}


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_trainer_pods_are_restricted_wherever_the_platform_allows(path: Path):
    check = _restricted_problems()
    for pod in _pods(_objects(path.name)):
        assert set(check(pod["spec"])) == EXPECTED_EXCEPTIONS.get(path.name, set()), pod["metadata"]["name"]
