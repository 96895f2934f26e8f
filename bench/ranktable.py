"""Rank-table rendering time for a large Ascend job (pure function, in process)."""

from __future__ import annotations

import json
import statistics
import time
from typing import Any


def ascend_pods(servers: int, devices: int) -> list[dict[str, Any]]:
    """Pods as the operator observes them once the device plugin has annotated every one."""
    from mnv2.ranktable import DEVICE_ANNOTATIONS, REPLICA_INDEX_LABEL

    pods = []
    for s in range(servers):
        annotation = {
            "pod_name": str(s),
            "server_id": f"10.{s // 250}.{s % 250}.1",
            "devices": [{"device_id": str(d), "device_ip": f"192.{s // 250}.{s % 250}.{d + 10}"}
                        for d in range(devices)],
        }
        pods.append({
            "metadata": {
                "name": f"job-worker-{s}",
                "labels": {REPLICA_INDEX_LABEL: str(s)},
                "annotations": {DEVICE_ANNOTATIONS[0]: json.dumps(annotation)},
            },
            "status": {"podIP": f"10.244.{s // 250}.{s % 250}"},
        })
    return pods[::-1]  # the API returns pods in no useful order: make the renderer sort them


def bench_rank_table(servers: int = 512, devices: int = 8, repeats: int = 7) -> dict[str, Any]:
    from mnv2.ranktable import render_rank_table

    pods = ascend_pods(servers, devices)
    times, dump_times = [], []
    table: dict[str, Any] = {}
    for _ in range(repeats):
        start = time.perf_counter()
        table = render_rank_table(pods, devices)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        text = json.dumps(table)
        dump_times.append(time.perf_counter() - start)
    if table.get("status") != "completed" or len(table["server_list"]) != servers:
        raise RuntimeError(f"rank table for {servers} servers did not complete: {str(table)[:200]}")
    last = table["server_list"][-1]["device"][-1]["rank_id"]
    if last != str(servers * devices - 1):
        raise RuntimeError(f"last rank id {last}, expected {servers * devices - 1}")
    return {
        "servers": servers, "devices": devices, "render_median_s": statistics.median(times),
        "json_median_s": statistics.median(dump_times), "json_bytes": len(text), "repeats": repeats,
    }
