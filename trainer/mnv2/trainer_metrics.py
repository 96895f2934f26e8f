"""Prometheus metrics of one trainer process, served for Prometheus and read back as progress.

The training loop calls the `on_*` hooks; nothing here imports MindSpore, so the hooks can be driven
(and tested) without a model. Each instance owns its own `CollectorRegistry`, so several trainers
(ranks, tests) can live in one Python process without colliding in the global registry.

Names follow Prometheus conventions: base units (`_seconds`, ratios 0-1), counters end in `_total`.
Every series carries `rank` and `job` labels, so a PodMonitor scraping all ranks of all jobs can
tell them apart. `mnv2.progress.parse_progress` reads this exposition back into `status.progress`.
"""

from __future__ import annotations

import math
import threading
import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from mnv2.metrics_http import MetricsServer

# The `*_created` timestamp series double the series count and nothing reads them; this is a
# per-process switch, which suits both the trainer and the operator process.
disable_created_metrics()

PREFIX = "mnv2_trainer_"
LABELS = ("rank", "job")

# Step times from a few ms (tiny CPU runs) to a minute (a huge batch on a slow device).
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Weight of the newest step in the running throughput estimate: smooths per-step jitter over ~10 steps.
THROUGHPUT_SMOOTHING = 0.2

# Every metric this module exports (full exposition names of the families), for drift checks.
METRIC_NAMES: tuple[str, ...] = tuple(
    PREFIX + n
    for n in (
        "loss",
        "learning_rate",
        "epoch",
        "global_step",
        "total_steps",
        "images_total",
        "step_duration_seconds",
        "data_wait_seconds_total",
        "images_per_second",
        "loss_scale",
        "overflow_total",
        "top1_accuracy",
        "top5_accuracy",
        "checkpoints_saved_total",
        "custom_kernels",
        "last_checkpoint_timestamp_seconds",
    )
)


