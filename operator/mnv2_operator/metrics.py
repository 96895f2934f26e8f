"""Prometheus metrics of the operator: job lifecycle counts, job states, latencies, reconcile errors.

Handlers call the module-level `METRICS`; `mnv2 operator` calls `METRICS.serve(port)`. Counters are
named like Kubeflow's training operator (`*_jobs_*_total{job_namespace,platform}`) so dashboards
built for it read the same way. No kopf import: the class is driven directly in tests.
"""

from __future__ import annotations

import threading

from mnv2.metrics_http import MetricsServer
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# The `*_created` timestamp series double the series count and nothing reads them; this is a
# per-process switch, which suits both the trainer and the operator process.
disable_created_metrics()

PREFIX = "mnv2_operator_"
JOB_LABELS = ("job_namespace", "platform")

# From seconds (pods already pulled on a warm node) to an hour (a queue waiting for accelerators).
WAIT_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
# Rendering a rank table is pure Python over a handful of pods: sub-millisecond to a few ms.
RENDER_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
# One reconciliation pass: a few ms from cache to seconds when the API server is slow.
PASS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Every metric this module exports (full exposition names of the families), for drift checks.
METRIC_NAMES: tuple[str, ...] = tuple(
    PREFIX + n
    for n in (
        "jobs_created_total",
        "jobs_successful_total",
        "jobs_failed_total",
        "jobs_restarted_total",
        "jobs_deleted_total",
        "jobs",
        "time_to_running_seconds",
        "pod_pending_seconds",
        "rank_table_render_seconds",
        "reconcile_errors_total",
        "reconcile_duration_seconds",
        "queue_wait_seconds",
        "queue_depth",
        "api_requests_total",
        "cache_objects",
    )
)


