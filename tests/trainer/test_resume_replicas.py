"""Several replicas, one truth: rank 0 decides where to resume and its weights reach every rank.

Two trainer processes in a real MindSpore dynamic cluster on 127.0.0.1 (scheduler + 2 workers, as
`mnv2 launch` runs them), each with its own output folder: only rank 0's holds the checkpoint, as
with node-local volumes. Before this, rank 1 started from scratch at step 0 while rank 0 resumed
mid-epoch: the ranks' step counts differ, and rank 1 waits in all-reduce forever.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mnv2.datasets import make_synthetic_tree

SCRIPT = Path(__file__).with_name("replica_script.py")
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(out: Path, name: str, mode: str, tree: Path, extra: dict[str, str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MS_", "RANK_"))}
    env.update(extra, GLOG_v="3")
    log = (out / f"{name}.log").open("w")
    return subprocess.Popen([sys.executable, str(SCRIPT), mode, str(out), str(tree)], env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def _wait(procs: dict[str, subprocess.Popen], out: Path, timeout: float) -> None:
    try:
        for name, proc in procs.items():
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} still running after {timeout:g}s (a rank waiting in a collective?):\n"
                            + (out / f"{name}.log").read_text()[-3000:])
            assert code == 0, f"{name} exited {code}:\n{(out / f'{name}.log').read_text()[-3000:]}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_replicas_with_different_output_folders_resume_identically(tmp_path):
    tree = make_synthetic_tree(tmp_path / "train", classes=4, per_class=8, size=32, seed=0)
    _wait({"prepare": _start(tmp_path, "prepare", "prepare", tree, {})}, tmp_path, timeout=240)
    saved = sorted(p.name for p in (tmp_path / "rank0" / "checkpoint").glob("*.ckpt"))
    assert saved[-1] == "mobilenetv2-2_2.ckpt"  # stopped at epoch 1, step 2 of 4
    assert not (tmp_path / "rank1").exists()

    cluster = {"MS_SCHED_HOST": "127.0.0.1", "MS_SCHED_PORT": str(_free_port()), "MS_WORKER_NUM": "2"}
    procs = {
        "scheduler": _start(tmp_path, "scheduler", "resume", tree, {**cluster, "MS_ROLE": "MS_SCHED"}),
        "worker0": _start(tmp_path, "worker0", "resume", tree,
                          {**cluster, "MS_ROLE": "MS_WORKER", "MS_NODE_ID": "0"}),
        "worker1": _start(tmp_path, "worker1", "resume", tree,
                          {**cluster, "MS_ROLE": "MS_WORKER", "MS_NODE_ID": "1"}),
    }
    _wait({"worker0": procs["worker0"], "worker1": procs["worker1"], "scheduler": procs["scheduler"]},
          tmp_path, timeout=300)

    logs = {r: (tmp_path / f"worker{r}.log").read_text() for r in (0, 1)}
    for rank, log in logs.items():
        assert "at epoch 1, step 2, global step 6 (weights from rank 0, 2 ranks)" in log, log[-2000:]
        assert f"rank {rank} finished at global step 8" in log
    rank0, rank1 = (dict(np.load(tmp_path / f"params-{r}.npz")) for r in (0, 1))
    assert rank0.keys() == rank1.keys() and "dense.weight" in rank0
    # Trained parameters get the same averaged gradients on both ranks, so they stay equal only if
    # they started equal. (BatchNorm's moving statistics are each rank's own: not synchronised.)
    trained = [name for name in rank0 if "moving_" not in name]
    assert len(trained) > 100
    for name in trained:
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=f"ranks differ in {name}")
