"""OperatorMetrics: Kubeflow-style job counters, jobs by state, latencies, errors, and its endpoint."""

from __future__ import annotations

import urllib.request

import pytest
from mnv2_operator.metrics import METRIC_NAMES, METRICS, OperatorMetrics
from obs_helpers import exported_names, free_port
from prometheus_client.parser import text_string_to_metric_families


def series(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def get(text: str, name: str, **labels: str) -> float | None:
    return series(text).get((name, frozenset(labels.items())))


def test_job_lifecycle_counters_carry_namespace_and_platform() -> None:
    m = OperatorMetrics()
    m.job_created("team-a", "Ascend")
    m.job_created("team-a", "Ascend")
    m.job_created("team-b", "GPU")
    m.job_restarted("team-a", "Ascend")
    m.job_failed("team-a", "Ascend")
    m.job_succeeded("team-b", "GPU")
    m.job_deleted("team-b", "GPU")
    t = m.exposition()
    a = {"job_namespace": "team-a", "platform": "Ascend"}
    b = {"job_namespace": "team-b", "platform": "GPU"}
    assert get(t, "mnv2_operator_jobs_created_total", **a) == 2
    assert get(t, "mnv2_operator_jobs_created_total", **b) == 1
    assert get(t, "mnv2_operator_jobs_restarted_total", **a) == 1
    assert get(t, "mnv2_operator_jobs_failed_total", **a) == 1
    assert get(t, "mnv2_operator_jobs_successful_total", **b) == 1
    assert get(t, "mnv2_operator_jobs_deleted_total", **b) == 1
    # Outcome counters of a created job exist at 0, so increase() sees their first event.
    assert get(t, "mnv2_operator_jobs_failed_total", **b) == 0
    assert get(t, "mnv2_operator_jobs_successful_total", **a) == 0


def test_jobs_by_state_is_replaced_not_merged() -> None:
    m = OperatorMetrics()
    m.set_jobs_by_state({("ns", "GPU", "Created"): 2, ("ns", "GPU", "Running"): 1})
    t = m.exposition()
    assert get(t, "mnv2_operator_jobs", job_namespace="ns", platform="GPU", state="Created") == 2
    assert get(t, "mnv2_operator_jobs", job_namespace="ns", platform="GPU", state="Running") == 1
    m.set_jobs_by_state({("ns", "GPU", "Running"): 3})
    t = m.exposition()
    assert get(t, "mnv2_operator_jobs", job_namespace="ns", platform="GPU", state="Created") is None
    assert get(t, "mnv2_operator_jobs", job_namespace="ns", platform="GPU", state="Running") == 3


def test_latency_histograms_and_reconcile_errors() -> None:
    m = OperatorMetrics()
    m.observe_time_to_running("ns", "CPU", 42.0)
    m.observe_pending("ns", "CPU", 7.0)
    m.observe_pending("ns", "CPU", 700.0)
    m.observe_rank_table_render(0.0003)
    m.reconcile_error("create_job")
    m.reconcile_error("create_job")
    m.reconcile_error("progress_timer")
    t = m.exposition()
    lab = {"job_namespace": "ns", "platform": "CPU"}
    assert get(t, "mnv2_operator_time_to_running_seconds_sum", **lab) == 42.0
    assert get(t, "mnv2_operator_time_to_running_seconds_bucket", le="30.0", **lab) == 0
    assert get(t, "mnv2_operator_time_to_running_seconds_bucket", le="60.0", **lab) == 1
    assert get(t, "mnv2_operator_pod_pending_seconds_count", **lab) == 2
    assert get(t, "mnv2_operator_pod_pending_seconds_bucket", le="10.0", **lab) == 1
    assert get(t, "mnv2_operator_rank_table_render_seconds_count") == 1
    assert get(t, "mnv2_operator_rank_table_render_seconds_bucket", le="0.0005") == 1
    assert get(t, "mnv2_operator_reconcile_errors_total", handler="create_job") == 2
    assert get(t, "mnv2_operator_reconcile_errors_total", handler="progress_timer") == 1


def test_declared_names_match_the_registry() -> None:
    m = OperatorMetrics()
    names = exported_names(m.registry)
    plain = {n for n in names if not n.endswith(("_bucket", "_sum", "_count"))}
    histograms = {n.removesuffix("_bucket") for n in names if n.endswith("_bucket")}
    assert set(METRIC_NAMES) == plain | histograms


def test_module_instance_and_fresh_instances_are_independent() -> None:
    assert isinstance(METRICS, OperatorMetrics)
    m = OperatorMetrics()
    m.job_created("iso", "CPU")
    assert 'job_namespace="iso"' not in METRICS.exposition()


def test_serve_over_http_on_loopback() -> None:
    m = OperatorMetrics()
    m.serve(0)  # disabled: nothing happens
    assert m.url is None
    port = free_port()
    m.serve(port, addr="127.0.0.1")
    try:
        m.serve(port, addr="127.0.0.1")  # second call is a no-op, not "address in use"
        m.job_created("web", "GPU")
        with urllib.request.urlopen(m.url, timeout=5) as resp:
            body = resp.read().decode()
        assert get(body, "mnv2_operator_jobs_created_total", job_namespace="web", platform="GPU") == 1
        other = OperatorMetrics()
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            other.serve(port, addr="127.0.0.1")
    finally:
        m.close()
    assert m.url is None
