"""The kernels' thread pool gets the process's CPUs inside MindSpore, not MindSpore's OMP_NUM_THREADS.

MindSpore's runtime sets OMP_NUM_THREADS=1 (in C, so os.environ does not show it) when the variable is
unset: observed with MindSpore 2.10.0's CPU backend (libmindspore_ms_backend.so, which names the
variable beside its actor and kernel thread counts; with it set beforehand, the value is kept). The
pool used to read that variable at its first kernel call, so in `mnv2 train` every kernel ran on one
thread. Checked in a fresh process that trains one step of a network with our kernels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("mindspore")

_CHILD = r"""
import ctypes, json, os
import numpy as np
import mindspore as ms
from mindspore import Tensor, nn
ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
from mnv2.ops._build import build, kernel_threads
from mnv2.ops.depthwise import DepthwiseConv2d

net = nn.SequentialCell([DepthwiseConv2d(16, 3, 1, 1)])
step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), nn.SGD(net.trainable_params(), 0.1))
x = Tensor(np.ones((4, 16, 32, 32), np.float32))
step(x, x).asnumpy()
print(json.dumps({"pool": ctypes.CDLL(str(build("depthwise"))).mnv2_kernel_threads(),
                  "expected": kernel_threads()}))
"""


def _pool(omp: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if omp is not None:
        env["OMP_NUM_THREADS"] = omp
    proc = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to tell 1 thread from all")
def test_unset_omp_num_threads_gives_the_kernels_every_cpu_of_the_process():
    assert _pool(None) == {"pool": len(os.sched_getaffinity(0)), "expected": len(os.sched_getaffinity(0))}


def test_omp_num_threads_set_by_the_launcher_or_the_user_is_kept():
    assert _pool("1") == {"pool": 1, "expected": 1}
