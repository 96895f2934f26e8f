"""A real Prometheus scrapes a TrainerMetrics and an OperatorMetrics over loopback, fed live.

PromQL then returns the expected series with sensible values, the alert rules fire on real scraped
data (NaN loss, a failed job) and not on a healthy trainer, and every dashboard query is valid
PromQL that returns data.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from mnv2.progress import fetch_progress
from mnv2.trainer_metrics import TrainerMetrics
from mnv2_operator.metrics import OperatorMetrics
from obs_helpers import ALERTS, free_port
from obs_prom import PrometheusServer, finite, running_prometheus, values
from obs_promql import dashboard_exprs

BATCH = 32
STEP_SECONDS = 0.05
EPOCHS, STEPS_PER_EPOCH = 100, 100


class Feed:
    """Calls the trainer hooks like a training loop would, from a thread, until stopped."""

    def __init__(self, metrics: TrainerMetrics, loss: float | None = None) -> None:
        self.metrics = metrics
        self.fixed_loss = loss
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        m = self.metrics
        m.set_plan(epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH, batch_size=BATCH, world_size=1)
        m.on_eval(top1=0.25, top5=0.6)
        m.on_checkpoint(seconds=0.2)
        step = 0
        while not self.stop_event.wait(STEP_SECONDS):
            step += 1
            loss = self.fixed_loss if self.fixed_loss is not None else 0.1 + 2.5 * math.exp(-step / 300)
            m.on_step(
                epoch=step // STEPS_PER_EPOCH + 1,
                step=step % STEPS_PER_EPOCH + 1,
                global_step=step,
                loss=loss,
                lr=0.05 * min(1.0, step / 100),
                step_seconds=STEP_SECONDS,
                data_wait_seconds=0.005,
                images=BATCH,
                loss_scale=1024.0,
                overflow=step % 50 == 0,
            )

    def __enter__(self) -> Feed:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[PrometheusServer, TrainerMetrics, OperatorMetrics]]:
    trainer = TrainerMetrics(free_port(), rank=0, job="synthetic", addr="127.0.0.1")
    diverged = TrainerMetrics(free_port(), rank=0, job="nanjob", addr="127.0.0.1")
    operator = OperatorMetrics()
    operator.serve(free_port(), addr="127.0.0.1")
    operator.job_created("ml", "GPU")
    operator.set_jobs_by_state({("ml", "GPU", "Running"): 2, ("ml", "CPU", "Succeeded"): 1})
    operator.observe_time_to_running("ml", "GPU", 12.0)
    operator.observe_pending("ml", "GPU", 3.0)
    operator.observe_rank_table_render(0.0004)
    operator.reconcile_error("create_job")

    def hostport(url: str | None) -> str:
        assert url is not None
        return url.removeprefix("http://").removesuffix("/metrics")

    scrape_jobs = {
        # honor_labels: the trainer's `job` label (the job's name) wins over the scrape job's, as
        # with the chart's PodMonitor (honorLabels: true).
        "mnv2-trainers": {
            "honor_labels": True,
            "static_configs": [{"targets": [hostport(trainer.url), hostport(diverged.url)]}],
        },
        "mnv2-operator": {"static_configs": [{"targets": [hostport(operator.url)]}]},
    }
    try:
        with (
            Feed(trainer),
            Feed(diverged, loss=float("nan")),
            running_prometheus(tmp_path, scrape_jobs, rule_files=[ALERTS]) as prom,
        ):
            yield prom, trainer, operator
    finally:
        trainer.close()
        diverged.close()
        operator.close()


def test_prometheus_scrapes_trainer_and_operator(live) -> None:
    prom, trainer, _operator = live
    # Loss: present, finite, positive, under the job's own name.
    loss = prom.wait_for('mnv2_trainer_loss{job="synthetic"}', finite)
    assert len(loss) == 1 and 0 < values(loss)[0] < 10
    assert loss[0]["metric"]["rank"] == "0"
    assert re.fullmatch(r"127\.0\.0\.1:\d+", loss[0]["metric"]["instance"])

    # Global step increases between scrapes, and never passes the plan.
    first = values(prom.wait_for('mnv2_trainer_global_step{job="synthetic"}'))[0]
    later = prom.wait_for(
        'mnv2_trainer_global_step{job="synthetic"}', lambda r: bool(r) and values(r)[0] > first
    )
    assert values(later)[0] <= values(prom.query('mnv2_trainer_total_steps{job="synthetic"}'))[0]
    assert values(prom.query('mnv2_trainer_total_steps{job="synthetic"}')) == [EPOCHS * STEPS_PER_EPOCH]

    # Throughput from the counter: positive, and no more than the feed could produce.
    rate = prom.wait_for(
        'rate(mnv2_trainer_images_total{job="synthetic"}[5s])', lambda r: bool(r) and values(r)[0] > 0
    )
    assert 0 < values(rate)[0] <= 1.5 * BATCH / STEP_SECONDS

    # Step-time histogram: the p50 is the step time the feed reports (within its bucket).
    p50 = prom.wait_for(
        "histogram_quantile(0.5, sum by (le) (rate(mnv2_trainer_step_duration_seconds_bucket"
        '{job="synthetic"}[5s])))',
        finite,
    )
    assert 0.025 <= values(p50)[0] <= 0.1

    # Accuracy as ratios, checkpoint time in the recent past.
    assert values(prom.query('mnv2_trainer_top1_accuracy{job="synthetic"}')) == [0.25]
    age = values(prom.query('time() - mnv2_trainer_last_checkpoint_timestamp_seconds{job="synthetic"}'))[0]
    assert 0 <= age < 300

    # Operator: Kubeflow-style counters and the state gauge.
    created = prom.wait_for("mnv2_operator_jobs_created_total")
    assert created[0]["metric"]["job_namespace"] == "ml" and created[0]["metric"]["platform"] == "GPU"
    assert values(created) == [1]
    running = prom.wait_for('mnv2_operator_jobs{state="Running"}')
    assert values(running) == [2]
    assert values(prom.query('mnv2_operator_reconcile_errors_total{handler="create_job"}')) == [1]

    # What status.progress would show agrees with what Prometheus stored.
    progress = fetch_progress(trainer.url, timeout=5)
    assert progress.total_steps == EPOCHS * STEPS_PER_EPOCH
    assert progress.step is not None and progress.step >= values(later)[0]
    assert progress.images_per_second and progress.images_per_second > 0


def test_alerts_fire_on_scraped_data(live) -> None:
    prom, _trainer, operator = live

    # The NaN feed trips MNV2LossNaN.
    prom.wait_for_alert("MNV2LossNaN", job="nanjob", rank="0")
    # A job fails after the operator's counter was scraped at 0: MNV2JobFailed fires.
    prom.wait_for('mnv2_operator_jobs_failed_total{job_namespace="ml"}')
    operator.job_failed("ml", "GPU")
    prom.wait_for_alert("MNV2JobFailed", job_namespace="ml", platform="GPU")
    # The healthy trainer fires nothing. (MNV2NoProgress may be *pending* right after the first
    # scrape, when one sample shows no change yet; its `for:` is what keeps that from firing.)
    noisy = [a for a in prom.alerts() if a["labels"].get("job") == "synthetic" and a["state"] == "firing"]
    assert noisy == []


def test_flush_returns_once_prometheus_scraped_the_last_update(live) -> None:
    """What a diverging trainer does before exiting 67: wait for a real scrape of its NaN loss."""
    prom, trainer, _operator = live
    prom.wait_for('up{job="mnv2-trainers"} == 1')
    assert trainer.flush(timeout=20) is True


def concrete(expr: str) -> str:
    """A dashboard query as Grafana would send it with "All" selected."""
    expr = re.sub(r"label_values\((.*),\s*\w+\)$", r"\1", expr)  # variable queries: the series
    return expr.replace("$namespace", ".*").replace("$job", ".*").replace("$__rate_interval", "15s")


def test_every_dashboard_query_runs_and_returns_data(live) -> None:
    prom, _trainer, operator = live
    operator.job_restarted("ml", "GPU")
    operator.job_succeeded("ml", "GPU")
    operator.job_deleted("ml", "GPU")
    prom.wait_for('mnv2_trainer_global_step{job="synthetic"} > 20')  # enough samples for rates
    empty = {}
    for where, expr in dashboard_exprs().items():
        try:
            prom.wait_for(concrete(expr), timeout=20)
        except AssertionError as exc:  # keep going: report every empty panel at once
            empty[where] = str(exc).splitlines()[0]
    assert not empty, empty


def test_targets_are_healthy(live) -> None:
    prom, *_ = live
    prom.wait_for("up", lambda r: len(r) == 3 and all(v == 1 for v in values(r)))
    assert set(prom.targets_health().values()) == {"up"}


@pytest.mark.parametrize("tool", ["prometheus", "promtool"])
def test_missing_binary_fails_with_an_install_hint(monkeypatch: pytest.MonkeyPatch, tool: str) -> None:
    import obs_tools

    monkeypatch.setattr(obs_tools.shutil, "which", lambda _name: None)
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y prometheus"):
        obs_tools.require(tool)


def test_prometheus_log_is_reported_on_bad_config(tmp_path: Path) -> None:
    server = PrometheusServer(tmp_path, {"bad": {"scrape_interval": "banana"}})
    with pytest.raises(RuntimeError, match="prometheus exited"):
        try:
            server.start(timeout=30)
        finally:
            server.stop()