class OperatorMetrics:
    """All operator metrics in one registry of their own (so tests can make fresh instances)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry

        def jobs_counter(event: str, doc: str) -> Counter:
            return Counter(f"{PREFIX}jobs_{event}", doc, JOB_LABELS, registry=r)

        self.created = jobs_counter("created", "MobileNetV2TrainJobs the operator has started handling.")
        self.successful = jobs_counter("successful", "Jobs that finished with phase Succeeded.")
        self.failed = jobs_counter("failed", "Jobs that finished with phase Failed.")
        self.restarted = jobs_counter("restarted", "Times a job's pods were recreated after a failure.")
        self.deleted = jobs_counter("deleted", "Jobs deleted by users or by TTL after finishing.")
        self.jobs = Gauge(
            PREFIX + "jobs",
            "Jobs per state, as last counted by the operator.",
            (*JOB_LABELS, "state"),
            registry=r,
        )
        self.time_to_running = Histogram(
            PREFIX + "time_to_running_seconds",
            "Time from a job's creation until all its pods were running.",
            JOB_LABELS,
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.pod_pending = Histogram(
            PREFIX + "pod_pending_seconds",
            "Time a job's pod spent in phase Pending before it started (or the job gave up).",
            JOB_LABELS,
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.rank_table_render = Histogram(
            PREFIX + "rank_table_render_seconds",
            "Time to render an Ascend rank table from the observed pods.",
            buckets=RENDER_BUCKETS,
            registry=r,
        )
        self.reconcile_errors = Counter(
            PREFIX + "reconcile_errors",
            "Handler runs that raised an error, by handler.",
            ("handler",),
            registry=r,
        )
        self.reconcile_duration = Histogram(
            PREFIX + "reconcile_duration_seconds",
            "Time one reconciliation pass of one job took.",
            buckets=PASS_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            PREFIX + "queue_wait_seconds",
            "Time from a job being woken (event or deadline) until its pass started.",
            buckets=PASS_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            PREFIX + "queue_depth", "Jobs woken and waiting for their pass to start.", registry=r
        )
        self.api_requests = Counter(
            PREFIX + "api_requests",
            "Requests the operator's own client made to the API server (kopf's watches excluded).",
            ("verb", "resource", "code"),
            registry=r,
        )
        self.cache_objects = Gauge(
            PREFIX + "cache_objects",
            "Entries in the operator's in-memory caches, by cache.",
            ("cache",),
            registry=r,
        )
        self._lock = threading.Lock()
        self._http: MetricsServer | None = None

    # ---- job lifecycle -----------------------------------------------------------------------
    def job_created(self, namespace: str, platform: str) -> None:
        """Count the job and make its (namespace, platform) outcome counters exist at 0.

        A counter series born at its first increment hides that increment from `increase()`, so
        the MNV2JobFailed alert would miss the first failure of a new namespace or platform.
        """
        self.created.labels(namespace, platform).inc()
        for counter in (self.successful, self.failed, self.restarted, self.deleted):
            counter.labels(namespace, platform)

    def job_succeeded(self, namespace: str, platform: str) -> None:
        self.successful.labels(namespace, platform).inc()

    def job_failed(self, namespace: str, platform: str) -> None:
        self.failed.labels(namespace, platform).inc()

    def job_restarted(self, namespace: str, platform: str) -> None:
        self.restarted.labels(namespace, platform).inc()

    def job_deleted(self, namespace: str, platform: str) -> None:
        self.deleted.labels(namespace, platform).inc()

    def set_jobs_by_state(self, counts: dict[tuple[str, str, str], int]) -> None:
        """Replace the whole jobs-by-state gauge with a fresh count keyed (namespace, platform, state).

        Replaced rather than updated so a state no job is in any more drops to absent, not stale.
        """
        with self._lock:
            self.jobs.clear()
            for (namespace, platform, state), n in counts.items():
                self.jobs.labels(namespace, platform, state).set(n)

    # ---- latencies and errors ----------------------------------------------------------------
    def observe_time_to_running(self, namespace: str, platform: str, seconds: float) -> None:
        self.time_to_running.labels(namespace, platform).observe(max(seconds, 0.0))

    def observe_pending(self, namespace: str, platform: str, seconds: float) -> None:
        self.pod_pending.labels(namespace, platform).observe(max(seconds, 0.0))

    def observe_rank_table_render(self, seconds: float) -> None:
        self.rank_table_render.observe(max(seconds, 0.0))

    def reconcile_error(self, handler: str) -> None:
        self.reconcile_errors.labels(handler).inc()

    def observe_pass(self, seconds: float, waited: float | None = None) -> None:
        self.reconcile_duration.observe(max(seconds, 0.0))
        if waited is not None:
            self.queue_wait.observe(max(waited, 0.0))

    def api_request(self, verb: str, resource: str, code: int) -> None:
        self.api_requests.labels(verb, resource, str(code)).inc()

    def set_cache_sizes(self, sizes: dict[str, int]) -> None:
        for cache, size in sizes.items():
            self.cache_objects.labels(cache).set(size)

    def passes(self) -> int:
        """How many reconciliation passes this process ran (tests count resyncs with it)."""
        return int(
            sum(
                s.value
                for m in self.reconcile_duration.collect()
                for s in m.samples
                if s.name.endswith("_count")
            )
        )

    def requests(self, verbs: tuple[str, ...] = ("create", "patch", "update", "delete")) -> int:
        """Requests of these verbs made so far (default: writes)."""
        return int(
            sum(
                s.value
                for m in self.api_requests.collect()
                for s in m.samples
                if s.name.endswith("_total") and s.labels.get("verb") in verbs
            )
        )

    # ---- serving -----------------------------------------------------------------------------
    def exposition(self) -> str:
        """The text Prometheus would scrape (tests, debugging)."""
        return generate_latest(self.registry).decode()

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve /metrics on `port` (0 or negative: do nothing); a second call is a no-op."""
        if port <= 0 or self._http is not None:
            return
        self._http = MetricsServer(self.registry, addr, port, what="operator metrics")

    @property
    def url(self) -> str | None:
        """The scrape URL on loopback, or None when not serving."""
        return self._http.url if self._http is not None else None

    def close(self) -> None:
        """Stop serving (idempotent)."""
        http, self._http = self._http, None
        if http is not None:
            http.close()


METRICS = OperatorMetrics()
