"""Live progress on a terminal, and nothing at all without one.

Why two faces: a person at a terminal wants one line that moves (epoch, step, loss, images/s, ETA),
while pods, CI and redirected output must keep the model zoo's log lines exactly, one line per
event, because scripts and `kubectl logs` read them. So every function here returns a quiet object
unless its stream is a terminal; on a terminal, rich draws the line in place and prints the
ordinary log lines above it (stdout and stderr are routed through rich only when they are the
terminal too, so `mnv2 train > train.log` still writes every line to the file).

    live = live_progress(total_epochs, steps_per_epoch)
    live.step(epoch, step, loss, images_per_s)      # after every step (0-based epoch and step)
    live.epoch_done(epoch, loss, seconds)           # after every epoch
    live.close()

`live_eval(total_batches)` does the same for evaluation and `live_table(title)` for a set of named
rows (`mnv2 run`: one per replica).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO


def is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Quiet:
    """What every live display is without a terminal: accepts every call, writes nothing."""

    def step(self, *args: Any, **kwargs: Any) -> None:
        pass

    def epoch_done(self, *args: Any, **kwargs: Any) -> None:
        pass

    def update(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _console(stream: TextIO):
    from rich.console import Console

    return Console(file=stream, highlight=False, soft_wrap=False)


def _progress(stream: TextIO, *columns: Any):
    from rich.progress import Progress

    return Progress(
        *columns, console=_console(stream), transient=False,
        redirect_stdout=is_terminal(sys.stdout), redirect_stderr=is_terminal(sys.stderr),
    )


def _eta_columns() -> tuple[Any, ...]:
    from rich.progress import BarColumn, TaskProgressColumn, TextColumn, TimeRemainingColumn

    return (BarColumn(bar_width=24), TaskProgressColumn(), TextColumn("ETA"),
            TimeRemainingColumn(compact=True))


class _LiveTraining(Quiet):
    def __init__(self, total_epochs: int, steps_per_epoch: int, stream: TextIO) -> None:
        from rich.progress import TextColumn

        self.total_epochs, self.steps_per_epoch = total_epochs, max(1, steps_per_epoch)
        self._progress = _progress(
            stream,
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]} "
                       "step {task.fields[step]}/{task.fields[steps]}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[ips]} img/s"),
            *_eta_columns(),
        )
        self._task: Any = None
        self._progress.start()

    def _fields(self, epoch: int, step: int, loss: float, ips: float | None) -> dict[str, Any]:
        return dict(epoch=epoch + 1, epochs=self.total_epochs, step=step + 1, steps=self.steps_per_epoch,
                    loss=f"{loss:.4f}", ips="-" if ips is None else f"{ips:.1f}")

    def step(self, epoch: int, step: int, loss: float, images_per_s: float | None = None) -> None:
        done = epoch * self.steps_per_epoch + step + 1
        fields = self._fields(epoch, step, loss, images_per_s)
        if self._task is None:
            # Start the bar where this run starts (a resumed run), so the ETA counts only its own pace.
            self._task = self._progress.add_task(
                "train", total=self.total_epochs * self.steps_per_epoch, completed=done - 1, **fields
            )
        self._progress.update(self._task, completed=done, **fields)

    def epoch_done(self, epoch: int, loss: float, seconds: float) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=(epoch + 1) * self.steps_per_epoch,
                                  step=self.steps_per_epoch, loss=f"{loss:.4f}")

    def close(self) -> None:
        self._progress.stop()


class _LiveEval(Quiet):
    def __init__(self, total_batches: int, stream: TextIO) -> None:
        from rich.progress import TextColumn

        self._progress = _progress(
            stream, TextColumn("evaluating batch {task.completed}/{task.total}"),
            TextColumn("{task.fields[ips]} img/s"), *_eta_columns(),
        )
        self._task = self._progress.add_task("eval", total=max(1, total_batches), ips="-")
        self._started = time.perf_counter()
        self._images = 0
        self._progress.start()

    def step(self, batches_done: int, images: int = 0) -> None:
        self._images += images
        elapsed = time.perf_counter() - self._started
        ips = f"{self._images / elapsed:.1f}" if self._images and elapsed > 0 else "-"
        self._progress.update(self._task, completed=batches_done, ips=ips)

    def close(self) -> None:
        self._progress.stop()


class _LiveTable(Quiet):
    def __init__(self, title: str, stream: TextIO) -> None:
        from rich.live import Live

        self.title = title
        self._rows: dict[str, str] = {}
        self._footer = ""
        self._live = Live(
            self._render(), console=_console(stream), refresh_per_second=4, transient=False,
            redirect_stdout=is_terminal(sys.stdout), redirect_stderr=is_terminal(sys.stderr),
        )
        self._live.start()

    def _render(self):
        from rich.table import Table

        table = Table(title=self.title, title_justify="left", box=None, show_header=False, pad_edge=False)
        table.add_column(style="bold")
        table.add_column()
        for name, state in self._rows.items():
            table.add_row(name, state)
        if self._footer:
            table.add_row("", self._footer)
        return table

    def update(self, rows: Mapping[str, str], footer: str | None = None) -> None:
        self._rows.update(rows)
        if footer is not None:
            self._footer = footer
        self._live.update(self._render())  # drawn at the next refresh (4 per second at most)

    def close(self) -> None:
        self._live.stop()


def live_progress(total_epochs: int, steps_per_epoch: int, stream: TextIO | None = None) -> Any:
    """The training line (epoch, step, loss, images/s, ETA) on a terminal; Quiet otherwise."""
    stream = sys.stderr if stream is None else stream
    return _LiveTraining(total_epochs, steps_per_epoch, stream) if is_terminal(stream) else Quiet()


def live_eval(total_batches: int, stream: TextIO | None = None) -> Any:
    """The evaluation line (batches, images/s, ETA) on a terminal: `.step(batches_done, images)`."""
    stream = sys.stderr if stream is None else stream
    return _LiveEval(total_batches, stream) if is_terminal(stream) else Quiet()


def live_table(title: str, stream: TextIO | None = None) -> Any:
    """Named rows redrawn in place on a terminal: `.update({name: state}, footer)`."""
    stream = sys.stderr if stream is None else stream
    return _LiveTable(title, stream) if is_terminal(stream) else Quiet()
