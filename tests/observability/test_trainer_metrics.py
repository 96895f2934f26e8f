"""TrainerMetrics: values, labels, naming conventions and its HTTP endpoint, read back as text."""

from __future__ import annotations

import math
import threading
import urllib.request

import pytest
from mnv2.trainer_metrics import METRIC_NAMES, TrainerMetrics
from obs_helpers import exported_names, free_port
from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(text: str, name: str, **labels: str) -> float:
    matches = [v for lab, v in samples(text).get(name, []) if all(lab.get(k) == x for k, x in labels.items())]
    assert len(matches) == 1, f"{name}{labels}: {matches}"
    return matches[0]


def drive(m: TrainerMetrics, steps: int = 4, images: int = 16, step_seconds: float = 0.5) -> None:
    m.set_plan(epochs=3, steps_per_epoch=steps, batch_size=images, world_size=2)
    for i in range(1, steps + 1):
        m.on_step(
            epoch=1,
            step=i,
            global_step=i,
            loss=3.0 - 0.5 * i,
            lr=0.01 * i,
            step_seconds=step_seconds,
            data_wait_seconds=0.1,
            images=images,
            loss_scale=1024.0,
            overflow=(i == 2),
        )


def test_step_values_and_labels() -> None:
    m = TrainerMetrics(0, rank=3, job="flowers")
    drive(m)
    text = m.exposition()
    lab = {"rank": "3", "job": "flowers"}
    assert value(text, "mnv2_trainer_loss", **lab) == pytest.approx(1.0)
    assert value(text, "mnv2_trainer_learning_rate", **lab) == pytest.approx(0.04)
    assert value(text, "mnv2_trainer_global_step", **lab) == 4
    assert value(text, "mnv2_trainer_total_steps", **lab) == 12
    assert value(text, "mnv2_trainer_epoch", **lab) == 1
    assert value(text, "mnv2_trainer_images_total", **lab) == 64
    assert value(text, "mnv2_trainer_data_wait_seconds_total", **lab) == pytest.approx(0.4)
    assert value(text, "mnv2_trainer_overflow_total", **lab) == 1
    assert value(text, "mnv2_trainer_loss_scale", **lab) == 1024
    assert value(text, "mnv2_trainer_step_duration_seconds_count", **lab) == 4
    assert value(text, "mnv2_trainer_step_duration_seconds_sum", **lab) == pytest.approx(2.0)
    # 0.5 s steps fall in the 0.5 bucket and above, not below.
    assert value(text, "mnv2_trainer_step_duration_seconds_bucket", le="0.25", **lab) == 0
    assert value(text, "mnv2_trainer_step_duration_seconds_bucket", le="0.5", **lab) == 4
    # 16 images every 0.5 s, whatever the smoothing.
    assert value(text, "mnv2_trainer_images_per_second", **lab) == pytest.approx(32.0)
    # Every series carries exactly rank and job (plus le on buckets).
    for name, items in samples(text).items():
        for labels, _ in items:
            assert {"rank", "job"} <= set(labels), name
            assert set(labels) - {"rank", "job", "le"} == set(), name


def test_throughput_is_smoothed_then_replaced_by_the_epoch_figure() -> None:
    m = TrainerMetrics(0)
    m.set_plan(epochs=1, steps_per_epoch=3, batch_size=10, world_size=1)
    m.on_step(
        epoch=1, step=1, global_step=1, loss=1, lr=0.1, step_seconds=1.0, data_wait_seconds=0, images=10
    )
    assert value(m.exposition(), "mnv2_trainer_images_per_second") == pytest.approx(10.0)
    m.on_step(
        epoch=1, step=2, global_step=2, loss=1, lr=0.1, step_seconds=0.1, data_wait_seconds=0, images=10
    )
    smoothed = value(m.exposition(), "mnv2_trainer_images_per_second")
    assert 10.0 < smoothed < 100.0  # moved towards 100 img/s, not jumped to it
    m.on_epoch_end(epoch=2, images_per_second=55.5, avg_loss=0.9)
    assert value(m.exposition(), "mnv2_trainer_images_per_second") == pytest.approx(55.5)
    assert value(m.exposition(), "mnv2_trainer_epoch") == 2


def test_eval_and_checkpoint() -> None:
    m = TrainerMetrics(0, job="j")
    m.on_eval(top1=0.71, top5=0.93)
    m.on_checkpoint(seconds=1.5)
    m.on_checkpoint(seconds=1.5)
    text = m.exposition()
    assert value(text, "mnv2_trainer_top1_accuracy") == pytest.approx(0.71)
    assert value(text, "mnv2_trainer_top5_accuracy") == pytest.approx(0.93)
    assert value(text, "mnv2_trainer_checkpoints_saved_total") == 2
    import time

    assert abs(value(text, "mnv2_trainer_last_checkpoint_timestamp_seconds") - time.time()) < 60


