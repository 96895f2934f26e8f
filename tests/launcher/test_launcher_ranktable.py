"""Rank-table mode (Ascend): per-process environment from the table, waiting for "completed",
and the bounded wait's exit code. No accelerator: the children are the stand-in."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from launch_helpers import child_argv, launch_env
from mnv2 import launchenv as le
from mnv2 import launcher
from mnv2.exitcodes import ConfigError, ExitCode, TrainerError
from mnv2.ranktable import parse_rank_table

PODS = [("job-0", "10.0.0.10", "node-a"), ("job-1", "10.0.0.11", "node-b")]


def _table(devices: int = 8) -> dict:
    """The version 1.0 table as REFERENCE §3 shows it (strings everywhere), written out by hand."""
    return {
        "version": "1.0",
        "status": "completed",
        "server_count": str(len(PODS)),
        "server_list": [
            {
                "server_id": server_id,
                "container_ip": ip,
                "host_nic_ip": "reserve",
                "device": [
                    {"device_id": str(d), "device_ip": f"192.168.{p}.{d}", "rank_id": str(p * devices + d)}
                    for d in range(devices)
                ],
            }
            for p, (_, ip, server_id) in enumerate(PODS)
        ],
    }


def _pod_env(index: int, table_path: Path, **extra: str | int) -> dict[str, str]:
    name, ip, _ = PODS[index]
    values: dict[str, str | int] = {
        le.PLATFORM: "Ascend",
        le.LAUNCH_MODE: "ranktable",
        le.REPLICAS: 2,
        le.REPLICA_INDEX: index,
        le.DEVICES_PER_REPLICA: 8,
        le.RANK_TABLE_PATH: str(table_path),
        le.POD_NAME: name,
        le.POD_IP: ip,
    }
    return launch_env(**(values | extra))


def _write(path: Path, doc: dict) -> None:
    """Replace the file at once, as kubelet swaps a ConfigMap volume's symlink."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def test_two_pods_by_eight_devices_every_rank_env(tmp_path: Path) -> None:
    path = tmp_path / "hccl.json"
    table = parse_rank_table(_table())
    seen: dict[int, tuple[int, int]] = {}
    for index in range(2):
        specs = launcher.plan_processes(_pod_env(index, path), table)
        assert len(specs) == 8 and not any(s.is_scheduler for s in specs)
        for local, spec in enumerate(specs):
            env = spec.env
            rank = int(env[le.RANK_ID])
            assert rank == index * 8 + local == spec.rank
            assert spec.name == f"rank {rank}"
            assert env[le.DEVICE_ID] == str(local)
            assert env[le.RANK_SIZE] == "16"
            assert env[le.RANK_TABLE_FILE] == str(path)
            assert env[le.HCCL_CONNECT_TIMEOUT] == "600"
            assert (env[le.RANK], env[le.WORLD_SIZE], env[le.LOCAL_RANK]) == (str(rank), "16", str(local))
            assert not any(k.startswith("MS_") for k in env), "no dynamic-cluster variables here"
            seen[rank] = (index, local)
    assert sorted(seen) == list(range(16))


def test_server_found_by_pod_name_when_ip_does_not_match(tmp_path: Path) -> None:
    doc = _table()
    doc["server_list"][1]["server_id"] = "job-1"
    env = _pod_env(1, tmp_path / "hccl.json", **{le.POD_IP: "10.9.9.9"})
    specs = launcher.plan_processes(env, parse_rank_table(doc))
    assert [s.env[le.RANK_ID] for s in specs] == [str(r) for r in range(8, 16)]


def test_a_pod_missing_from_the_table_is_named(tmp_path: Path) -> None:
    env = _pod_env(1, tmp_path / "hccl.json", **{le.POD_IP: "10.9.9.9", le.POD_NAME: "stranger"})
    with pytest.raises(ConfigError, match=r"no server for this pod.*10\.9\.9\.9.*stranger"):
        launcher.plan_processes(env, parse_rank_table(_table()))


def test_table_size_must_match_the_job(tmp_path: Path) -> None:
    env = _pod_env(0, tmp_path / "hccl.json", **{le.DEVICES_PER_REPLICA: 4})
    with pytest.raises(ConfigError, match="lists 16 devices"):
        launcher.plan_processes(env, parse_rank_table(_table()))


def test_wait_returns_once_the_table_completes(tmp_path: Path) -> None:
    path = tmp_path / "hccl.json"
    _write(path, {"status": "initializing"})
    messages: list[str] = []
    seen_initializing = threading.Event()

    def log(message: str) -> None:
        messages.append(message)
        if "initializing" in message:
            seen_initializing.set()

    def operator() -> None:
        assert seen_initializing.wait(10)
        _write(path, _table())

    thread = threading.Thread(target=operator)
    thread.start()
    table = launcher.wait_for_rank_table(path, timeout=30, interval=0.05, log=log)
    thread.join()
    assert table.rank_size() == 16
    assert messages[0] == f"waiting for rank table {path}: status 'initializing'"


