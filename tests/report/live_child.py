"""A training-shaped loop for tests/report/test_console.py: the zoo's log lines, with or without the
live displays (argv[1]: plain, live, eval or table), writing wherever its stdout/stderr go."""

from __future__ import annotations

import sys

from mnv2.console import live_eval, live_progress, live_table
from mnv2.logs import emit, epoch_line, notice, step_line

EPOCHS, STEPS = 2, 3


def main(mode: str) -> None:
    if mode == "table":
        table = live_table("job demo")
        table.update({"demo-0": "Running", "demo-1": "Pending"}, footer="epoch 1, step 2/6")
        emit("[rank 0] a line from a replica")
        table.update({"demo-1": "Succeeded (exit 0)"})
        table.close()
        return
    if mode == "eval":
        live = live_eval(4)
        for batch in range(4):
            live.step(batch + 1, images=16)
        live.close()
        emit("result: {'acc': 0.5, 'top_5_accuracy': 1.0} ckpt=x.ckpt")
        return
    live = live_progress(EPOCHS, STEPS) if mode == "live" else None
    for epoch in range(EPOCHS):
        for step in range(STEPS):
            loss = 2.0 / (1 + epoch * STEPS + step)
            if live:
                live.step(epoch, step, loss, 321.5)
            emit(step_line(epoch=epoch, epochs=EPOCHS, step=step, steps=STEPS, loss=loss, avg_loss=loss,
                           step_ms=12.5, lr=0.1))
        emit(epoch_line(epoch_ms=40.0, per_step_ms=13.3, avg_loss=loss))
        notice(f"checkpoint of epoch {epoch}")
        if live:
            live.epoch_done(epoch, loss, 0.04)
    if live:
        live.close()


if __name__ == "__main__":
    main(sys.argv[1])
