"""`python held_train.py ARGS...` is `mnv2 train ARGS...` (the real CLI, run in this process) that
stops after each global step named in MNV2_TEST_HOLD_STEPS until the test releases it through the
FIFO MNV2_TEST_GATE (one open-write-close per held step).

Why: a small run trains in well under one scrape interval, so whether Prometheus ever stores a
mid-run value was a race (it once stored only the last step). While the training loop waits here,
the metrics server keeps serving, so the test can wait until Prometheus has scraped the held step
and then let training go on: the outcome no longer depends on speed.
"""

from __future__ import annotations

import os

from mnv2.cli import main
from mnv2.trainer_metrics import TrainerMetrics

HOLD_STEPS = {int(s) for s in os.environ["MNV2_TEST_HOLD_STEPS"].split(",")}
GATE = os.environ["MNV2_TEST_GATE"]
_record_step = TrainerMetrics.on_step


def on_step_then_hold(self: TrainerMetrics, **values: object) -> None:
    _record_step(self, **values)
    if values["global_step"] in HOLD_STEPS:
        with open(GATE) as gate:  # blocks until the test opens the FIFO to write
            gate.read()


TrainerMetrics.on_step = on_step_then_hold  # type: ignore[method-assign]
raise SystemExit(main())