def test_wait_tolerates_a_missing_or_half_written_file_then_times_out_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "hccl.json"
    now = [0.0]
    statuses: list[str] = []

    def sleep(seconds: float) -> None:
        now[0] += seconds
        if now[0] >= 2 and not path.exists():
            path.write_text('{"status": "compl')  # torn write
        elif now[0] >= 4:
            _write(path, {"status": "initializing"})

    with pytest.raises(TrainerError) as error:
        launcher.wait_for_rank_table(
            path, timeout=6, interval=1, log=statuses.append, clock=lambda: now[0], sleep=sleep
        )
    assert error.value.exit_code == ExitCode.RANK_TABLE_TIMEOUT == 75
    assert str(path) in str(error.value) and "last seen: status 'initializing'" in str(error.value)
    assert [s.split(": ", 1)[1] for s in statuses] == [
        "file missing", "not valid JSON (being rewritten?)", "status 'initializing'"
    ]
    assert now[0] == 6


def test_a_malformed_completed_table_fails_at_once(tmp_path: Path) -> None:
    path = tmp_path / "hccl.json"
    doc = _table()
    doc["server_list"][0]["device"][0]["rank_id"] = "99"
    _write(path, doc)
    with pytest.raises(ConfigError, match=r"hccl\.json.*rank_id"):
        launcher.wait_for_rank_table(path, timeout=30, interval=0.05)


def test_launch_waits_for_the_table_then_starts_every_device(tmp_path: Path, launch_process) -> None:
    path, out = tmp_path / "hccl.json", tmp_path / "env"
    out.mkdir()
    _write(path, {"status": "initializing"})
    proc, output = launch_process(_pod_env(1, path), "--", *child_argv("env", str(out)))
    output.wait_for(lambda lines: any("status 'initializing'" in line for line in lines))
    assert proc.poll() is None
    _write(path, _table())
    assert proc.wait(timeout=60) == 0, output.text()
    envs = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert sorted(envs) == sorted(f"rank{r}" for r in range(8, 16))
    for rank in range(8, 16):
        env = envs[f"rank{rank}"]
        assert (env["RANK_ID"], env["DEVICE_ID"], env["RANK_SIZE"]) == (str(rank), str(rank - 8), "16")
    assert f"rank table {path} completed: 16 ranks" in output.text()
    assert "[rank 15] hello from rank15" in output.text()


def test_launch_times_out_with_exit_75(tmp_path: Path, launch_process) -> None:
    path = tmp_path / "hccl.json"
    _write(path, {"status": "initializing"})
    env = _pod_env(0, path, **{le.RANK_TABLE_TIMEOUT: 1})
    proc, output = launch_process(env, "--", *child_argv("env", str(tmp_path)))
    assert proc.wait(timeout=30) == 75
    text = output.text()
    assert f"rank table {path} did not reach status 'completed' within 1s" in text
    assert "last seen: status 'initializing'" in text
    assert not list(tmp_path.glob("rank*.json")), "no trainer may start without the table"


def test_sigterm_while_waiting_for_the_table_ends_the_launch(tmp_path: Path, launch_process) -> None:
    path = tmp_path / "hccl.json"
    _write(path, {"status": "initializing"})
    proc, output = launch_process(_pod_env(0, path), "--", *child_argv("env", str(tmp_path)))
    output.wait_for(lambda lines: any("status 'initializing'" in line for line in lines))
    proc.terminate()
    assert proc.wait(timeout=30) == 143


def test_a_single_server_table_outside_kubernetes_needs_no_pod_identity(tmp_path: Path) -> None:
    doc = _table()
    doc["server_list"], doc["server_count"] = doc["server_list"][:1], "1"
    env = _pod_env(0, tmp_path / "hccl.json", **{le.REPLICAS: 1})
    del env[le.POD_IP], env[le.POD_NAME]
    specs = launcher.plan_processes(env, parse_rank_table(doc))
    assert [(s.env[le.RANK_ID], s.env[le.DEVICE_ID]) for s in specs] == [(str(d), str(d)) for d in range(8)]
    two = parse_rank_table(_table())
    with pytest.raises(ConfigError, match="no server for this pod"):
        launcher.plan_processes(env | {le.REPLICAS: "2"}, two)


# ----------------------------------------------------------------------------- device ids in a pod


