"""A real Prometheus scrapes a real `mnv2 train --metrics_port N` run (MindSpore on CPU, 32 px,
width 0.25): the trainer's series arrive with sensible values, and progress read from the live
endpoint (what `mnv2 run` and the operator do) moves while it trains.

The run is held after two chosen steps (held_train.py) until Prometheus has scraped each, so a
mid-run value is stored however fast training is; nothing here depends on timing."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest
from mnv2.progress import ProgressError, fetch_progress
from obs_helpers import free_port
from obs_prom import running_prometheus, values

pytestmark = pytest.mark.slow

CLASSES, PER_CLASS, BATCH, EPOCHS = 4, 16, 8, 4
STEPS_PER_EPOCH = CLASSES * PER_CLASS // BATCH
HELD_STEPS = (1, 2 * STEPS_PER_EPOCH + 1)  # the first step, and one after an evaluation
JOB = "real-run"


def test_prometheus_scrapes_a_real_training_run(tmp_path: Path) -> None:
    from mnv2.datasets import make_synthetic_tree

    train = make_synthetic_tree(tmp_path / "train", CLASSES, PER_CLASS, 32, seed=0)
    val = make_synthetic_tree(tmp_path / "val", CLASSES, 4, 32, seed=1)
    port = free_port()
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    cmd = [
        sys.executable, str(Path(__file__).with_name("held_train.py")), "train", "--platform", "CPU",
        "--dataset_path", str(train), "--eval_dataset_path", str(val),
        "--num_classes", str(CLASSES), "--image_size", "32", "--width_mult", "0.25",
        "--batch_size", str(BATCH), "--epochs", str(EPOCHS), "--warmup_epochs", "1",
        "--lr_init", "0", "--lr_max", "0.02", "--lr_end", "0", "--num_workers", "1", "--seed", "7",
        "--output_dir", str(tmp_path / "out"), "--metrics_port", str(port),
    ]  # fmt: skip
    env = {
        **os.environ, "MNV2_EXECUTION_MODE": "graph", "MNV2_JOB_NAME": JOB,
        "MNV2_TEST_HOLD_STEPS": ",".join(map(str, HELD_STEPS)), "MNV2_TEST_GATE": str(gate),
    }  # fmt: skip
    scrape = {"mnv2-trainers": {"honor_labels": True, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}}
    sel = f'{{job="{JOB}",rank="0"}}'
    log = (tmp_path / "train.log").open("w+")
    with running_prometheus(tmp_path / "prom", scrape) as prom:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            seen: list[int] = []
            for held in HELD_STEPS:
                # Progress from the live endpoint, read as `mnv2 run` does, reaches the held step...
                deadline = time.monotonic() + 300
                while not seen or seen[-1] < held:
                    assert proc.poll() is None and time.monotonic() < deadline, _tail(log, seen)
                    try:
                        p = fetch_progress(f"http://127.0.0.1:{port}/metrics", timeout=2)
                    except ProgressError:
                        p = None  # not serving yet: MindSpore is still compiling
                    if p is not None and p.step:
                        seen.append(p.step)
                        assert p.total_steps == EPOCHS * STEPS_PER_EPOCH
                        assert p.percent is not None and 0 < p.percent <= 100
                    time.sleep(0.2)
                assert seen[-1] == held, _tail(log, seen)
                # ...and training goes on only once Prometheus has stored it.
                prom.wait_for(f"mnv2_trainer_global_step{sel}", lambda r, held=held: values(r) == [held])
                with open(gate, "w") as release:
                    release.write("go\n")
            rc = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert rc == 0, _tail(log, seen)
        assert seen == sorted(seen), f"progress steps seen: {seen}"

        # The process is gone; what Prometheus stored is read over the last minutes.
        loss = prom.wait_for(f"last_over_time(mnv2_trainer_loss{sel}[10m])")
        assert 0 < values(loss)[0] < 20 and math.isfinite(values(loss)[0])
        lo = values(prom.query(f"min_over_time(mnv2_trainer_global_step{sel}[10m])"))[0]
        hi = values(prom.query(f"max_over_time(mnv2_trainer_global_step{sel}[10m])"))[0]
        assert lo == 1 and HELD_STEPS[-1] <= hi <= EPOCHS * STEPS_PER_EPOCH, (lo, hi)
        assert values(prom.query(f"last_over_time(mnv2_trainer_total_steps{sel}[10m])")) == [
            EPOCHS * STEPS_PER_EPOCH
        ]
        rate = values(prom.query(f"rate(mnv2_trainer_images_total{sel}[10m])"))
        assert rate and rate[0] > 0
        lr = values(prom.query(f"max_over_time(mnv2_trainer_learning_rate{sel}[10m])"))
        assert 0 < lr[0] <= 0.02 + 1e-9
        step_p50 = values(prom.query(
            f"histogram_quantile(0.5, rate(mnv2_trainer_step_duration_seconds_bucket{sel}[10m]))"
        ))  # fmt: skip
        assert 0 < step_p50[0] < 30


def _tail(log: IO[str], seen: list[int]) -> str:
    log.seek(0)
    return f"progress steps seen: {seen}\n{log.read()[-3000:]}"
