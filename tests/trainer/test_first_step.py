"""The CPU loop compiles before its first step (mnv2.train._python_loop): the compile is timed as part
of that step, never as time spent waiting for data (mnv2_trainer_data_wait_seconds_total)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from mnv2 import train


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_compile_counts_as_the_first_steps_time_not_its_data_wait(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(train.time, "perf_counter", clock)
    monkeypatch.setattr(train, "release_free_heap", lambda: True)
    compiles, steps = [], []

    class Cell:
        def compile(self, inputs, labels):
            compiles.append(inputs)
            clock.now += 5.0

        def __call__(self, inputs, labels):
            clock.now += 1.0
            return SimpleNamespace(asnumpy=lambda: np.float32(0.5))

    def batches(epoch, skip):
        for i in range(2):
            clock.now += 0.25  # decoding the batch
            yield i, i

    def after_steps(output, seconds, wait_seconds):
        steps.append((seconds, wait_seconds))
        return False

    hooks = SimpleNamespace(
        config=SimpleNamespace(epochs=1), skip=0, train_cell=Cell(), after_steps=after_steps,
        begin_epoch=lambda epoch, skip: None, end_epoch=lambda: None,
    )
    train._python_loop(hooks, batches, 0, 0)
    assert compiles == [0]
    assert steps == [(6.0, 0.25), (1.0, 0.25)]
