"""`mnv2 run` end to end on CPU with the real trainer: several replicas as local process groups on
127.0.0.1, real MindSpore data-parallel training on tiny generated images (what the quick start does).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from mnv2.datasets import make_synthetic_tree


def _manifest(tmp_path: Path, name: str, *, replicas: int, devices: int, data: Path, epochs: int = 1) -> Path:
    job = {
        "apiVersion": "training.mindspore.io/v1alpha1",
        "kind": "MobileNetV2TrainJob",
        "metadata": {"name": name},
        "spec": {
            "platform": "CPU",
            "replicas": replicas,
            "devicesPerReplica": devices,
            "training": {
                "epochs": epochs, "batchSize": 4, "imageSize": 32, "widthMult": 0.25, "numClasses": 2,
            },
            "dataset": {
                "volume": {"hostPath": {"path": str(data)}},
                "mountPath": "/data",
                "trainPath": "/data/train",
                "evalPath": "/data/val",
            },
            "output": {"volume": {"persistentVolumeClaim": {"claimName": "out"}}, "path": "/output"},
            "runPolicy": {"backoffLimit": 0},
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_synthetic_tree(root / "train", classes=2, per_class=16, size=32, seed=0)
    make_synthetic_tree(root / "val", classes=2, per_class=6, size=32, seed=1)
    return root


class _Run:
    """`mnv2 run` in its own session, output collected line by line for condition waits."""

    def __init__(self, manifest: Path, run_dir: Path, *extra: str):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MNV2_", "MS_", "RANK_"))}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mnv2", "run", "--run-dir", str(run_dir), "--progress-interval", "0.5",
             *extra, str(manifest)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for_line(self, predicate, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(predicate(line) for line in self.lines):
                assert self.proc.poll() is None or self._reader.is_alive(), self.text()
                left = deadline - time.monotonic()
                assert left > 0, "timed out; output:\n" + self.text()
                self._changed.wait(min(left, 1.0))

    def finish(self, timeout: float) -> tuple[int, dict]:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(timeout=10)
        text = self.text()
        status = yaml.safe_load(text[text.rindex("\nstatus:") :])["status"]
        return code, status

    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.mark.slow
def test_two_replicas_train_across_processes_and_report_the_job_status(tmp_path: Path, data: Path) -> None:
    run = _Run(_manifest(tmp_path, "quick", replicas=2, devices=1, data=data), tmp_path / "run")
    code, status = run.finish(timeout=600)
    text = run.text()
    assert code == 0, text
    assert status["state"] == "Succeeded" and status["replicas"]["succeeded"] == 2
    assert {c["type"]: c["status"] for c in status["conditions"]}["Succeeded"] == "True"
    # Both ranks trained (4 global steps of 2x4 images = 32 images), rank 0 alone wrote the result.
    assert "[rank 0] epoch: [  0/  1]" in text and "[rank 1] epoch: [  0/  1]" in text
    assert "[scheduler]" not in text or "Traceback" not in text
    assert text.count("result: {'acc'") == 1
    assert 0.0 <= status["progress"]["top1"] <= 1.0
    assert status["progress"]["totalSteps"] == 4 and status["progress"]["percent"] == 100.0
    assert any(line.startswith("[mnv2 run] epoch 0, step") for line in run.lines), "no progress line"
    checkpoints = list((tmp_path / "run" / "quick" / "output").rglob("*.ckpt"))
    assert checkpoints, "rank 0 writes checkpoints into the PVC's local folder"
    # The training report lands on the output volume, one row for the one epoch, with the final top-1.
    from mnv2.report import read_records

    (record,) = read_records(tmp_path / "run" / "quick" / "output" / "training_report.csv")
    assert record.epoch == 0 and record.top1 == status["progress"]["top1"]
    assert (tmp_path / "run" / "quick" / "output" / "training_report.png").stat().st_size > 0
    assert "\x1b" not in text  # no terminal: nothing redrawn
    # Where the model went, read from rank 0's termination message (a file in the run folder here).
    local_output = tmp_path / "run" / "quick" / "output"
    assert f"[mnv2 run] artifacts on this machine under {local_output}: final checkpoint checkpoint/" in text


@pytest.mark.slow
def test_a_missing_dataset_fails_the_job_with_the_trainers_code(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, "nodata", replicas=2, devices=1, data=tmp_path / "absent")
    run = _Run(manifest, tmp_path / "run")
    code, status = run.finish(timeout=300)
    assert code == 65, run.text()  # InvalidInput
    assert status["state"] == "Failed"
    assert "InvalidInput" in status["message"]


@pytest.mark.slow
def test_ctrl_c_stops_every_process_group_cleanly(tmp_path: Path, data: Path) -> None:
    manifest = _manifest(tmp_path, "stop", replicas=1, devices=2, data=data, epochs=50)
    run = _Run(manifest, tmp_path / "run", "--grace", "60")
    # Training has begun once rank 0's metrics report a step (or a rank prints its step line).
    run.wait_for_line(lambda line: line.startswith(("[mnv2 run] epoch 0, step", "[rank 1] epoch: [")), 300)
    pids = [int(line.split("(pid ")[1].split(")")[0]) for line in run.lines if "(pid " in line]
    assert len(pids) == 4  # the launcher, the scheduler, two workers
    run.proc.send_signal(signal.SIGINT)
    code, status = run.finish(timeout=120)
    assert code == 143, run.text()  # the trainers saved a checkpoint and exited as interrupted
    assert status["state"] == "Failed" and status["reason"] == "Interrupted"
    assert "RestartPolicyNever" not in str(status["conditions"])
    text = run.text()
    assert "[rank 0] [mnv2] SIGTERM" in text, "the trainers got the launcher's SIGTERM, not a kill"
    # The scheduler is stopped after its workers, so none of them fails to unregister.
    assert "Failed to unregister" not in text
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
