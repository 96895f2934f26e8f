"""A real Prometheus scrapes a real `mnv2 train --metrics_port N` run (MindSpore on CPU, 32 px,
width 0.25): the trainer's series arrive with sensible values, and progress read from the live
endpoint (what `mnv2 run` and the operator do) moves while it trains."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mnv2.progress import ProgressError, fetch_progress
from obs_helpers import free_port
from obs_prom import running_prometheus, values

pytestmark = pytest.mark.slow

CLASSES, PER_CLASS, BATCH, EPOCHS = 4, 16, 8, 4
STEPS_PER_EPOCH = CLASSES * PER_CLASS // BATCH
JOB = "real-run"


def test_prometheus_scrapes_a_real_training_run(tmp_path: Path) -> None:
    from mnv2.datasets import make_synthetic_tree

    train = make_synthetic_tree(tmp_path / "train", CLASSES, PER_CLASS, 32, seed=0)
    val = make_synthetic_tree(tmp_path / "val", CLASSES, 4, 32, seed=1)
    port = free_port()
    cmd = [
        sys.executable, "-m", "mnv2", "train", "--platform", "CPU",
        "--dataset_path", str(train), "--eval_dataset_path", str(val),
        "--num_classes", str(CLASSES), "--image_size", "32", "--width_mult", "0.25",
        "--batch_size", str(BATCH), "--epochs", str(EPOCHS), "--warmup_epochs", "1",
        "--lr_init", "0", "--lr_max", "0.02", "--lr_end", "0", "--num_workers", "1", "--seed", "7",
        "--output_dir", str(tmp_path / "out"), "--metrics_port", str(port),
    ]  # fmt: skip
    env = {**os.environ, "MNV2_EXECUTION_MODE": "graph", "MNV2_JOB_NAME": JOB}
    scrape = {"mnv2-trainers": {"honor_labels": True, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}}
    log = (tmp_path / "train.log").open("w+")
    with running_prometheus(tmp_path / "prom", scrape) as prom:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            # Progress from the live endpoint, polled like `mnv2 run` does, until steps are done.
            seen: list[int] = []
            deadline = time.monotonic() + 300
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    p = fetch_progress(f"http://127.0.0.1:{port}/metrics", timeout=2)
                    if p.step:
                        seen.append(p.step)
                        assert p.total_steps == EPOCHS * STEPS_PER_EPOCH
                        assert p.percent is not None and 0 < p.percent <= 100
                except ProgressError:
                    pass  # not serving yet (MindSpore still starting) or already gone
                time.sleep(0.5)
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log.seek(0)
        output = log.read()
        assert rc == 0, output[-3000:]
        assert len(set(seen)) >= 2 and seen == sorted(seen), f"progress steps seen: {seen}"

        # The process is gone; what Prometheus stored is read over the last minutes.
        sel = f'{{job="{JOB}",rank="0"}}'
        loss = prom.wait_for(f"last_over_time(mnv2_trainer_loss{sel}[10m])")
        assert 0 < values(loss)[0] < 20 and math.isfinite(values(loss)[0])
        lo = values(prom.query(f"min_over_time(mnv2_trainer_global_step{sel}[10m])"))[0]
        hi = values(prom.query(f"max_over_time(mnv2_trainer_global_step{sel}[10m])"))[0]
        assert 1 <= lo < hi <= EPOCHS * STEPS_PER_EPOCH, (lo, hi)
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
