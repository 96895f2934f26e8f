"""Rendering: every object for every platform x mode passes `kubernetes-validate --strict` (1.37),
and the pods carry what the launcher, Prometheus, the schedulers and the rank table rely on."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
from api_builders import KUBE_VERSION, MODES, PLATFORMS, ascend_pod, make_job
from mnv2 import launchenv
from mnv2.config import TrainingConfig
from mnv2_operator import names
from mnv2_operator.api import SpecError
from mnv2_operator.profiles import load_operator_config
from mnv2_operator.render import render_job, render_pod, render_rank_table_configmap

# Kinds with no upstream schema in kubernetes-validate: Volcano's PodGroup is a CRD-defined object.
NO_UPSTREAM_SCHEMA = {"PodGroup"}


def _by_kind(objects: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for obj in objects:
        out.setdefault(obj["kind"], []).append(obj)
    return out


def _env(pod: dict) -> dict[str, dict]:
    return {item["name"]: item for item in pod["spec"]["containers"][0]["env"]}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("gang", ["volcano", "kueue", "off"])
def test_every_rendered_object_passes_strict_validation(platform, mode, gang, config):
    scheduling = {"gang": gang != "off"}
    if gang != "off":
        scheduling.update(gangScheduler=gang, queue="research")
    job = make_job(
        platform,
        mode,
        scheduling=scheduling,
        template={
            "nodeSelector": {"topology.kubernetes.io/zone": "zone-a"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
            "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": 8589934592}},
            "env": [
                {"name": "TZ", "value": "UTC"},
                {"name": "WANDB_KEY", "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "key"}}},
            ],
            "volumes": [{"name": "cache", "emptyDir": {"sizeLimit": "10Gi"}}],
            "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
            "annotations": {"team": "vision"},
            "labels": {"team": "vision"},
        },
    )
    objects = render_job(job, config)
    kinds = _by_kind(objects)
    assert len(kinds["Pod"]) == 2 and len(kinds["Service"]) == 1
    assert ("ConfigMap" in kinds) == (platform == "Ascend")
    assert ("PodGroup" in kinds) == (gang == "volcano")
    for obj in objects:
        if obj["kind"] in NO_UPSTREAM_SCHEMA:
            continue
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_podgroup_has_the_volcano_shape(config):
    objects = render_job(
        make_job("GPU", replicas=4, devices=2, scheduling={"queue": "research", "priorityClassName": "high"}),
        config,
    )
    podgroup = objects[0]
    assert podgroup["apiVersion"] == "scheduling.volcano.sh/v1beta1" and podgroup["kind"] == "PodGroup"
    assert podgroup["metadata"]["name"] == "demo"
    assert podgroup["spec"] == {
        "minMember": 4,
        "queue": "research",
        "priorityClassName": "high",
        "minResources": {"nvidia.com/gpu": "8"},
    }
    for pod in objects[2:]:
        assert pod["metadata"]["annotations"]["scheduling.k8s.io/group-name"] == "demo"
        assert pod["spec"]["schedulerName"] == "volcano"
        assert pod["spec"]["priorityClassName"] == "high"


def test_kueue_gang_labels_and_no_podgroup(config):
    job = make_job("GPU", replicas=3, scheduling={"gangScheduler": "kueue", "queue": "team-a"})
    objects = render_job(job, config)
    assert [o["kind"] for o in objects] == ["Service", "Pod", "Pod", "Pod"]
    for pod in objects[1:]:
        labels, annotations = pod["metadata"]["labels"], pod["metadata"]["annotations"]
        assert labels["kueue.x-k8s.io/queue-name"] == "team-a"
        assert labels["kueue.x-k8s.io/pod-group-name"] == "demo"
        assert annotations["kueue.x-k8s.io/pod-group-total-count"] == "3"
        assert "schedulerName" not in pod["spec"]


def test_no_gang_means_default_scheduler_and_no_group(config):
    objects = render_job(make_job("CPU", scheduling={"gang": False}), config)
    for pod in objects[1:]:
        assert "schedulerName" not in pod["spec"]
        assert "scheduling.k8s.io/group-name" not in pod["metadata"]["annotations"]


def test_operator_config_picks_the_default_gang_scheduler(tmp_path):
    path = tmp_path / "operator.yaml"
    path.write_text("gangScheduler: kueue\n")
    objects = render_job(make_job("CPU", scheduling={"queue": "q"}), load_operator_config(path))
    assert "PodGroup" not in {o["kind"] for o in objects}
    assert objects[1]["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "q"


def test_headless_service_selects_on_the_job_name_only(config):
    job = make_job("CPU", template={"labels": {"team": "vision"}})
    service = render_job(job, config)[1]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"training.mindspore.io/job-name": "demo"}
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"metrics": 9090, "scheduler": 8118}


def test_pod_identity_dns_and_labels(config):
    job = make_job("GPU", replicas=3, devices=4, template={"labels": {"team": "vision"}})
    pod = render_pod(job, config, 2)
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["name"] == "demo-2" and meta["namespace"] == "ml"
    assert spec["hostname"] == "demo-2" and spec["subdomain"] == "demo"
    assert meta["labels"] == {
        "team": "vision",
        "app.kubernetes.io/name": "mobilenetv2-trainjob",
        "app.kubernetes.io/instance": "demo",
        "app.kubernetes.io/managed-by": "mnv2-operator",
        "training.mindspore.io/job-name": "demo",
        "training.mindspore.io/replica-index": "2",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "training.mindspore.io/v1alpha1",
            "kind": "MobileNetV2TrainJob",
            "name": "demo",
            "uid": "0b5e3c52-5f2c-4c1e-9d44-3f0d3a6f0a11",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert spec["restartPolicy"] == "Never"
    container = spec["containers"][0]
    assert container["name"] == "trainer" and container["command"] == ["mnv2", "launch"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert [p["containerPort"] for p in container["ports"]] == [
        9090,
        9091,
        9092,
        9093,
    ]  # replica 2: no scheduler
    assert meta["annotations"]["prometheus.io/scrape"] == "true"
    assert meta["annotations"]["prometheus.io/port"] == "9090"
    with pytest.raises(ValueError, match=r"replica index 3 outside 0\.\.2"):
        render_pod(job, config, 3)


def test_no_owner_reference_without_a_uid(config):
    for obj in render_job(make_job("CPU", uid=None), config):
        assert "ownerReferences" not in obj["metadata"]


def test_launch_environment_golden(config):
    pod = render_pod(make_job("CPU", "finetune", replicas=2, devices=2), config, 1)
    env = _env(pod)
    plain = {k: v["value"] for k, v in env.items() if "value" in v and k != launchenv.TRAINING_CONFIG}
    assert plain == {
        "MNV2_JOB_NAME": "demo",
        "MNV2_COMMAND": "train",
        "MNV2_PLATFORM": "CPU",
        "MNV2_LAUNCH_MODE": "dynamic",
        "MNV2_REPLICAS": "2",
        "MNV2_REPLICA_INDEX": "1",
        "MNV2_DEVICES_PER_REPLICA": "2",
        "MNV2_SCHEDULER_HOST": "demo-0.demo.ml.svc",
        "MNV2_SCHEDULER_PORT": "8118",
        "MNV2_METRICS_PORT": "9090",
        "MNV2_STOP_GRACE_SECONDS": "110",  # terminationGracePeriodSeconds 120 - 10
        "MNV2_KERNEL_CACHE": "/var/cache/mnv2",  # the kernel-cache emptyDir (issue 14)
        # Kubernetes' default terminationMessagePath: rank 0's artifacts reach the pod's status
        "MNV2_TERMINATION_MESSAGE_PATH": "/dev/termination-log",
    }
    container = pod["spec"]["containers"][0]
    assert container["terminationMessagePath"] == env["MNV2_TERMINATION_MESSAGE_PATH"]["value"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert env["MNV2_POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["MNV2_POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    # The pod's CPU limit in millicores, through the downward API (issue 14, "Threads").
    assert env[launchenv.CPU_LIMIT_MILLICORES]["valueFrom"] == {
        "resourceFieldRef": {"containerName": "trainer", "resource": "limits.cpu", "divisor": "1m"}
    }
    training = json.loads(env[launchenv.TRAINING_CONFIG]["value"])
    assert training == {
        "platform": "CPU",
        "dataset_path": "/data/train",
        "eval_dataset_path": "/data/val",
        "pretrain_ckpt": "/data/ckpt/mobilenetv2.ckpt",
        "freeze_layer": "none",
        "num_classes": 10,
        "image_size": 64,
        "width_mult": 0.35,
        "batch_size": 32,
        "epochs": 5,
        "warmup_epochs": 0,
        "lr_init": 0.03,
        "lr_max": 0.03,
        "lr_end": 0.03,
        "momentum": 0.9,
        "weight_decay": 4e-05,
        "label_smoothing": 0.1,
        "min_crop_scale": 0.08,
        "horizontal_flip": True,
        "amp_level": "O0",
        "loss_scale": 1.0,
        "dynamic_loss_scale": False,
        "save_checkpoint": True,
        "save_checkpoint_epochs": 1,
        "keep_checkpoint_max": 20,
        "output_dir": "/output",
        "resume": True,
        "seed": 1,
        "num_workers": 2,
        "on_corrupt_image": "error",
        "fast_depthwise": True,
        "bf16_pointwise": False,
        "eval_interval": 0,
        "keep_best": False,
        "export_formats": ["MINDIR"],  # spec.output.export's default (issue 17)
        "metrics_port": 9090,
    }
    assert TrainingConfig.model_validate(training).pretrain_ckpt == "/data/ckpt/mobilenetv2.ckpt"


@pytest.mark.parametrize(
    "mode, command, dataset, freeze, resume",
    [
        ("train", "train", "/data/train", "none", True),
        ("finetune", "train", "/data/train", "none", True),
        ("head-only", "train", "/data/train", "backbone", True),
        ("eval", "eval", "/data/val", "none", False),
    ],
)
def test_mode_maps_to_command_and_trainer_fields(mode, command, dataset, freeze, resume, config):
    env = _env(render_pod(make_job("GPU", mode), config, 0))
    training = json.loads(env[launchenv.TRAINING_CONFIG]["value"])
    assert env[launchenv.COMMAND]["value"] == command
    assert (training["dataset_path"], training["freeze_layer"], training["resume"]) == (
        dataset,
        freeze,
        resume,
    )
    assert training["pretrain_ckpt"] == ("" if mode == "train" else "/data/ckpt/mobilenetv2.ckpt")


def test_ascend_rank_table_mode(config):
    objects = render_job(make_job("Ascend", replicas=2), config)
    configmap = objects[2]
    assert configmap["kind"] == "ConfigMap" and configmap["metadata"]["name"] == "demo-ranktable"
    assert json.loads(configmap["data"]["hccl.json"]) == {"status": "initializing"}
    pod = objects[3]
    env = _env(pod)
    assert env["MNV2_LAUNCH_MODE"]["value"] == "ranktable"
    assert env["MNV2_RANK_TABLE_FILE"]["value"] == "/etc/mnv2/ranktable/hccl.json"
    assert env["MNV2_DEVICES_PER_REPLICA"]["value"] == "8"  # the Ascend profile's default
    mounts = {m["name"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["ranktable"] == {"name": "ranktable", "mountPath": "/etc/mnv2/ranktable", "readOnly": True}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["ranktable"]["configMap"]["name"] == "demo-ranktable"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["huawei.com/Ascend910"] == 8
    assert "scheduler" not in {p["name"] for p in pod["spec"]["containers"][0]["ports"]}


def test_rank_table_configmap_from_observed_pods(config):
    job = make_job("Ascend", replicas=2)
    pods = [ascend_pod("demo", 1), ascend_pod("other", 0), ascend_pod("demo", 0)]
    configmap = render_rank_table_configmap(job, pods, config)
    table = json.loads(configmap["data"]["hccl.json"])
    assert table["status"] == "completed" and table["server_count"] == "2"
    assert [s["container_ip"] for s in table["server_list"]] == ["172.16.0.2", "172.16.0.3"]
    assert render_rank_table_configmap(job, pods[:2], config)["data"]["hccl.json"] == json.dumps(
        {"status": "initializing"}, indent=2
    )
    kubernetes_validate.validate(configmap, KUBE_VERSION, strict=True)


def test_volumes_pass_through_and_mount(config):
    job = make_job(
        "CPU",
        dataset={
            "volume": {"hostPath": {"path": "/mnt/data", "type": "Directory"}},
            "mountPath": "/datasets",
            "trainPath": "/datasets/train",
            "evalPath": "",
        },
    )
    pod = render_pod(job, config, 0)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["dataset"] == {"name": "dataset", "hostPath": {"path": "/mnt/data", "type": "Directory"}}
    assert volumes["output"] == {
        "name": "output",
        "nfs": {"server": "nfs.example.internal", "path": "/exports/mnv2"},
    }
    assert volumes["dshm"] == {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}
    # Writable space for the C++ kernels' build cache under a read-only root filesystem (issue 14).
    assert volumes["mnv2-kernel-cache"] == {"name": "mnv2-kernel-cache", "emptyDir": {"sizeLimit": "512Mi"}}
    mounts = {m["name"]: m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts == {
        "dataset": "/datasets",
        "output": "/output",
        "dshm": "/dev/shm",
        "mnv2-kernel-cache": "/var/cache/mnv2",
    }


def test_kernel_cache_volume_name_and_mount_path_are_the_operators(config):
    job = make_job(
        "CPU",
        template={
            "volumes": [{"name": "mnv2-kernel-cache", "emptyDir": {}}, {"name": "cache", "emptyDir": {}}],
            "volumeMounts": [{"name": "cache", "mountPath": "/var/cache/mnv2/x"}],
        },
    )
    with pytest.raises(SpecError) as caught:
        render_pod(job, config, 0)
    fields = {path for path, _ in caught.value.problems}
    assert {"spec.template.volumes[0].name", "spec.template.volumeMounts[0].mountPath"} <= fields


def test_restricted_security_context_except_where_ascend_needs_root(config):
    for platform in ("CPU", "GPU"):
        spec = render_pod(make_job(platform), config, 0)["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 10001
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        container = spec["containers"][0]["securityContext"]
        assert container["allowPrivilegeEscalation"] is False
        assert container["capabilities"] == {"drop": ["ALL"]}
    ascend = render_pod(make_job("Ascend"), config, 0)["spec"]
    assert ascend["securityContext"]["runAsNonRoot"] is False and "runAsUser" not in ascend["securityContext"]
    assert ascend["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
    assert ascend["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_profile_limits_are_enforced_at_render_time(tmp_path):
    path = tmp_path / "operator.yaml"
    path.write_text(
        "profiles:\n  GPU: {maxDevicesPerReplica: 4, defaultDevicesPerReplica: 2, image: my/gpu:1}\n"
    )
    config = load_operator_config(path)
    assert config.profile("GPU").image == "my/gpu:1"
    assert config.profile("GPU").device_resource == "nvidia.com/gpu"  # merged over the defaults
    pod = render_pod(make_job("GPU"), config, 0)
    assert pod["spec"]["containers"][0]["image"] == "my/gpu:1"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    with pytest.raises(SpecError) as error:
        render_job(make_job("GPU", devices=8), config)
    assert error.value.problems == [
        ("spec.devicesPerReplica", "this cluster's GPU profile allows at most 4 devices per replica, not 8")
    ]


def test_profile_mount_collision_is_named(config):
    job = make_job(
        "Ascend",
        template={
            "volumes": [{"name": "drv", "emptyDir": {}}],
            "volumeMounts": [{"name": "drv", "mountPath": "/usr/local/Ascend"}],
        },
    )
    with pytest.raises(SpecError) as error:
        render_job(job, config)
    assert error.value.problems[0][0] == "spec.template.volumeMounts[0].mountPath"


def test_cluster_domain_and_image_override(tmp_path):
    path = tmp_path / "operator.yaml"
    path.write_text("clusterDomain: cluster.local\n")
    pod = render_pod(make_job("CPU", image="example.org/mnv2:dev"), load_operator_config(path), 1)
    assert _env(pod)["MNV2_SCHEDULER_HOST"]["value"] == "demo-0.demo.ml.svc.cluster.local"
    assert pod["spec"]["containers"][0]["image"] == "example.org/mnv2:dev"


def test_longest_valid_name_renders_dns_labels(config):
    name = "a" * names.max_job_name_length(1024)
    objects = render_job(make_job("Ascend", name=name, replicas=3), config)
    for obj in objects:
        assert len(obj["metadata"]["name"]) <= 63
        if obj["kind"] == "Pod":
            assert len(obj["spec"]["hostname"]) <= 63
        if obj["kind"] != "PodGroup":
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_bad_operator_config_names_file_and_field(tmp_path):
    from mnv2.exitcodes import ConfigError

    path = tmp_path / "operator.yaml"
    path.write_text("profiles:\n  CPU: {maxDevicesPerReplica: 0}\nbogus: 1\n")
    with pytest.raises(ConfigError) as error:
        load_operator_config(path)
    text = str(error.value)
    assert f"{path}: profiles.CPU.maxDevicesPerReplica" in text and f"{path}: bogus" in text


def test_rank_table_follows_the_devices_the_pods_were_started_with(tmp_path):
    path = tmp_path / "operator.yaml"
    path.write_text("profiles:\n  Ascend: {defaultDevicesPerReplica: 2}\n")
    cluster = load_operator_config(path)
    job = make_job("Ascend", replicas=2)
    observed = [ascend_pod("demo", i, devices=2) for i in range(2)]
    for i, pod in enumerate(observed):
        pod["spec"] = render_pod(job, cluster, i)[
            "spec"
        ]  # as the API server returns it, plugin annotation added
    table = json.loads(render_rank_table_configmap(job, observed)["data"]["hccl.json"])  # defaults say 8
    assert table["status"] == "completed"
    assert [d["rank_id"] for d in table["server_list"][1]["device"]] == ["2", "3"]


def test_launch_values_reach_the_trainer_literally_through_kubelet(config):
    """A `$(` in a user path must not be expanded by kubelet: launch values are rendered `$$`-escaped."""
    from mnv2_operator.localrun import resolve_env

    job = make_job("CPU")
    job["spec"]["dataset"]["trainPath"] = "/data/$(MNV2_JOB_NAME)/x$y"
    pod = render_pod(job, config, 0)
    container = pod["spec"]["containers"][0]
    env = resolve_env(pod, container)  # kubelet's expansion rules
    assert json.loads(env[launchenv.TRAINING_CONFIG])["dataset_path"] == "/data/$(MNV2_JOB_NAME)/x$y"


@pytest.mark.parametrize(
    "mode, export, expected",
    [("train", None, ["MINDIR"]), ("train", ["MINDIR", "ONNX"], ["MINDIR", "ONNX"]), ("train", [], []),
     ("finetune", ["ONNX"], ["ONNX"]), ("eval", ["ONNX"], [])],
)
def test_output_export_reaches_the_trainer(mode, export, expected):
    """spec.output.export (issue 17): what the trainer exports when training ends; eval exports nothing."""
    from mnv2_operator.api import effective_training_config

    output = {"volume": {"persistentVolumeClaim": {"claimName": "out"}}}
    if export is not None:
        output["export"] = export
    assert effective_training_config(make_job("CPU", mode, output=output)).export_formats == expected


def test_air_export_off_ascend_names_the_field():
    from mnv2_operator.api import SpecError, parse_job

    output = {"volume": {"persistentVolumeClaim": {"claimName": "out"}}, "export": ["AIR"]}
    with pytest.raises(SpecError, match="AIR is written only on Ascend"):
        parse_job(make_job("GPU", output=output))
