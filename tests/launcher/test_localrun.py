"""`mnv2 run`'s translation of rendered pods into local processes, and its final status (pure)."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mnv2 import launchenv as le
from mnv2.exitcodes import ConfigError
from mnv2_operator import localrun
from mnv2_operator.localrun import Mount, translate_path
from mnv2_operator.profiles import load_operator_config
from mnv2_operator.render import render_job
from mnv2_operator.status import compute_status


def _job(tmp_path: Path, *, platform: str = "CPU", replicas: int = 2, devices: int = 1, **spec) -> dict:
    job = {
        "apiVersion": "training.mindspore.io/v1alpha1",
        "kind": "MobileNetV2TrainJob",
        "metadata": {"name": "quick", "namespace": "default", "uid": "u-1"},
        "spec": {
            "platform": platform,
            "replicas": replicas,
            "devicesPerReplica": devices,
            "training": {"epochs": 1, "batchSize": 4, "imageSize": 32, "numClasses": 2},
            "dataset": {
                "volume": {"hostPath": {"path": str(tmp_path / "data")}},
                "mountPath": "/data",
                "trainPath": "/data/train",
                "evalPath": "/data/val",
            },
            "output": {"volume": {"persistentVolumeClaim": {"claimName": "out"}}, "path": "/output"},
            **spec,
        },
    }
    return job


def _pods(job: dict) -> list[dict]:
    return [o for o in render_job(job, load_operator_config(None)) if o["kind"] == "Pod"]


def _local(tmp_path: Path, job: dict) -> list[localrun.LocalPod]:
    return localrun.plan_local_pods(
        _pods(job), job_name="quick", run_dir=tmp_path / "run", base_dir=tmp_path, base_env={"PATH": "/bin"}
    )


def test_pods_become_launchers_on_localhost_with_local_folders(tmp_path: Path) -> None:
    local = _local(tmp_path, _job(tmp_path, devices=2))
    assert [lp.name for lp in local] == ["quick-0", "quick-1"]
    ports = set()
    for index, lp in enumerate(local):
        env = lp.spec.env
        assert lp.spec.argv == [sys.executable, "-m", "mnv2", "launch"]
        assert env[le.SCHEDULER_HOST] == "127.0.0.1"
        assert env[le.SCHEDULER_PORT] == local[0].spec.env[le.SCHEDULER_PORT]
        assert env[le.POD_IP] == "127.0.0.1" and env[le.POD_NAME] == f"quick-{index}"
        assert env[le.REPLICA_INDEX] == str(index) and env[le.REPLICAS] == "2"
        assert env["PATH"] == "/bin"
        config = json.loads(env[le.TRAINING_CONFIG])
        assert config["dataset_path"] == str(tmp_path / "data" / "train")
        assert config["eval_dataset_path"] == str(tmp_path / "data" / "val")
        assert config["output_dir"] == str(tmp_path / "run" / "quick" / "output")
        assert config["metrics_port"] == int(env[le.METRICS_PORT]) == lp.metrics_port
        ports.update({lp.metrics_port, lp.metrics_port + 1})  # local ranks 0 and 1 serve on base + r
    assert len(ports) == 4, "each pod's metrics ports must differ: the pods share one network here"
    assert int(local[0].spec.env[le.SCHEDULER_PORT]) not in ports


def test_ports_handed_out_are_free(tmp_path: Path) -> None:
    for lp in _local(tmp_path, _job(tmp_path)):
        for port in (lp.metrics_port, int(lp.spec.env[le.SCHEDULER_PORT])):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))


def test_rank_table_jobs_are_refused_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rank-table mode"):
        job = _job(tmp_path, platform="Ascend", replicas=1, devices=8)
        job["spec"]["training"].update(epochs=4, warmupEpochs=1)
        _local(tmp_path, job)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/data", "/local/data"),
        ("/data/train/x.png", "/local/data/train/x.png"),
        ("/database", "/database"),  # a sibling, not under /data
        ("/output/sub", "/o/sub"),
        ("/output/ckpt/best", "/ckpt-vol/best"),  # the longest mount path wins
        ("/dev/shm/x", "/dev/shm/x"),  # mapped to nothing: left alone
        ("relative/data", "relative/data"),
        ("", ""),
    ],
)
def test_translate_path(value: str, expected: str) -> None:
    mounts = (
        Mount("/output/ckpt", Path("/ckpt-vol")),
        Mount("/output", Path("/o")),
        Mount("/data", Path("/local/data")),
        Mount("/dev/shm", None),
    )
    assert translate_path(value, mounts) == expected


def test_env_resolution_like_kubelet() -> None:
    pod = {"metadata": {"name": "p-0", "namespace": "ns", "labels": {"a": "b"}}, "spec": {}}
    container = {
        "env": [
            {"name": "X", "value": "1"},
            {"name": "Y", "value": "$(X)-$(NOPE)"},
            {"name": "LIT", "value": "/data/$$(X)/$$5"},  # kubelet's escape: $$ is a literal $
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['a']"}}},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        ]
    }
    assert localrun.resolve_env(pod, container) == {
        "X": "1", "Y": "1-$(NOPE)", "LIT": "/data/$(X)/$5", "NS": "ns", "L": "b"
    }
    container["env"].append({"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}})
    with pytest.raises(ConfigError, match=r"env S: valueFrom\.secretKeyRef"):
        localrun.resolve_env(pod, container)


def test_result_line() -> None:
    line = "[rank 0] result: {'acc': 0.8125, 'top_5_accuracy': 1.0} ckpt=/o/c.ckpt"
    assert localrun.parse_result_line(line) == (0.8125, 1.0)
    assert localrun.parse_result_line(line.replace("rank 0", "rank 1")) is None
    assert localrun.parse_result_line("[rank 0] epoch: [  0/  1]") is None


def _status(job: dict, codes: dict[str, int], interrupted: str | None = None) -> dict:
    pods = _pods(job)
    status = localrun._observe(job, {}, pods, 0, None, compute_status)
    assert status["state"] == "Running"
    result = localrun._AttemptResult(
        codes=codes, exit_code=0, interrupted=interrupted, progress=None, top1=None
    )
    return localrun._observe(job, status, pods, 0, result, compute_status)


def test_final_status_follows_the_operator(tmp_path: Path) -> None:
    job = _job(tmp_path)
    done = _status(job, {"quick-0": 0, "quick-1": 0})
    assert done["state"] == "Succeeded" and done["replicas"]["succeeded"] == 2
    types = {c["type"]: c["status"] for c in done["conditions"]}
    assert types == {"Created": "True", "Running": "False", "Succeeded": "True"}

    failed = _status(job, {"quick-0": 143, "quick-1": 67})
    assert failed["state"] == "Failed"
    assert "quick-1" in failed["message"] and "Diverged" in failed["message"]

    retry = _status(job, {"quick-0": 143, "quick-1": 76})  # CommunicationError is retryable
    assert retry["state"] == "Restarting" and retry["restartCount"] == 1

    stopped = _status(job, {"quick-0": 143, "quick-1": 143}, interrupted="Ctrl-C")
    assert stopped["state"] == "Failed", "a user's Ctrl-C is never retried"
    result = localrun._AttemptResult(codes={}, exit_code=143, interrupted="Ctrl-C", progress=None, top1=0.5)
    final = localrun.final_status(stopped, result)
    assert (final["reason"], final["message"]) == ("Interrupted", "stopped by Ctrl-C")
    assert {c["type"]: c["reason"] for c in final["conditions"]}["Running"] == "Interrupted"
    assert final["progress"] == {"top1": 0.5}
    # Ctrl-C after the trainers had already finished: the job still succeeded.
    assert localrun.final_status(done, result)["reason"] == "JobSucceeded"


def test_dry_run_prints_each_replica(tmp_path: Path) -> None:
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(_job(tmp_path)))
    done = subprocess.run(
        [sys.executable, "-m", "mnv2", "run", "--dry-run", "--run-dir", str(tmp_path / "r"), str(manifest)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    plan = yaml.safe_load(done.stdout)
    assert [p["pod"] for p in plan] == ["quick-0", "quick-1"]
    assert plan[1]["env"][le.SCHEDULER_HOST] == "127.0.0.1"


def test_an_invalid_manifest_exits_64_naming_the_field(tmp_path: Path) -> None:
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(_job(tmp_path, replicas=0)))
    done = subprocess.run(
        [sys.executable, "-m", "mnv2", "run", str(manifest)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 64
    assert "spec.replicas" in done.stderr and str(manifest) in done.stderr


def test_volume_override_maps_a_pod_volume_to_a_local_folder(tmp_path: Path) -> None:
    local = localrun.plan_local_pods(
        _pods(_job(tmp_path)), job_name="quick", run_dir=tmp_path / "run", base_dir=tmp_path,
        base_env={}, overrides={"dataset": tmp_path / "digits", "output": tmp_path / "out"},
    )
    config = json.loads(local[1].spec.env[le.TRAINING_CONFIG])
    assert config["dataset_path"] == str(tmp_path / "digits" / "train")
    assert config["output_dir"] == str(tmp_path / "out")


def test_unknown_volume_override_is_named(tmp_path: Path) -> None:
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(_job(tmp_path)))
    done = subprocess.run(
        [sys.executable, "-m", "mnv2", "run", "--dry-run", "--volume", "datasets=/x", str(manifest)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 64
    assert "--volume datasets: the pods have no such volume" in done.stderr


def test_host_path_types_are_checked_like_kubelet(tmp_path: Path) -> None:
    job = _job(tmp_path)
    job["spec"]["dataset"]["volume"]["hostPath"]["type"] = "Directory"
    output = {"path": str(tmp_path / "new" / "out"), "type": "DirectoryOrCreate"}
    job["spec"]["output"]["volume"] = {"hostPath": output}
    pods = _pods(job)
    localrun._prepare_host_paths(pods, {"dataset": tmp_path / "elsewhere"})  # mapped away: not checked
    assert (tmp_path / "new" / "out").is_dir()
    with pytest.raises(ConfigError, match=r"volume dataset: hostPath .*/data is not a directory"):
        localrun._prepare_host_paths(pods, {})


def test_retryable_failures_restart_the_whole_job_up_to_the_backoff_limit(tmp_path, monkeypatch) -> None:
    """The restart loop of `mnv2 run` (attempts stood in for; the status rules are the operator's)."""
    job = _job(tmp_path)
    job["spec"]["runPolicy"] = {"backoffLimit": 2, "restartPolicy": "ExitCode"}
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(job))
    outcomes = iter([
        {"quick-0": 143, "quick-1": 76},  # CommunicationError: retryable
        {"quick-0": 0, "quick-1": 0},
    ])  # fmt: skip
    attempts: list[list[str]] = []

    def attempt(local_pods, options, out, lock, say, **kwargs):
        attempts.append([lp.spec.env[le.SCHEDULER_PORT] for lp in local_pods])
        codes = next(outcomes)
        return localrun._AttemptResult(
            codes=codes, exit_code=max(codes.values()), interrupted=None, progress=None, top1=0.75
        )

    monkeypatch.setattr(localrun, "_run_attempt", attempt)
    out = io.StringIO()
    code = localrun.run_job(manifest, localrun.RunOptions(run_dir=tmp_path / "run", out=out))
    assert code == 0 and len(attempts) == 2
    restart = next(line for line in out.getvalue().splitlines() if "restarting the job:" in line)
    assert "pod quick-1 (replica 1) exited with code 76 (CommunicationError" in restart
    status = yaml.safe_load(out.getvalue()[out.getvalue().index("status:") :])["status"]
    assert status["state"] == "Succeeded" and status["restartCount"] == 1
    assert status["progress"] == {"top1": 0.75}

    outcomes = iter([{"quick-0": 76, "quick-1": 143}] * 3)
    attempts.clear()
    out = io.StringIO()
    code = localrun.run_job(manifest, localrun.RunOptions(run_dir=tmp_path / "run", out=out))
    assert code == 143 and len(attempts) == 3  # first try + backoffLimit 2 restarts
    status = yaml.safe_load(out.getvalue()[out.getvalue().index("status:") :])["status"]
    assert status["state"] == "Failed" and status["reason"] == "BackoffLimitExceeded"