def _ascend_pod(name: str, ip: str, index: int, cards: list[int]) -> dict:
    """A pod as the Ascend device plugin leaves it (REFERENCE §3): the allocated cards in the
    `huawei.com/Ascend910` annotation and, with their IPs, in the ascend-910-configuration JSON."""
    config = {
        "pod_name": str(index),
        "server_id": f"node-{index}",
        "devices": [{"device_id": str(c), "device_ip": f"192.168.{index}.{c}"} for c in cards],
    }
    return {
        "metadata": {
            "name": name,
            "labels": {"training.mindspore.io/replica-index": str(index)},
            "annotations": {
                "huawei.com/Ascend910": ",".join(f"Ascend910-{c}" for c in cards),
                "ascend.kubectl.kubernetes.io/ascend-910-configuration": json.dumps(config),
            },
        },
        "status": {"podIP": ip},
    }


@pytest.mark.parametrize(
    "cards",
    [[4, 5, 6, 7], [5], [2, 3], [6, 1]],
    ids=["4-cards-4..7", "1-card-5", "2-cards-2,3", "2-cards-listed-6,1"],
)
def test_in_a_pod_device_id_is_the_logical_card_the_table_keeps_the_physical(tmp_path: Path, cards) -> None:
    """REFERENCE §7: in a container the visible cards are 0..n-1 (MindX-DL's samples set DEVICE_ID=i
    and ASCEND_DEVICE_ID=i); the rank table keeps the plugin's physical device_id for HCCL. Card k
    of the pod is the k-th smallest physical id, so a table listing 6 before 1 maps 6 -> 1, 1 -> 0."""
    from mnv2.ranktable import render_rank_table

    n = len(cards)
    pods = [_ascend_pod("job-0", "10.0.0.10", 0, list(range(n))), _ascend_pod("job-1", "10.0.0.11", 1, cards)]
    table = parse_rank_table(render_rank_table(pods, n, replicas=2))
    server = table.server_list[1]
    assert [d.device_id for d in server.device] == [str(c) for c in cards], "the table keeps physical ids"
    env = _pod_env(1, tmp_path / "hccl.json", **{le.DEVICES_PER_REPLICA: n, le.POD_NAME: "job-1"})
    specs = launcher.plan_processes(env, table)
    logical = {c: str(i) for i, c in enumerate(sorted(cards))}
    assert [s.env[le.RANK_ID] for s in specs] == [str(n + local) for local in range(n)]  # global ranks
    assert [s.env[le.DEVICE_ID] for s in specs] == [logical[c] for c in cards]
    assert [s.env[le.ASCEND_DEVICE_ID] for s in specs] == [logical[c] for c in cards]
    assert sorted(s.env[le.DEVICE_ID] for s in specs) == [str(i) for i in range(n)]
    assert [s.env[le.LOCAL_RANK] for s in specs] == [str(i) for i in range(n)]


def test_the_launched_ranks_get_logical_device_ids(tmp_path: Path, launch_process) -> None:
    """End to end through `mnv2 launch`: a pod on cards 4..7 starts ranks 4..7 on DEVICE_ID 0..3."""
    from mnv2.ranktable import render_rank_table

    path, out = tmp_path / "hccl.json", tmp_path / "env"
    out.mkdir()
    pods = [_ascend_pod(f"job-{i}", f"10.0.0.1{i}", i, [4 * i + c for c in range(4)]) for i in range(2)]
    _write(path, render_rank_table(pods, 4, replicas=2))
    env = _pod_env(1, path, **{le.DEVICES_PER_REPLICA: 4})
    proc, output = launch_process(env, "--", *child_argv("env", str(out)))
    assert proc.wait(timeout=60) == 0, output.text()
    for rank in range(4, 8):
        child = json.loads((out / f"rank{rank}.json").read_text())
        assert (child["RANK_ID"], child["DEVICE_ID"], child["ASCEND_DEVICE_ID"]) == (
            str(rank), str(rank - 4), str(rank - 4)
        )
    assert json.loads(path.read_text())["server_list"][1]["device"][0]["device_id"] == "4"


def test_duplicate_or_non_integer_device_ids_are_named(tmp_path: Path) -> None:
    env = _pod_env(0, tmp_path / "hccl.json")
    doc = _table()
    doc["server_list"][0]["device"][1]["device_id"] = "0"
    with pytest.raises(ConfigError, match=r"hccl\.json: server node-a lists a device_id twice"):
        launcher.plan_processes(env, parse_rank_table(doc))
    doc = _table()
    doc["server_list"][0]["device"][1]["device_id"] = "npu1"
    with pytest.raises(ConfigError, match=r"non-integer device_id.*npu1"):
        launcher.plan_processes(env, parse_rank_table(doc))
