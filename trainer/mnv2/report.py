"""The training report: a CSV of per-epoch figures and a PNG plot of them, in the output folder.

Why a file and not only metrics: a job's output volume outlives its pods and its Prometheus, so the
report is what a user still has after the job (`mnv2 report OUTPUT_DIR` redraws it and compares
runs). The CSV is appended one row per epoch as training goes, so it is complete up to the last
finished epoch whatever happens next; a resumed run appends to it and the last row of an epoch wins.
matplotlib is imported only when a plot is drawn: without it the CSV is still written, with one
notice. No MindSpore here.
"""

from __future__ import annotations

import csv
import io
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from mnv2.exitcodes import InputError
from mnv2.logs import notice

CSV_NAME = "training_report.csv"
PNG_NAME = "training_report.png"


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch. `epoch` is 0-based like the log lines; `top1` is a ratio 0-1 or None
    when the epoch was not evaluated; `lr` is the learning rate at the epoch's last step."""

    epoch: int
    loss: float
    lr: float
    images_per_s: float
    seconds: float
    top1: float | None = None


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(EpochRecord))


def _format(value: float | int | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return repr(float(value))  # exact round trip


def _row(record: EpochRecord) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(_format(v) for v in astuple(record))
    return buffer.getvalue()


def read_records(path: str | Path) -> list[EpochRecord]:
    """Records of a report CSV in epoch order, the last row of each epoch winning (a resumed run
    repeats the epoch it stopped in). Errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"{path}: no training report here (written by `mnv2 train` as it goes)") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror}") from None
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a row cut short by a crash mid-write: drop it
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise InputError(f"{path}: header must be {','.join(COLUMNS)}")
    by_epoch: dict[int, EpochRecord] = {}
    for row in reader:
        try:
            record = EpochRecord(
                epoch=int(row["epoch"]), loss=float(row["loss"]), lr=float(row["lr"]),
                images_per_s=float(row["images_per_s"]), seconds=float(row["seconds"]),
                top1=float(row["top1"]) if row["top1"] else None,
            )
        except (TypeError, ValueError):
            raise InputError(f"{path}: line {reader.line_num}: not a report row") from None
        by_epoch[record.epoch] = record
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def csv_text(records: Iterable[EpochRecord]) -> str:
    return ",".join(COLUMNS) + "\n" + "".join(_row(r) for r in records)


def write_csv(path: str | Path, records: Iterable[EpochRecord]) -> None:
    """Write a whole report CSV atomically (what `mnv2 report` regenerates)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(csv_text(records))
    tmp.replace(path)


_matplotlib_missing_noticed = False


def _pyplot_free_figure():
    """A matplotlib Figure on the Agg canvas (no pyplot: no global state, no display), or None."""
    global _matplotlib_missing_noticed
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        if not _matplotlib_missing_noticed:
            _matplotlib_missing_noticed = True
            notice("training report: matplotlib is not installed; writing the CSV only")
        return None
    figure = Figure(figsize=(9, 5.6), dpi=80, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _headline(label: str, records: Sequence[EpochRecord]) -> str:
    """What a run came to, for the plot's title: epochs, training time, last loss and top-1."""
    minutes, seconds = divmod(round(sum(r.seconds for r in records)), 60)
    parts = [f"{len(records)} epoch(s) in {minutes} min {seconds:02d} s", f"loss {records[-1].loss:.3f}"]
    evaluated = [r for r in records if r.top1 is not None]
    if evaluated:
        parts.append(f"top-1 {evaluated[-1].top1:.3f} at epoch {evaluated[-1].epoch + 1}")
    return f"{label}: " + ", ".join(parts)


def plot(runs: Sequence[tuple[str, Sequence[EpochRecord]]], png: str | Path) -> bool:
    """Draw loss, top-1, learning rate and images/s per epoch, one line per run; False without
    matplotlib. Epochs are shown 1-based (epoch 1 is the first finished epoch)."""
    figure = _pyplot_free_figure()
    if figure is None:
        return False
    from matplotlib.ticker import MaxNLocator

    axes = figure.subplots(2, 2, sharex=True)
    panels = (
        (axes[0][0], "loss", "training loss (epoch mean)"),
        (axes[0][1], "top1", "top-1 accuracy on the evaluation set"),
        (axes[1][0], "lr", "learning rate (end of epoch)"),
        (axes[1][1], "images_per_s", "images/s, all ranks (first epoch: with compilation)"),
    )
    for ax, attribute, title in panels:
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        drawn = False
        for label, records in runs:
            points = [(r.epoch + 1, getattr(r, attribute)) for r in records]
            points = [(x, y) for x, y in points if y is not None and math.isfinite(y)]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o" if attribute == "top1" else None, markersize=3, label=label)
                drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not evaluated yet", ha="center", va="center", transform=ax.transAxes,
                    color="grey")
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    top1_values = [r.top1 for _, records in runs for r in records if r.top1 is not None]
    if top1_values:
        axes[0][1].set_ylim(max(0.0, min(top1_values) - 0.02), min(1.0, max(top1_values) + 0.01) + 1e-6)
    if len(runs) > 1:
        axes[0][0].legend(fontsize=8)
    elif runs[0][1]:
        figure.suptitle(_headline(*runs[0]), fontsize=10)
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.tmp")
    figure.savefig(tmp, format="png")
    tmp.replace(png)  # a viewer never sees half a picture
    return True


#: Seconds between redrawings of the PNG while a training runs. A drawing takes about 300 ms of CPU
#: with the GIL held; drawn after every epoch it slowed the next epoch's first steps on 2 cores (batch 8,
#: 20-step epochs: 270 -> 250 ms per step without it).
REDRAW_EVERY_S = 60.0


class TrainingReport:
    """Appends one CSV row per epoch to OUTPUT_DIR/training_report.csv and redraws the PNG beside it.

    `add` returns once the row is on disk. The PNG is redrawn on a background thread (every other
    rank would otherwise wait for rank 0 in the next all-reduce), at most once every `redraw_every`
    seconds while training runs (the first time that long after the start), and by `close()`, which
    waits until the picture shows every row. Draws coalesce. The thread is not a daemon, so the
    interpreter finishes a drawing under way before it exits; `mnv2 report` redraws from the CSV.
    `restart=True` (a run that does not resume) replaces an earlier run's report in the folder; by
    default rows are appended, so a resumed run continues its report. Only rank 0 keeps one.
    """

    def __init__(self, output_dir: str | Path, *, restart: bool = False, title: str | None = None,
                 redraw_every: float = REDRAW_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.output_dir = Path(output_dir)
        self.csv_path = self.output_dir / CSV_NAME
        self.png_path = self.output_dir / PNG_NAME
        self.title = title or self.output_dir.resolve().name
        self._restart = restart
        self._redraw_every = redraw_every
        self._clock = clock
        self._last_drawn = clock()
        self._lock = threading.Lock()
        self._pending = False
        self._drawer: threading.Thread | None = None

    def add(self, record: EpochRecord) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        existing = b"" if self._restart or not self.csv_path.exists() else self.csv_path.read_bytes()
        self._restart = False
        if not existing:
            write_csv(self.csv_path, [record])
        elif existing.endswith(b"\n"):
            with self.csv_path.open("a") as out:
                out.write(_row(record))
        else:  # the last row was cut short (a crash mid-write): rewrite without it
            write_csv(self.csv_path, [*read_records(self.csv_path), record])
        with self._lock:
            self._pending = True
        if self._clock() - self._last_drawn >= self._redraw_every:
            self._start_drawing()

    def _start_drawing(self) -> None:
        with self._lock:
            if self._drawer is None and self._pending:
                self._last_drawn = self._clock()
                self._drawer = threading.Thread(target=self._draw, name="training-report", daemon=False)
                self._drawer.start()

    def _draw(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._drawer = None
                    return
                self._pending = False
            try:
                plot([(self.title, read_records(self.csv_path))], self.png_path)
            except Exception as error:  # a picture must never stop a training; the CSV is the record
                notice(f"training report: could not draw {self.png_path}: {error}")

    def close(self) -> None:
        """Draw what is not drawn yet and wait until the PNG shows every row added so far."""
        self._start_drawing()
        with self._lock:
            drawer = self._drawer
        if drawer is not None:
            drawer.join()

    def __enter__(self) -> TrainingReport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def regenerate(output_dirs: Sequence[str | Path], out: str | Path | None = None) -> list[Path]:
    """`mnv2 report`: rewrite each folder's CSV (one row per epoch) and PNG; with several folders, or
    with `out`, also draw them all on one plot. Returns the files written."""
    runs: list[tuple[str, list[EpochRecord]]] = []
    written: list[Path] = []
    for folder in output_dirs:
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"{folder}: no such output folder")
        records = read_records(folder / CSV_NAME)
        if not records:
            raise InputError(f"{folder / CSV_NAME}: no finished epoch yet")
        runs.append((folder.resolve().name if folder.name in ("", ".") else folder.name, records))
        if (folder / CSV_NAME).read_text() != csv_text(records):  # repeated epochs or a cut row
            write_csv(folder / CSV_NAME, records)  # (a training still running only ever appends)
            written.append(folder / CSV_NAME)
        if len(output_dirs) == 1 and out is None and plot(runs[-1:], folder / PNG_NAME):
            written.append(folder / PNG_NAME)
    if (len(runs) > 1 or out is not None) and plot(runs, out or "training_reports.png"):
        written.append(Path(out or "training_reports.png"))
    return written


def summary(output_dir: str | Path) -> str:
    """One line per run for the terminal: epochs, last loss, best and last top-1, training time."""
    folder = Path(output_dir)
    records = read_records(folder / CSV_NAME)
    if not records:
        return f"{folder}: no finished epoch yet"
    last = records[-1]
    evaluated = [r for r in records if r.top1 is not None]
    parts = [f"{folder}: {len(records)} epoch(s)", f"loss {last.loss:.4f}"]
    if evaluated:
        best = max(evaluated, key=lambda r: r.top1 or 0.0)
        parts.append(f"top-1 {evaluated[-1].top1:.4f} (best {best.top1:.4f} at epoch {best.epoch + 1})")
    parts.append(f"{sum(r.seconds for r in records):.0f} s of training")
    return ", ".join(parts)
