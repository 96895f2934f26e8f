"""parse_progress against golden exposition texts, a live TrainerMetrics, and fetch over real HTTP."""

from __future__ import annotations

import http.server
import json
import math
import threading
from collections.abc import Iterator

import pytest
from mnv2.progress import Progress, ProgressError, fetch_progress, parse_progress, progress_url
from mnv2.trainer_metrics import TrainerMetrics
from obs_helpers import DATA, free_port

GOLDEN = sorted(p.stem for p in DATA.glob("progress_*.prom"))


@pytest.mark.parametrize("name", GOLDEN)
def test_golden(name: str) -> None:
    text = (DATA / f"{name}.prom").read_text()
    expected = json.loads((DATA / f"{name}.json").read_text())
    expected.pop("_why")
    assert parse_progress(text).to_status() == expected


def test_golden_files_are_all_used() -> None:
    assert len(GOLDEN) >= 4
    assert {p.stem for p in DATA.glob("progress_*.json")} == set(GOLDEN)


def test_rank_can_be_chosen() -> None:
    text = (DATA / "progress_midrun.prom").read_text()
    assert parse_progress(text, rank="1").loss == 9.5
    assert parse_progress(text, rank="0").loss == 1.234


def test_live_trainer_metrics_round_trip() -> None:
    """Drive the real TrainerMetrics and check the progress follows from the inputs."""
    m = TrainerMetrics(0, rank=0, job="live")
    epochs, per_epoch, batch = 4, 25, 8
    m.set_plan(epochs=epochs, steps_per_epoch=per_epoch, batch_size=batch, world_size=1)
    done = 30
    for g in range(1, done + 1):
        m.on_step(
            epoch=g // per_epoch + 1,
            step=(g - 1) % per_epoch + 1,
            global_step=g,
            loss=2.0 / g,
            lr=0.1,
            step_seconds=0.25,
            data_wait_seconds=0.0,
            images=batch,
        )
    m.on_eval(top1=0.4, top5=0.8)
    p = parse_progress(m.exposition())
    total = epochs * per_epoch
    assert (p.step, p.total_steps, p.epoch) == (done, total, 2)
    assert p.percent == pytest.approx(100 * done / total, abs=0.05)
    assert p.images_per_second == pytest.approx(batch / 0.25)
    assert p.eta_seconds == math.ceil((total - done) * 0.25)
    assert p.loss == pytest.approx(2.0 / done)
    assert p.top1 == pytest.approx(0.4)


def test_camel_case_status_and_snake_case_input() -> None:
    p = Progress(total_steps=10, images_per_second=1.5, eta_seconds=3)
    assert p.to_status() == {"totalSteps": 10, "imagesPerSecond": 1.5, "etaSeconds": 3}
    assert Progress.model_validate({"totalSteps": 10}).total_steps == 10
    with pytest.raises(ValueError, match="percent"):
        Progress(percent=101)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", r"no mnv2_trainer_\* series"),
        ("# TYPE up gauge\nup 1\n", r"no mnv2_trainer_\* series"),
        ("mnv2_trainer_loss{rank=0} oops\n", "not valid Prometheus exposition"),
    ],
)
def test_bad_text_is_reported(text: str, match: str) -> None:
    with pytest.raises(ProgressError, match=match):
        parse_progress(text)


@pytest.fixture
def live_trainer() -> Iterator[TrainerMetrics]:
    m = TrainerMetrics(free_port(), rank=0, job="fetch", addr="127.0.0.1")
    yield m
    m.close()


def test_fetch_progress_over_http(live_trainer: TrainerMetrics) -> None:
    m = live_trainer
    m.set_plan(epochs=1, steps_per_epoch=10, batch_size=4, world_size=1)
    m.on_step(
        epoch=1, step=5, global_step=5, loss=0.5, lr=0.1, step_seconds=0.5, data_wait_seconds=0, images=4
    )
    assert m.url == progress_url("127.0.0.1", m.port)
    p = fetch_progress(m.url, timeout=5)
    assert (p.step, p.total_steps, p.percent, p.eta_seconds) == (
        5,
        10,
        50.0,
        3,
    )  # 5 x 4 / 8 img/s = 2.5, rounded up


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("http://localhost:9090/metrics", "host must be an IP address"),
        ("https://127.0.0.1:9090/metrics", "only http://"),
        ("http://127.0.0.1/metrics", "port is missing"),
    ],
)
def test_fetch_refuses_urls_outside_pod_ips(url: str, match: str) -> None:
    with pytest.raises(ProgressError, match=match):
        fetch_progress(url)


def test_fetch_errors_name_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/metrics"  # nobody listens
    with pytest.raises(ProgressError, match=f"progress URL {url}"):
        fetch_progress(url, timeout=2)

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(ProgressError, match="HTTP 404"):
            fetch_progress(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5)
    finally:
        server.shutdown()
        server.server_close()


def test_ipv6_url() -> None:
    assert progress_url("::1", 9090) == "http://[::1]:9090/metrics"
    with pytest.raises(ValueError):
        progress_url("trainer-0.svc", 9090)
