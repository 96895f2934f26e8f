"""Every mnv2_* name and label the dashboard and the alerts use is one the programs export.

The exported set is read from the live registries of TrainerMetrics and OperatorMetrics, so renaming
a metric in code without updating the chart's files (or the other way round) fails here.
"""

from __future__ import annotations

import pytest
from mnv2.trainer_metrics import TrainerMetrics
from mnv2_operator.metrics import OperatorMetrics
from obs_helpers import exported_names
from obs_promql import alert_exprs, dashboard_exprs, metric_names, selector_labels
from prometheus_client import CollectorRegistry

# Labels Prometheus itself attaches to every scraped series (PodMonitor/ServiceMonitor targets).
TARGET_LABELS = {"namespace", "pod", "container", "endpoint", "instance", "service"}


def driven_registries() -> list[CollectorRegistry]:
    """Both registries with every hook called once, so every labelled child exists."""
    t = TrainerMetrics(0, rank=0, job="j")
    t.set_plan(epochs=1, steps_per_epoch=1, batch_size=1, world_size=1)
    t.on_step(
        epoch=1,
        step=1,
        global_step=1,
        loss=1.0,
        lr=0.1,
        step_seconds=0.1,
        data_wait_seconds=0.0,
        images=1,
        loss_scale=1.0,
        overflow=True,
    )
    t.on_epoch_end(epoch=1, images_per_second=1.0, avg_loss=1.0)
    t.on_eval(top1=0.5, top5=0.5)
    t.on_checkpoint(seconds=0.1)
    o = OperatorMetrics()
    for hook in (o.job_created, o.job_succeeded, o.job_failed, o.job_restarted, o.job_deleted):
        hook("ns", "CPU")
    o.set_jobs_by_state({("ns", "CPU", "Running"): 1})
    o.observe_time_to_running("ns", "CPU", 1.0)
    o.observe_pending("ns", "CPU", 1.0)
    o.observe_rank_table_render(0.001)
    o.reconcile_error("h")
    return [t.registry, o.registry]


def exported() -> set[str]:
    names: set[str] = set()
    for reg in (TrainerMetrics(0).registry, OperatorMetrics().registry):
        names |= exported_names(reg)
    return names


def exported_labels() -> dict[str, set[str]]:
    """Label names per series name (histogram suffixes included), from real samples."""
    labels: dict[str, set[str]] = {}
    for reg in driven_registries():
        for fam in reg.collect():
            for s in fam.samples:
                labels.setdefault(s.name, set()).update(s.labels)
    return labels


QUERIES = {**alert_exprs(), **dashboard_exprs()}


def unknown_names(promql: str, known: set[str]) -> set[str]:
    return metric_names(promql) - known


def test_queries_were_found() -> None:
    assert len(alert_exprs()) == 5
    assert len(dashboard_exprs()) >= 15
    used = set().union(*(metric_names(q) for q in QUERIES.values()))
    assert any(n.startswith("mnv2_trainer_") for n in used)
    assert any(n.startswith("mnv2_operator_") for n in used)


@pytest.mark.parametrize("where", sorted(QUERIES))
def test_metric_names_exist(where: str) -> None:
    missing = unknown_names(QUERIES[where], exported())
    assert not missing, f"{where} uses {sorted(missing)}, which no program exports"


@pytest.mark.parametrize("where", sorted(QUERIES))
def test_selector_labels_exist(where: str) -> None:
    labels = exported_labels()
    bad = {
        (metric, label)
        for metric, label in selector_labels(QUERIES[where])
        if label not in labels.get(metric, set()) | TARGET_LABELS
    }
    assert not bad, f"{where} selects on labels the series do not have: {sorted(bad)}"


def test_the_check_catches_drift() -> None:
    """The checker itself: a misspelt name and a wrong label are reported."""
    known = exported()
    assert unknown_names("rate(mnv2_trainer_image_total[5m])", known) == {"mnv2_trainer_image_total"}
    assert (
        unknown_names("histogram_quantile(0.9, rate(mnv2_trainer_step_duration_seconds_bucket[1m]))", known)
        == set()
    )
    assert unknown_names("mnv2_trainer_loss_bucket", known) == {"mnv2_trainer_loss_bucket"}  # a gauge
    labels = exported_labels()
    assert "job_namespace" in labels["mnv2_operator_jobs_failed_total"]
    assert "namespace" not in labels["mnv2_operator_jobs_failed_total"]
    assert selector_labels('mnv2_operator_jobs{namespace="x", state!="y"}') == {
        ("mnv2_operator_jobs", "namespace"),
        ("mnv2_operator_jobs", "state"),
    }
