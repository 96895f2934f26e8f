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

    live = False  # True for the displays that draw

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

    return Console(file=stream, highlight=False, soft_wrap=True)  # log lines keep their length


def _progress(stream: TextIO, *columns: Any):
    from rich.progress import Progress

    return Progress(
        *columns, console=_console(stream), transient=False,
        redirect_stdout=is_terminal(sys.stdout), redirect_stderr=is_terminal(sys.stderr),
    )


def _columns() -> tuple[Any, ...]:
    """The figures as one text (never cut on a narrow terminal) and the bar after it."""
    from rich.progress import BarColumn, TextColumn
    from rich.table import Column

    return (TextColumn("{task.description}", table_column=Column(no_wrap=True, min_width=20)),
            BarColumn(bar_width=20))


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "ETA -:--"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"ETA {hours}:{minutes:02d}:{secs:02d}" if hours else f"ETA {minutes}:{secs:02d}"


class _Pace:
    """Seconds left at this run's own pace so far (a resumed run counts only its own steps)."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.first = 0

    def eta(self, done: int, total: int) -> float | None:
        now = time.perf_counter()
        if self.started is None:
            self.started, self.first = now, done
            return None
        steps = done - self.first
        return (now - self.started) / steps * max(0, total - done) if steps > 0 else None


class _LiveTraining(Quiet):
    live = True

    def __init__(self, total_epochs: int, steps_per_epoch: int, stream: TextIO) -> None:
        self.total_epochs, self.steps_per_epoch = total_epochs, max(1, steps_per_epoch)
        self.total = self.total_epochs * self.steps_per_epoch
        self._pace = _Pace()
        self._progress = _progress(stream, *_columns())
        self._task = self._progress.add_task("starting", total=self.total)
        self._last = ("-", "-")
        self._progress.start()

    def _show(self, epoch: int, step: int, done: int) -> None:
        loss, ips = self._last
        text = (f"epoch {epoch + 1}/{self.total_epochs} step {step + 1}/{self.steps_per_epoch} "
                f"loss {loss} {ips} img/s {eta_text(self._pace.eta(done, self.total))}")
        self._progress.update(self._task, completed=done, description=text, refresh=True)

    def step(self, epoch: int, step: int, loss: float, images_per_s: float | None = None) -> None:
        done = epoch * self.steps_per_epoch + step + 1
        if self._pace.started is None:
            self._pace.eta(done, self.total)  # the pace starts after this run's first step (compilation)
        self._last = (f"{loss:.4f}", "-" if images_per_s is None else f"{images_per_s:.1f}")
        self._show(epoch, step, done)

    def epoch_done(self, epoch: int, loss: float, seconds: float) -> None:
        self._last = (f"{loss:.4f}", self._last[1])
        self._show(epoch, self.steps_per_epoch - 1, (epoch + 1) * self.steps_per_epoch)

    def close(self) -> None:
        self._progress.stop()


class _LiveEval(Quiet):
    live = True

    def __init__(self, total_batches: int, stream: TextIO) -> None:
        self.total = max(1, total_batches)
        self._pace = _Pace()
        self._pace.eta(0, self.total)
        self._started = time.perf_counter()
        self._images = 0
        self._progress = _progress(stream, *_columns())
        self._task = self._progress.add_task(f"evaluating batch 0/{self.total}", total=self.total)
        self._progress.start()

    def step(self, batches_done: int, images: int = 0) -> None:
        self._images += images
        elapsed = time.perf_counter() - self._started
        ips = f"{self._images / elapsed:.1f}" if self._images and elapsed > 0 else "-"
        text = (f"evaluating batch {batches_done}/{self.total} {ips} img/s "
                f"{eta_text(self._pace.eta(batches_done, self.total))}")
        self._progress.update(self._task, completed=batches_done, description=text, refresh=True)

    def close(self) -> None:
        self._progress.stop()


class _LiveTable(Quiet):
    live = True

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
