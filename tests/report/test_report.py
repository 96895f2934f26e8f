"""The training report: CSV rows as training goes, a PNG beside them, `mnv2 report` to redraw and compare."""

from __future__ import annotations

import sys
import threading

import pytest
from mnv2 import report
from mnv2.cli import main
from mnv2.exitcodes import ExitCode, InputError
from mnv2.report import CSV_NAME, PNG_NAME, EpochRecord, TrainingReport, read_records

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def records(n: int, *, top1_every: int = 2, start: int = 0) -> list[EpochRecord]:
    return [
        EpochRecord(epoch=e, loss=2.0 / (e + 1), lr=0.1 * (1 - e / 10), images_per_s=100.0 + e, seconds=3.5,
                    top1=0.5 + e / 100 if (e + 1) % top1_every == 0 else None)
        for e in range(start, start + n)
    ]


def test_rows_are_appended_as_training_goes_and_the_png_redrawn(tmp_path):
    out = tmp_path / "output"
    rep = TrainingReport(out)
    first, second = records(2)
    rep.add(first)
    assert (out / CSV_NAME).read_text() == "epoch,loss,lr,images_per_s,seconds,top1\n0,2.0,0.1,100.0,3.5,\n"
    rep.close()  # the PNG is drawn on a background thread
    png = (out / PNG_NAME).read_bytes()
    assert png.startswith(PNG_MAGIC)
    rep.add(second)
    assert (out / CSV_NAME).read_text().splitlines()[2] == "1,1.0,0.09000000000000001,101.0,3.5,0.51"
    rep.close()
    assert (out / PNG_NAME).read_bytes() != png  # redrawn with the second epoch
    assert read_records(out / CSV_NAME) == [first, second]
    assert not list(out.glob(".*tmp"))  # atomic writes leave nothing behind


def test_while_training_runs_the_png_is_redrawn_at_most_once_a_minute(tmp_path, monkeypatch):
    """A drawing costs the training step a core (about 300 ms of CPU, the GIL held): short epochs add
    rows at once, the picture follows at most every `redraw_every` seconds, and close() catches up."""
    drawn: list[int] = []  # the rows in each drawing
    monkeypatch.setattr(report, "plot", lambda runs, png: drawn.append(len(runs[0][1])))

    def drawings_done() -> list[int]:
        for thread in threading.enumerate():
            if thread.name == "training-report":
                thread.join()
        return drawn

    now = [0.0]
    rep = TrainingReport(tmp_path, redraw_every=60.0, clock=lambda: now[0])
    first, second, third = records(3)
    rep.add(first)  # less than a minute since the start: the row only
    assert drawings_done() == [] and read_records(tmp_path / CSV_NAME) == [first]
    now[0] = 61.0
    rep.add(second)  # a minute on: drawn with both rows
    assert drawings_done() == [2]
    now[0] = 90.0
    rep.add(third)  # half a minute after that drawing: the row only
    assert drawings_done() == [2]
    rep.close()
    assert drawn == [2, 3] and read_records(tmp_path / CSV_NAME) == [first, second, third]


def test_a_resumed_run_continues_and_a_fresh_run_replaces(tmp_path):
    TrainingReport(tmp_path).add(records(1)[0])
    again = records(2)  # resumed in epoch 1 after a stop: epoch 1's row comes once more
    resumed = TrainingReport(tmp_path)
    resumed.add(EpochRecord(epoch=1, loss=9.0, lr=0.1, images_per_s=1.0, seconds=1.0))
    resumed.add(again[1])
    assert read_records(tmp_path / CSV_NAME) == again  # the last row of an epoch wins
    TrainingReport(tmp_path, restart=True).add(again[0])
    assert read_records(tmp_path / CSV_NAME) == again[:1]


def test_a_row_cut_short_by_a_crash_is_dropped_not_fatal(tmp_path):
    rep = TrainingReport(tmp_path)
    first, second, third = records(3)
    rep.add(first)
    rep.add(second)
    path = tmp_path / CSV_NAME
    path.write_text(path.read_text()[:-5])  # power cut in the middle of the second row
    assert read_records(path) == [first]
    rep.add(third)
    assert read_records(path) == [first, third]


def test_bad_report_files_name_the_file_and_line(tmp_path):
    with pytest.raises(InputError, match=rf"{tmp_path / CSV_NAME}: no training report here"):
        read_records(tmp_path / CSV_NAME)
    (tmp_path / CSV_NAME).write_text("a,b\n")
    with pytest.raises(InputError, match="header must be epoch,loss,lr,images_per_s,seconds,top1"):
        read_records(tmp_path / CSV_NAME)
    (tmp_path / CSV_NAME).write_text("epoch,loss,lr,images_per_s,seconds,top1\n0,1,1,1,1,\nx,1,1,1,1,\n")
    with pytest.raises(InputError, match="line 3: not a report row"):
        read_records(tmp_path / CSV_NAME)


def test_without_matplotlib_the_csv_is_written_with_one_notice(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib...` raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setattr(report, "_matplotlib_missing_noticed", False)
    rep = TrainingReport(tmp_path)
    for record in records(3):
        rep.add(record)
    rep.close()
    assert len(read_records(tmp_path / CSV_NAME)) == 3
    assert not (tmp_path / PNG_NAME).exists()
    assert capsys.readouterr().err.count("matplotlib is not installed") == 1


def test_mnv2_report_redraws_one_run_and_compares_several(tmp_path, capsys):
    for name, n in (("run-a", 4), ("run-b", 6)):
        with TrainingReport(tmp_path / name) as rep:
            for record in records(n):
                rep.add(record)
        (tmp_path / name / PNG_NAME).unlink()
    assert main(["report", str(tmp_path / "run-a")]) == 0
    assert (tmp_path / "run-a" / PNG_NAME).read_bytes().startswith(PNG_MAGIC)
    summary = f"{tmp_path / 'run-a'}: 4 epoch(s), loss 0.5000, top-1 0.5300 (best 0.5300 at epoch 4)"
    assert summary in capsys.readouterr().out

    runs = [str(tmp_path / "run-a"), str(tmp_path / "run-b")]
    assert main(["report", *runs, "-o", str(tmp_path / "cmp.png")]) == 0
    assert (tmp_path / "cmp.png").read_bytes().startswith(PNG_MAGIC)
    assert not (tmp_path / "run-b" / PNG_NAME).exists()  # comparing does not touch the runs' own plots
    assert f"wrote {tmp_path / 'cmp.png'}" in capsys.readouterr().out

    assert main(["report", str(tmp_path / "nowhere")]) == ExitCode.INVALID_INPUT
    assert f"{tmp_path / 'nowhere'}: no such output folder" in capsys.readouterr().err