class TrainerMetrics:
    """The metrics of one trainer process (one rank); `port` > 0 also serves them over HTTP.

    `port` 0 records values without a server (tests, `mnv2 train --metrics_port 0`). `addr` is
    0.0.0.0 so Prometheus can reach the pod IP; tests pass 127.0.0.1.
    """

    def __init__(
        self,
        port: int,
        rank: int = 0,
        job: str = "",
        registry: CollectorRegistry | None = None,
        addr: str = "0.0.0.0",
    ) -> None:
        if port < 0 or port > 65_535:
            raise ValueError(f"metrics port {port} is outside 0-65535")
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.rank = rank
        self.job = job
        self.port = port
        self._labels = {"rank": str(rank), "job": job}
        self._lock = threading.Lock()
        # Update and Prometheus-scrape sequence numbers, for flush(): see _serve.
        self._scraped = threading.Condition()
        self._updates = 0
        self._scraped_through = 0
        self._ips_estimate: float | None = None
        self._http: MetricsServer | None = None

        r = self.registry
        lb = LABELS

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(PREFIX + name, doc, lb, registry=r)

        def counter(name: str, doc: str) -> Counter:
            # prometheus_client appends `_total` itself; pass the family name without it.
            return Counter(PREFIX + name.removesuffix("_total"), doc, lb, registry=r)

        self.loss = gauge("loss", "Training loss of the last step.")
        self.learning_rate = gauge("learning_rate", "Learning rate used by the last step.")
        self.epoch = gauge("epoch", "Current epoch, 0-based like the training log lines.")
        self.global_step = gauge("global_step", "Optimizer steps completed since the start of training.")
        self.total_steps = gauge("total_steps", "Optimizer steps the whole training run will take.")
        self.images = counter(
            "images_total", "Training images the whole job processed (all ranks), counted by this process."
        )
        self.step_duration = Histogram(
            PREFIX + "step_duration_seconds",
            "Wall time of one training step (forward, backward, update); data wait is not included.",
            lb,
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.data_wait = counter("data_wait_seconds_total", "Time this rank spent waiting for input data.")
        self.images_per_second = gauge(
            "images_per_second",
            "Training throughput of the whole job (all ranks): running estimate over recent "
            "steps, replaced by the whole-epoch figure at each epoch end.",
        )
        self.loss_scale = gauge("loss_scale", "Current dynamic loss scale (mixed precision only).")
        self.overflow = counter("overflow_total", "Steps skipped because gradients overflowed.")
        self.top1 = gauge("top1_accuracy", "Top-1 accuracy of the last evaluation, ratio 0-1.")
        self.top5 = gauge("top5_accuracy", "Top-5 accuracy of the last evaluation, ratio 0-1.")
        self.checkpoints = counter("checkpoints_saved_total", "Checkpoints this rank has saved.")
        self.custom_kernels = gauge(
            "custom_kernels",
            "1 when this process runs the project's C++ CPU kernels, 0 when MindSpore's own (not asked, "
            "not CPU, or they could not be built or loaded here: the log says why).",
        )
        self.last_checkpoint = gauge(
            "last_checkpoint_timestamp_seconds", "Unix time at which the last checkpoint was saved."
        )
        # Touch labelled children so counters appear (at 0) before their first increment: a rate()
        # over a series that is born at its first event misses that event.
        for metric in (self.images, self.data_wait, self.overflow, self.checkpoints):
            metric.labels(**self._labels)

        if port > 0:
            self._http = MetricsServer(
                self.registry, addr, port, what="trainer metrics",
                on_prometheus_scrape=self._on_prometheus_scrape,
            )

    # ---- hooks the training loop calls -------------------------------------------------------
    def set_plan(self, *, epochs: int, steps_per_epoch: int, batch_size: int, world_size: int) -> None:
        """Record the size of the run, so progress can be told as a fraction and an ETA."""
        if epochs < 0 or steps_per_epoch < 0 or batch_size < 1 or world_size < 1:
            raise ValueError(
                f"invalid plan: epochs={epochs} steps_per_epoch={steps_per_epoch} "
                f"batch_size={batch_size} world_size={world_size}"
            )
        self.total_steps.labels(**self._labels).set(epochs * steps_per_epoch)
        self._updated()

    def on_step(
        self,
        *,
        epoch: int,
        step: int,
        global_step: int,
        loss: float,
        lr: float,
        step_seconds: float,
        data_wait_seconds: float,
        images: int,
        loss_scale: float | None = None,
        overflow: bool = False,
    ) -> None:
        """Record one finished step.

        `global_step` counts the steps completed including this one (so it equals `total_steps` at
        the end); `epoch` and `step` are 0-based positions like the log lines; `images` is what
        the step consumed across all ranks (batch_size x world_size), so every rank reports the
        job's throughput and dashboards take `max`, not `sum`, over ranks.
        A NaN loss is recorded as NaN on purpose: the MNV2LossNaN alert looks for it.
        """
        lab = self._labels
        with self._lock:
            self.epoch.labels(**lab).set(epoch)
            self.global_step.labels(**lab).set(global_step)
            self.loss.labels(**lab).set(loss)
            self.learning_rate.labels(**lab).set(lr)
            self.step_duration.labels(**lab).observe(max(step_seconds, 0.0))
            self.data_wait.labels(**lab).inc(max(data_wait_seconds, 0.0))
            self.images.labels(**lab).inc(max(images, 0))
            if loss_scale is not None:
                self.loss_scale.labels(**lab).set(loss_scale)
            if overflow:
                self.overflow.labels(**lab).inc()
            if step_seconds > 0 and images > 0:
                current = images / step_seconds
                prev = self._ips_estimate
                est = current if prev is None else prev + THROUGHPUT_SMOOTHING * (current - prev)
                self._ips_estimate = est
                self.images_per_second.labels(**lab).set(est)
        self._updated()

    def on_epoch_end(self, *, epoch: int, images_per_second: float, avg_loss: float) -> None:
        """Replace the running throughput by the epoch's measured figure.

        `avg_loss` is accepted for the log line the trainer prints; the `loss` gauge keeps the last
        step's value, which is what alerts and the dashboard need to see promptly.
        """
        del avg_loss
        with self._lock:
            self.epoch.labels(**self._labels).set(epoch)
            if math.isfinite(images_per_second) and images_per_second >= 0:
                self._ips_estimate = images_per_second
                self.images_per_second.labels(**self._labels).set(images_per_second)
        self._updated()

    def on_eval(self, *, top1: float, top5: float) -> None:
        """Record accuracies as ratios 0-1 (a percentage here is a caller bug, so it is refused)."""
        for name, value in (("top1", top1), ("top5", top5)):
            if not (0.0 <= value <= 1.0):
                raise ValueError(f"{name} accuracy {value} is not a ratio between 0 and 1")
        self.top1.labels(**self._labels).set(top1)
        self.top5.labels(**self._labels).set(top5)
        self._updated()

    def on_kernels(self, *, custom: bool) -> None:
        """Which kernels the network runs on (a fallback to MindSpore's is a slower run, not a failure)."""
        self.custom_kernels.labels(**self._labels).set(1 if custom else 0)
        self._updated()

    def on_checkpoint(self, *, seconds: float) -> None:
        """Count a saved checkpoint; `seconds` is how long the save took (not exported as its own
        series: the step histogram already shows the stall), the timestamp is now."""
        del seconds
        self.checkpoints.labels(**self._labels).inc()
        self.last_checkpoint.labels(**self._labels).set(time.time())
        self._updated()

    # ---- making sure Prometheus saw the end ---------------------------------------------------
    def _updated(self) -> None:
        with self._scraped:
            self._updates += 1

    def _on_prometheus_scrape(self) -> None:
        """Called as a Prometheus scrape starts, before the exposition is generated."""
        with self._scraped:
            self._scraped_through = self._updates
            self._scraped.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until Prometheus has scraped everything recorded so far, at most `timeout` seconds.

        For the last values before a deliberate exit: a diverged run records its NaN loss, flushes,
        then exits 67, so the MNV2LossNaN alert can see the NaN. Only requests whose User-Agent is
        Prometheus's count (the operator's progress reads and `mnv2 run` do not). True when seen;
        False on timeout or without a server.
        """
        if self._http is None:
            return False
        with self._scraped:
            target = self._updates
            return self._scraped.wait_for(lambda: self._scraped_through >= target, timeout=timeout)

    # ---- reading and shutting down -----------------------------------------------------------
    def exposition(self) -> str:
        """The text Prometheus would scrape, for `mnv2.progress.parse_progress` and tests."""
        return generate_latest(self.registry).decode()

    @property
    def url(self) -> str | None:
        """The scrape URL on loopback, or None without a server."""
        return self._http.url if self._http is not None else None

    def close(self) -> None:
        """Stop the HTTP server (idempotent), so the port is free for the next run in this process."""
        http, self._http = self._http, None
        if http is not None:
            http.close()

    def __enter__(self) -> TrainerMetrics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
