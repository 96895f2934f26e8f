"""The launcher's plan: which processes a pod runs and with what environment (pure, no processes)."""

from __future__ import annotations

import sys

import pytest
from launch_helpers import launch_env
from mnv2 import launchenv as le
from mnv2 import launcher
from mnv2.exitcodes import ConfigError


def _pod_env(index: int, platform: str = "GPU", **extra: str | int) -> dict[str, str]:
    return launch_env(
        **{
            le.COMMAND: "train",
            le.PLATFORM: platform,
            le.LAUNCH_MODE: "dynamic",
            le.REPLICAS: 2,
            le.REPLICA_INDEX: index,
            le.DEVICES_PER_REPLICA: 2,
            le.SCHEDULER_HOST: "job-0.job.ns.svc",
            le.SCHEDULER_PORT: 8118,
            le.TRAINING_CONFIG: '{"epochs": 1}',
        },
        **extra,
    )


def test_dynamic_two_replicas_by_two_devices() -> None:
    pod0 = launcher.plan_processes(_pod_env(0), None)
    pod1 = launcher.plan_processes(_pod_env(1), None)
    assert [s.name for s in pod0] == ["scheduler", "rank 0", "rank 1"]
    assert [s.name for s in pod1] == ["rank 2", "rank 3"]
    for spec in pod0 + pod1:
        assert spec.argv == [sys.executable, "-m", "mnv2", "train"]
        assert spec.env[le.MS_SCHED_HOST] == "job-0.job.ns.svc"
        assert spec.env[le.MS_SCHED_PORT] == "8118"
        assert spec.env[le.MS_WORKER_NUM] == "4"
        assert spec.env[le.WORLD_SIZE] == "4"
        assert spec.env[le.TRAINING_CONFIG] == '{"epochs": 1}'  # the pod's env is passed through
    scheduler = pod0[0]
    assert scheduler.is_scheduler and scheduler.env[le.MS_ROLE] == "MS_SCHED"
    assert le.MS_NODE_ID not in scheduler.env and le.RANK not in scheduler.env
    workers = pod0[1:] + pod1
    keys = (le.MS_ROLE, le.MS_NODE_ID, le.RANK, le.LOCAL_RANK, le.DEVICE_ID)
    assert [tuple(s.env[k] for k in keys) for s in workers] == [
        ("MS_WORKER", "0", "0", "0", "0"),
        ("MS_WORKER", "1", "1", "1", "1"),
        ("MS_WORKER", "2", "2", "0", "0"),
        ("MS_WORKER", "3", "3", "1", "1"),
    ]  # fmt: skip
    assert [s.rank for s in workers] == [0, 1, 2, 3]


def test_cpu_workers_get_no_device_id_and_stale_rank_vars_are_dropped() -> None:
    env = _pod_env(1, platform="CPU", **{le.RANK_ID: 9, le.MS_ROLE: "MS_SCHED", le.RANK_TABLE_FILE: "/x"})
    specs = launcher.plan_processes(env, None)
    for spec in specs:
        assert le.DEVICE_ID not in spec.env
        assert le.RANK_ID not in spec.env and le.RANK_TABLE_FILE not in spec.env
        assert spec.env[le.MS_ROLE] == "MS_WORKER"


def test_ascend_dynamic_ranks_get_their_local_card_under_both_names() -> None:
    """MindX-DL's container samples set DEVICE_ID=i and ASCEND_DEVICE_ID=i (REFERENCE §7)."""
    workers = launcher.plan_processes(_pod_env(1, platform="Ascend"), None)
    assert [(s.env[le.DEVICE_ID], s.env[le.ASCEND_DEVICE_ID]) for s in workers] == [("0", "0"), ("1", "1")]
    gpu = launcher.plan_processes(_pod_env(1, platform="GPU", **{le.ASCEND_DEVICE_ID: 7}), None)
    assert all(le.ASCEND_DEVICE_ID not in s.env for s in gpu), "a stale pod value is dropped, not passed on"


def test_eval_command_and_defaults() -> None:
    specs = launcher.plan_processes(launch_env(**{le.COMMAND: "eval", le.DEVICES_PER_REPLICA: 2}), None)
    assert [s.name for s in specs] == ["scheduler", "rank 0", "rank 1"]
    assert specs[1].argv[-1] == "eval"
    assert specs[1].env[le.MS_SCHED_HOST] == "127.0.0.1"
    assert specs[1].env[le.MS_SCHED_PORT] == str(le.DEFAULT_SCHEDULER_PORT)


def test_a_single_process_job_runs_without_scheduler_or_collectives() -> None:
    specs = launcher.plan_processes(launch_env(**{le.MS_ROLE: "MS_WORKER", le.PLATFORM: "CPU"}), None)
    assert len(specs) == 1
    assert specs[0].argv == [sys.executable, "-m", "mnv2", "train"]
    assert not any(k.startswith("MS_") for k in specs[0].env)
    assert [specs[0].env[k] for k in (le.RANK, le.WORLD_SIZE, le.LOCAL_RANK)] == ["0", "1", "0"]


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({le.COMMAND: "export"}, le.COMMAND),
        ({le.REPLICAS: "two"}, le.REPLICAS),
        ({le.REPLICAS: 0}, le.REPLICAS),
        ({le.REPLICAS: 2, le.REPLICA_INDEX: 2}, le.REPLICA_INDEX),
        ({le.DEVICES_PER_REPLICA: -1}, le.DEVICES_PER_REPLICA),
        ({le.LAUNCH_MODE: "mpirun"}, le.LAUNCH_MODE),
        ({le.REPLICAS: 2, le.SCHEDULER_PORT: "http"}, le.SCHEDULER_PORT),
        ({le.CPU_LIMIT_MILLICORES: "2 cpus"}, le.CPU_LIMIT_MILLICORES),
    ],
)
def test_bad_launch_environment_names_the_variable(values: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        launcher.plan_processes(launch_env(**values), None)


def test_wait_for_host_is_bounded() -> None:
    now = [0.0]
    calls: list[str] = []

    def never(host: str) -> None:
        calls.append(host)
        raise OSError("no such host")

    def sleep(seconds: float) -> None:
        now[0] += seconds

    assert not launcher.wait_for_host("job-0.job", 5, resolve=never, clock=lambda: now[0], sleep=sleep)
    assert now[0] == 5 and len(calls) == 6

    answers = iter([OSError("not yet"), OSError("not yet"), "10.0.0.1"])

    def later(host: str) -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    now[0] = 0.0
    assert launcher.wait_for_host("job-0.job", 30, resolve=later, clock=lambda: now[0], sleep=sleep)
    assert now[0] == 2
