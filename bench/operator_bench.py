"""Operator benchmarks (job-creation latency, API requests per job, operator memory).

These need the end-to-end harness (tests/e2e: the API-server double, the kubelet simulator and the
real kopf operator). Until that harness offers a programmatic entry point for many jobs, the
section says so instead of inventing numbers.
"""

from __future__ import annotations

from typing import Any


def section(report: Any, quick: bool) -> None:
    report.add(
        "Operator: job-creation latency and memory",
        "Not measured in this run: the end-to-end harness (`tests/e2e/harness.py`) was still being "
        "written when these benchmarks were; 1x64-replica and 200x2-replica job-creation latency, API "
        "requests per job and operator RSS with 200 jobs are to be added on top of it.",
    )
