"""Each trainer process gets its share of the pod's CPU limit for its threads (issue 14).

The pod's limit reaches the launcher through the downward API (`resourceFieldRef: limits.cpu`,
divisor `1m`: an integer count of millicores; Kubernetes gives the node's allocatable CPU when the
container has no limit). Without a plan, MindSpore sizes its CPU kernel pool by the host's cores
(25 threads by default, per `mindspore.device_context.cpu.op_tuning.threads_num`'s docs) and
libgomp its team by the online CPUs: dozens of threads per rank throttled by a 2-CPU quota.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mnv2 import launchenv as le
from mnv2 import launcher
from mnv2.exitcodes import ConfigError

NO_HOST = lambda: pytest.fail("the pod's limit is given: nothing may be detected")  # noqa: E731


def _env(**values: str | int) -> dict[str, str]:
    return {k: str(v) for k, v in values.items()}


@pytest.mark.parametrize(
    ("millicores", "processes", "share"),
    [(8000, 4, 2), (2000, 1, 2), (4000, 3, 1), (1500, 1, 1), (500, 2, 1), (64000, 8, 8), (7999, 4, 1)],
)
def test_share_of_the_pod_limit_rounded_down_at_least_one(millicores: int, processes: int, share: int):
    plan = launcher.thread_plan(_env(**{le.CPU_LIMIT_MILLICORES: millicores}), processes, NO_HOST)
    assert plan == {le.THREADS: str(share), le.OMP_NUM_THREADS: str(share)}


def test_without_the_variable_the_detected_cpus_are_shared():
    assert launcher.thread_plan({}, 2, lambda: 6.0) == {le.THREADS: "3", le.OMP_NUM_THREADS: "3"}
    assert launcher.thread_plan({le.CPU_LIMIT_MILLICORES: ""}, 4, lambda: 2.5) == {
        le.THREADS: "1", le.OMP_NUM_THREADS: "1"
    }


def test_an_omp_num_threads_set_on_the_pod_is_kept():
    plan = launcher.thread_plan(_env(**{le.CPU_LIMIT_MILLICORES: 8000, le.OMP_NUM_THREADS: 3}), 2, NO_HOST)
    assert plan == {le.THREADS: "4"}


@pytest.mark.parametrize("raw", ["two", "0", "-1000", "1.5"])
def test_a_bad_limit_names_the_variable(raw: str):
    with pytest.raises(ConfigError, match=le.CPU_LIMIT_MILLICORES):
        launcher.thread_plan({le.CPU_LIMIT_MILLICORES: raw}, 1, NO_HOST)


@pytest.mark.parametrize(
    ("files", "cpus"),
    [
        ({"cpu.max": "max 100000\n"}, None),  # cgroup v2, no limit
        ({"cpu.max": "250000 100000\n"}, 2.5),  # cgroup v2: quota/period
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1, no limit
        ({"cpu/cpu.cfs_quota_us": "150000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.5),  # v1
        ({}, None),
    ],
)
def test_cgroup_quota_is_read_in_both_versions(tmp_path: Path, files: dict[str, str], cpus):
    """cgroup v2 `cpu.max` is "<quota> <period>" or "max <period>"; v1 has cfs_quota_us = -1 for none."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert launcher.cgroup_cpu_limit(tmp_path) == cpus


def test_host_cpus_is_the_affinity_here():
    assert 1 <= launcher.host_cpus() <= len(os.sched_getaffinity(0))


def _pod(platform: str, devices: int, **extra: str | int) -> dict[str, str]:
    return _env(**{
        le.PLATFORM: platform, le.LAUNCH_MODE: "dynamic", le.REPLICAS: 1, le.REPLICA_INDEX: 0,
        le.DEVICES_PER_REPLICA: devices, le.CPU_LIMIT_MILLICORES: 8000, **extra,
    })  # fmt: skip


def test_every_rank_gets_its_share_and_the_scheduler_one_thread():
    specs = launcher.plan_processes(_pod("CPU", 4), None, detect=NO_HOST)
    assert [(s.name, s.env[le.THREADS], s.env[le.OMP_NUM_THREADS]) for s in specs] == [
        ("scheduler", "1", "1"), ("rank 0", "2", "2"), ("rank 1", "2", "2"), ("rank 2", "2", "2"),
        ("rank 3", "2", "2"),
    ]  # fmt: skip
    single = launcher.plan_processes(_pod("CPU", 1), None, detect=NO_HOST)
    assert single[0].env[le.THREADS] == "8"


