"""Real data-parallel training on CPU: a MindSpore scheduler plus two workers on 127.0.0.1.

This is the property everything distributed rests on (REFERENCE §2): with DATA_PARALLEL and mean
gradients, N ranks each training on 1/N of a batch end in the same state as one process training
on the whole batch. The script is independent of the trainer so the test stays fast.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).with_name("dp_script.py")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(out: Path, name: str, extra: dict[str, str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MS_", "RANK_"))}
    env.update(extra, GLOG_v="2")
    log = (out / f"{name}.log").open("w")
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(out)], env=env, stdout=log, stderr=subprocess.STDOUT
    )


def _wait_all(procs: dict[str, subprocess.Popen], out: Path, timeout: float) -> None:
    """Wait for every process; each must exit 0.

    One exception, seen twice in about 40 runs under heavy load and never reproduced on demand:
    MindSpore 2.10 can crash with SIGSEGV while tearing down after the script has finished. That is
    accepted only once the process has written its final parameters (the script's last act), and
    reported as a warning; faulthandler in the script puts the native crash's Python stack in the log.
    """
    deadline = time.monotonic() + timeout
    try:
        for name, proc in procs.items():
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            log = (out / f"{name}.log").read_text()
            finished = name.startswith("worker") and (out / f"params-{name[-1]}.npz").exists()
            if code == -signal.SIGSEGV and finished:
                message = f"{name} crashed in MindSpore teardown after finishing:\n{log[-2000:]}"
                warnings.warn(message, stacklevel=1)
                continue
            assert code == 0, f"{name} exited {code}:\n{log[-3000:]}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _losses(log: str) -> list[float]:
    return [float(v) for v in re.findall(r"step \d+ loss ([0-9.]+)", log)]


@pytest.mark.slow
def test_two_workers_match_single_process_on_the_concatenated_batch(tmp_path: Path) -> None:
    cluster = {"MS_SCHED_HOST": "127.0.0.1", "MS_SCHED_PORT": str(_free_port()), "MS_WORKER_NUM": "2"}
    procs = {
        "scheduler": _start(tmp_path, "scheduler", {**cluster, "MS_ROLE": "MS_SCHED"}),
        "worker0": _start(tmp_path, "worker0", {**cluster, "MS_ROLE": "MS_WORKER", "MS_NODE_ID": "0"}),
        "worker1": _start(tmp_path, "worker1", {**cluster, "MS_ROLE": "MS_WORKER", "MS_NODE_ID": "1"}),
    }
    _wait_all(procs, tmp_path, timeout=240)
    _wait_all({"single": _start(tmp_path, "single", {})}, tmp_path, timeout=120)

    rank0, rank1, single = (dict(np.load(tmp_path / f"params-{r}.npz")) for r in ("0", "1", "single"))
    initial = dict(np.load(tmp_path / "initial-single.npz"))
    assert set(rank0) == set(single) and len(single) == 4
    for name, value in single.items():
        assert not np.allclose(value, initial[name]), f"{name} did not change: nothing was trained"
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=f"ranks differ in {name}")
        np.testing.assert_allclose(rank0[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    # Each rank saw a different half, so its local losses differ, and their mean is the global loss.
    losses0 = _losses((tmp_path / "worker0.log").read_text())
    losses1 = _losses((tmp_path / "worker1.log").read_text())
    losses = _losses((tmp_path / "single.log").read_text())
    assert len(losses0) == len(losses1) == len(losses) == 4 and losses0 != losses1
    np.testing.assert_allclose((np.array(losses0) + np.array(losses1)) / 2, losses, atol=2e-6)