def test_accuracy_must_be_a_ratio() -> None:
    m = TrainerMetrics(0)
    with pytest.raises(ValueError, match=r"top1 accuracy 71\.0"):
        m.on_eval(top1=71.0, top5=0.9)
    with pytest.raises(ValueError, match="top5"):
        m.on_eval(top1=0.7, top5=-0.1)


def test_invalid_plan_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size=0"):
        TrainerMetrics(0).set_plan(epochs=1, steps_per_epoch=1, batch_size=0, world_size=1)
    with pytest.raises(ValueError, match="70000"):
        TrainerMetrics(70000)


def test_nan_loss_is_exported_as_nan() -> None:
    m = TrainerMetrics(0)
    m.on_step(
        epoch=1,
        step=1,
        global_step=1,
        loss=float("nan"),
        lr=0.1,
        step_seconds=0.1,
        data_wait_seconds=0,
        images=8,
    )
    assert math.isnan(value(m.exposition(), "mnv2_trainer_loss"))


def test_counters_exist_at_zero_before_the_first_event() -> None:
    text = TrainerMetrics(0, job="j").exposition()
    for name in (
        "mnv2_trainer_images_total",
        "mnv2_trainer_overflow_total",
        "mnv2_trainer_checkpoints_saved_total",
        "mnv2_trainer_data_wait_seconds_total",
    ):
        assert value(text, name, job="j") == 0


def test_names_follow_prometheus_conventions() -> None:
    m = TrainerMetrics(0)
    families = {f.name: f for f in m.registry.collect()}
    assert set(METRIC_NAMES) == exported_names(m.registry) - {
        n for n in exported_names(m.registry) if n.endswith(("_bucket", "_sum", "_count"))
    } | {"mnv2_trainer_step_duration_seconds"}
    for name, fam in families.items():
        assert name.startswith("mnv2_trainer_")
        if fam.type == "counter":
            assert not name.endswith("_total")  # the client adds it once in the exposition
        if fam.type == "histogram" or "seconds" in name or "duration" in name or "time" in name:
            assert name.removesuffix("_total").endswith("_seconds"), name
        assert "percent" not in name and "millis" not in name, name


def test_instances_do_not_share_a_registry() -> None:
    a, b = TrainerMetrics(0, rank=0), TrainerMetrics(0, rank=1)
    a.on_eval(top1=0.5, top5=0.5)
    assert "top1_accuracy{" in a.exposition()
    assert "top1_accuracy{" not in b.exposition()


def test_http_endpoint_serves_and_close_frees_the_port() -> None:
    port = free_port()
    m = TrainerMetrics(port, rank=0, job="http", addr="127.0.0.1")
    try:
        drive(m)
        assert m.url == f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(m.url, timeout=5) as resp:
            assert resp.status == 200
            body = resp.read().decode()
        assert value(body, "mnv2_trainer_global_step", job="http") == 4
        with pytest.raises(OSError, match=f"cannot serve trainer metrics on 127.0.0.1:{port}"):
            TrainerMetrics(port, addr="127.0.0.1")
    finally:
        m.close()
    m.close()  # idempotent
    assert m.url is None
    again = TrainerMetrics(port, addr="127.0.0.1")  # the port is free again
    again.close()


def test_port_zero_serves_nothing() -> None:
    m = TrainerMetrics(0)
    assert m.url is None
    m.close()


def scrape(url: str, user_agent: str) -> str:
    req = urllib.request.Request(url, headers={"User-Agent": user_agent})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.read().decode()


def test_flush_waits_for_a_prometheus_scrape_of_the_last_update() -> None:
    assert TrainerMetrics(0).flush(timeout=5) is False  # no server: nothing to wait for
    m = TrainerMetrics(free_port(), job="flush", addr="127.0.0.1")
    try:
        m.on_eval(top1=0.1, top5=0.2)
        scrape(m.url, "Python-urllib/3.11")  # the operator's progress read is not Prometheus
        assert m.flush(timeout=0.3) is False
        body = scrape(m.url, "Prometheus/2.42.0")
        assert value(body, "mnv2_trainer_top1_accuracy") == pytest.approx(0.1)
        assert m.flush(timeout=0.1) is True
        m.on_eval(top1=0.3, top5=0.4)  # a newer update needs a newer scrape
        assert m.flush(timeout=0.3) is False
        results: list[bool] = []
        waiter = threading.Thread(target=lambda: results.append(m.flush(timeout=10)))
        waiter.start()
        body = scrape(m.url, "Prometheus/2.42.0")
        waiter.join(timeout=15)
        assert results == [True]
        assert value(body, "mnv2_trainer_top1_accuracy") == pytest.approx(0.3)
    finally:
        m.close()