def test_the_local_policy_allows_any_folder_and_refuses_the_rest(tmp_path: Path) -> None:
    """mnv2 run checks the operator's rules with mnv2_operator.policy.LOCAL_POLICY: local folders
    stand in for volumes (any hostPath, read-write, shared by the replicas), nothing else is relaxed."""
    job = _job(tmp_path)
    job["spec"]["output"] = {"volume": {"hostPath": {"path": str(tmp_path / "out")}}, "path": "/output"}
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(job))
    options = localrun.RunOptions(run_dir=tmp_path / "run", out=io.StringIO())
    assert localrun.dry_run(manifest, options) == 0  # node-local output shared by 2 replicas: fine here

    job["spec"]["image"] = "registry.evil.example/trainer:1"
    manifest.write_text(yaml.safe_dump(job))
    with pytest.raises(ConfigError, match=r"local policy.*\n  spec\.image: "):
        localrun.dry_run(manifest, options)


def test_where_the_model_went_is_read_as_kubelet_reads_a_termination_message(tmp_path: Path, monkeypatch):
    """Rank 0 writes its artifacts to MNV2_TERMINATION_MESSAGE_PATH (the container's
    terminationMessagePath); locally that is a file in the run folder, never /dev/termination-log,
    and its text becomes the container status's `terminated.message`, as kubelet reports it."""
    job = _job(tmp_path)
    local = _local(tmp_path, job)
    paths = [lp.spec.env[le.TERMINATION_MESSAGE_PATH] for lp in local]
    assert paths == [str(tmp_path / "run" / "quick" / f"quick-{i}.termination-log") for i in (0, 1)]
    text = '{"top1":0.5}'
    pod = localrun.observed_pod(_pods(job)[0], phase="Succeeded", exit_code=0, attempt=0, message=text)
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"] == {"exitCode": 0, "message": text}

    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(job))
    message = json.dumps({"outputPath": "/output", "checkpoint": "checkpoint/mobilenetv2-1_4.ckpt",
                          "top1": 0.75})

    def attempt(local_pods, options, out, lock, say, **kwargs):
        return localrun._AttemptResult(codes={"quick-0": 0, "quick-1": 0}, exit_code=0, interrupted=None,
                                       progress=None, top1=0.75, messages={"quick-0": message})

    monkeypatch.setattr(localrun, "_run_attempt", attempt)
    out = io.StringIO()
    assert localrun.run_job(manifest, localrun.RunOptions(run_dir=tmp_path / "run", out=out)) == 0
    local_output = tmp_path / "run" / "quick" / "output"  # the PVC's local folder
    lines = out.getvalue().splitlines()
    assert lines[lines.index("status:") - 1] == (  # just before the final status
        f"[mnv2 run] artifacts on this machine under {local_output}: "
        "final checkpoint checkpoint/mobilenetv2-1_4.ckpt; final top-1 0.7500"
    )