def test_rank_table_ranks_get_their_share(tmp_path: Path):
    from mnv2.ranktable import parse_rank_table

    table = parse_rank_table({
        "version": "1.0", "status": "completed", "server_count": "1",
        "server_list": [{"server_id": "job-0", "container_ip": "10.0.0.1", "device": [
            {"device_id": str(d), "device_ip": f"192.168.0.{d}", "rank_id": str(d)} for d in range(2)
        ]}],
    })  # fmt: skip
    env = _pod("Ascend", 2, **{le.LAUNCH_MODE: "ranktable", le.POD_IP: "10.0.0.1",
                               le.CPU_LIMIT_MILLICORES: 24000, le.RANK_TABLE_PATH: str(tmp_path / "t")})
    assert [s.env[le.THREADS] for s in launcher.plan_processes(env, table, detect=NO_HOST)] == ["12", "12"]


def test_a_stale_share_on_the_pod_is_replaced():
    specs = launcher.plan_processes(_pod("CPU", 2, **{le.THREADS: 99}), None, detect=NO_HOST)
    assert {s.env[le.THREADS] for s in specs if not s.is_scheduler} == {"4"}


# OpenMP's own contract: omp_get_max_threads() is the OMP_NUM_THREADS of the environment the
# runtime started in. The child loads libgomp (the runtime our kernels link: g++ -fopenmp).
OMP_CHILD = r"""
import ctypes, json, os, sys
gomp = ctypes.CDLL(sys.argv[1])
print(json.dumps({"omp": gomp.omp_get_max_threads(), "threads": os.environ["MNV2_THREADS"]}))
"""


def test_the_planned_environment_sizes_the_openmp_team():
    library = ctypes.util.find_library("gomp")
    if library is None:
        pytest.skip("libgomp is not installed here")
    pod = _pod("CPU", 2, **{le.CPU_LIMIT_MILLICORES: 2000})
    env = launcher.plan_processes(pod, None, detect=NO_HOST)[1].env
    out = subprocess.run([sys.executable, "-c", OMP_CHILD, library], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert json.loads(out) == {"omp": 1, "threads": "1"}


def test_launch_dry_run_shows_each_process_its_share():
    """`mnv2 launch --dry-run` in a 3-CPU pod of two ranks: 1 thread each (3000m // 2, rounded down)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MNV2_", "MS_", "OMP_"))}
    env |= _pod("CPU", 2, **{le.CPU_LIMIT_MILLICORES: 3000})
    out = subprocess.run([sys.executable, "-m", "mnv2", "launch", "--dry-run"], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    plan = {p["name"]: p["env"] for p in json.loads(out)}
    assert {name: (e[le.THREADS], e[le.OMP_NUM_THREADS]) for name, e in plan.items()} == {
        "scheduler": ("1", "1"), "rank 0": ("1", "1"), "rank 1": ("1", "1"),
    }


# The trainer's side: set_device_context sizes MindSpore's CPU kernel pool from MNV2_THREADS with
# mindspore.device_context.cpu.op_tuning.threads_num (MindSpore 2.10; `runtime_num_threads` in
# set_context is its deprecated name). MindSpore offers no getter for the number, only whether it
# was configured; threads_num raises if called twice, so a second training in a process must not.
MS_CHILD = r"""
import json
from mindspore._c_expression import RuntimeConf
from mnv2.config import build_config
from mnv2.train import set_device_context
set_device_context(build_config({"platform": "CPU"}))
set_device_context(build_config({"platform": "CPU"}))  # a second run in one process
print(json.dumps(RuntimeConf.get_instance().is_op_threads_num_configured()))
"""


def test_the_trainer_sizes_mindspores_kernel_threads_from_its_share():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MNV2_", "MS_", "OMP_"))}
    pod = _pod("CPU", 1, **{le.CPU_LIMIT_MILLICORES: 1000})
    env |= launcher.plan_processes(pod, None, detect=NO_HOST)[0].env
    assert env[le.THREADS] == "1"
    proc = subprocess.run(
        [sys.executable, "-c", MS_CHILD], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) is True
