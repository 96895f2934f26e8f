"""The Ascend rank table against golden dicts (REFERENCE §3), and `mnv2 ranktable` on a PodList."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from api_builders import ascend_pod
from mnv2.ranktable import (
    RankTable,
    RankTableError,
    initializing,
    load_rank_table,
    parse_rank_table,
    render_rank_table,
)

GOLDEN_2x8 = {
    "version": "1.0",
    "status": "completed",
    "server_count": "2",
    "server_list": [
        {
            "server_id": "192.168.0.10",
            "container_ip": "172.16.0.2",
            "device": [
                {"device_id": str(d), "device_ip": f"10.0.0.{d}", "rank_id": str(d)} for d in range(8)
            ],
            "host_nic_ip": "reserve",
        },
        {
            "server_id": "192.168.0.11",
            "container_ip": "172.16.0.3",
            "device": [
                {"device_id": str(d), "device_ip": f"10.1.0.{d}", "rank_id": str(8 + d)} for d in range(8)
            ],
            "host_nic_ip": "reserve",
        },
    ],
}


def test_two_pods_of_eight_devices_match_the_golden_table():
    table = render_rank_table([ascend_pod("demo", 0), ascend_pod("demo", 1)], 8)
    assert table == GOLDEN_2x8
    assert json.loads(json.dumps(table)) == GOLDEN_2x8  # plain JSON, every count and id a string


def test_servers_are_ordered_by_replica_index_not_by_list_order():
    table = render_rank_table([ascend_pod("demo", 1), ascend_pod("demo", 0)], 8)
    assert table == GOLDEN_2x8


def test_unlabelled_pods_take_their_list_position_as_rank():
    pods = [ascend_pod("demo", 0), ascend_pod("demo", 1)]
    for pod in pods:
        del pod["metadata"]["labels"]["training.mindspore.io/replica-index"]
    assert render_rank_table(pods, 8) == GOLDEN_2x8
    swapped = render_rank_table(pods[::-1], 8)
    assert [s["container_ip"] for s in swapped["server_list"]] == ["172.16.0.3", "172.16.0.2"]
    assert swapped["server_list"][0]["device"][0]["rank_id"] == "0"


@pytest.mark.parametrize(
    "pods, replicas",
    [
        ([ascend_pod("demo", 0)], 2),  # replica 1 not created yet
        ([ascend_pod("demo", 0), ascend_pod("demo", 2)], None),  # a gap in the indices
        ([ascend_pod("demo", 0), ascend_pod("demo", 1, annotate=False)], 2),  # device plugin not done
        ([ascend_pod("demo", 0), ascend_pod("demo", 1, ip="")], 2),  # no pod IP yet
        ([ascend_pod("demo", 0, replicas=2)], None),  # the pods' own MNV2_REPLICAS says 2
        ([], 2),
    ],
    ids=["missing", "gap", "unannotated", "no-ip", "env-replicas", "none"],
)
def test_incomplete_replicas_give_initializing(pods, replicas):
    assert render_rank_table(pods, 8, replicas=replicas) == initializing() == {"status": "initializing"}


def test_a_terminating_pod_gives_initializing():
    pods = [ascend_pod("demo", 0), ascend_pod("demo", 1)]
    pods[1]["metadata"]["deletionTimestamp"] = "2026-11-27T12:00:00Z"
    assert render_rank_table(pods, 8) == initializing()


@pytest.mark.parametrize(
    "annotation, fragment",
    [
        ("{not json", "is not JSON"),
        ('["a list"]', "must be a JSON object"),
        ('{"server_id": "n1"}', "'devices' must be a non-empty list"),
        ('{"devices": [{"device_id": "0"}]}', "needs device_id and device_ip"),
        ('{"devices": [{"device_id": "0", "device_ip": "10.0.0.1"}]}', "lists 1 devices"),
    ],
)
def test_a_malformed_annotation_is_an_error_naming_the_pod(annotation, fragment):
    pods = [ascend_pod("demo", 0), ascend_pod("demo", 1)]
    pods[1]["metadata"]["annotations"]["ascend.kubectl.kubernetes.io/ascend-910-configuration"] = annotation
    with pytest.raises(RankTableError, match=r"pod demo-1: .*" + re.escape(fragment)):
        render_rank_table(pods, 8)


def test_duplicate_replica_index_is_an_error():
    with pytest.raises(RankTableError, match="demo-0 and demo-0 have the same replica index 0"):
        render_rank_table([ascend_pod("demo", 0), ascend_pod("demo", 0)], 8)


def test_server_id_falls_back_to_the_pod_name():
    table = render_rank_table([ascend_pod("demo", 0, devices=2, server_id="")], 2)
    assert table["server_list"][0]["server_id"] == "demo-0"


def test_parse_round_trip_and_lookup():
    table = parse_rank_table(GOLDEN_2x8)
    assert isinstance(table, RankTable)
    assert table.rank_size() == 16
    assert table.server_for(pod_ip="172.16.0.3").server_id == "192.168.0.11"
    named = parse_rank_table(render_rank_table([ascend_pod("demo", 0, devices=1, server_id="")], 1))
    assert named.server_for(pod_name="demo-0", pod_ip="10.9.9.9").container_ip == "172.16.0.2"
    with pytest.raises(RankTableError, match="no server for pod demo-7"):
        table.server_for(pod_name="demo-7", pod_ip="10.9.9.9")
    assert parse_rank_table({"status": "initializing"}) is None


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"status": "failed"}, "status must be"),
        ({"version": "1.2"}, "version must be '1.0'"),
        ({"server_count": "3"}, "server_count is 3 but server_list has 2"),
        ({"server_list": []}, "server_count is 2 but server_list has 0"),
        ({"extra": 1}, "extra"),
    ],
)
def test_parse_rejects_bad_tables_naming_the_source(change, fragment):
    with pytest.raises(RankTableError, match=r"^hccl\.json: .*" + fragment):
        parse_rank_table({**GOLDEN_2x8, **change}, source="hccl.json")


def test_parse_rejects_duplicate_rank_ids():
    doc = json.loads(json.dumps(GOLDEN_2x8))
    doc["server_list"][1]["device"][0]["rank_id"] = "0"
    with pytest.raises(RankTableError, match=r"rank_id values must be 0\.\.15"):
        parse_rank_table(doc)


def test_load_rank_table_states(tmp_path):
    path = tmp_path / "hccl.json"
    assert load_rank_table(path) is None  # not mounted yet
    path.write_text("")
    assert load_rank_table(path) is None
    path.write_text(json.dumps(initializing()))
    assert load_rank_table(path) is None
    path.write_text(json.dumps(GOLDEN_2x8))
    assert load_rank_table(path).rank_size() == 16
    path.write_text("{")
    with pytest.raises(RankTableError, match=str(path)):
        load_rank_table(path)


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnv2", "ranktable", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_prints_the_table_of_a_podlist(tmp_path):
    pods = {
        "apiVersion": "v1",
        "kind": "PodList",
        "items": [ascend_pod("demo", 1), ascend_pod("demo", 0), ascend_pod("other", 0, devices=2)],
    }
    path = tmp_path / "pods.json"
    path.write_text(json.dumps(pods))
    result = _cli(str(path), "--job", "demo")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == GOLDEN_2x8


def test_cli_explains_why_a_table_is_initializing():
    pods = {
        "kind": "PodList",
        "items": [ascend_pod("demo", 0, replicas=2), ascend_pod("demo", 1, annotate=False)],
    }
    result = _cli("-", "--devices-per-pod", "8", stdin=json.dumps(pods))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "initializing"}
    assert "pod demo-1: no ascend.kubectl.kubernetes.io/ascend-910-configuration annotation" in result.stderr


def test_cli_malformed_annotation_exits_65_naming_file_and_pod(tmp_path):
    pod = ascend_pod("demo", 0)
    pod["metadata"]["annotations"]["ascend.kubectl.kubernetes.io/ascend-910-configuration"] = "{"
    path = tmp_path / "pods.json"
    path.write_text(json.dumps({"kind": "PodList", "items": [pod]}))
    result = _cli(str(path), "--devices-per-pod", "8")
    assert result.returncode == 65
    assert str(path) in result.stderr and "pod demo-0" in result.stderr
