"""`mnv2 report OUTPUT_DIR [OUTPUT_DIR ...]`: redraw a run's training report, or compare several runs.

The CSV (training_report.csv, one row per epoch) is what training writes; this command rewrites it
with one row per epoch and redraws the PNG beside it, or, for several folders (or with -o), draws
them all on one plot. Works anywhere the output volume is: no MindSpore, no cluster.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "redraw the training report (CSV + PNG) of output folders, comparing several runs on one plot"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output_dirs", nargs="+", type=Path, metavar="OUTPUT_DIR",
                        help="a training's output folder (holds training_report.csv)")
    parser.add_argument("-o", "--output", type=Path, default=None, metavar="PNG",
                        help="write the plot here (default: OUTPUT_DIR/training_report.png for one "
                             "folder, ./training_reports.png for several)")


def run(args: argparse.Namespace) -> int:
    from mnv2 import report

    written = report.regenerate(args.output_dirs, args.output)
    for folder in args.output_dirs:
        print(report.summary(folder))
    for path in written:
        print(f"wrote {path}")
    return 0
