"""The trainer's log lines, in the model zoo's exact format, as pure functions.

Scripts and people grep these lines (`epoch: [  0/200], step:[  624/  625], ...`), so the format
is part of the interface: epoch and step are 0-based, times are milliseconds.
"""

from __future__ import annotations

import sys
from typing import TextIO


def step_line(
    *, epoch: int, epochs: int, step: int, steps: int, loss: float, avg_loss: float, step_ms: float, lr: float
) -> str:
    return (
        f"epoch: [{epoch:3d}/{epochs:3d}], step:[{step:5d}/{steps:5d}], "
        f"loss:[{loss:5.3f}/{avg_loss:5.3f}], time:[{step_ms:5.3f}], lr:[{lr:5.3f}]"
    )


def epoch_line(*, epoch_ms: float, per_step_ms: float, avg_loss: float) -> str:
    return f"epoch time: {epoch_ms:5.3f}, per step time: {per_step_ms:5.3f}, avg loss: {avg_loss:5.3f}"


def result_line(*, acc: float, top5: float, ckpt: str) -> str:
    return f"result: {{'acc': {acc}, 'top_5_accuracy': {top5}}} ckpt={ckpt}"


def emit(line: str, stream: TextIO | None = None) -> None:
    """Print and flush at once, so `tail -f train.log` and pod logs show progress live."""
    stream = stream or sys.stdout
    stream.write(line + "\n")
    stream.flush()


def notice(message: str) -> None:
    """An informational line on stderr (kept apart from the zoo's stdout lines)."""
    emit(f"[mnv2] {message}", sys.stderr)
