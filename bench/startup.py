"""Start-up before the first step: scanning an image-folder tree of 100,000 files.

The trainer used to open and verify every image before training (and again on every resume and
`mnv2 eval`); now it only lists the folders. This generates a tree of tiny PNG files in a temporary
folder (deleted afterwards), then times `scan_image_folder` of the current `mnv2.data`, and, with
`--before FILE`, of an older copy of that module (e.g. `git show <commit>:trainer/mnv2/data.py`):

    python bench/startup.py --files 100000 --before /tmp/data_before.py

Each figure is the best of `--rounds` runs, with the page cache warm (the tree was just written): on
a network volume with a cold cache every open costs a round trip, so the gap only grows there.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_tree(root: Path, files: int, classes: int) -> Path:
    """`files` tiny PNGs (8x8 RGB, ~100 bytes) spread over `classes` folders."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    buffer = root / "seed.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buffer)
    payload = buffer.read_bytes()
    buffer.unlink()
    per_class = -(-files // classes)
    written = 0
    for k in range(classes):
        folder = root / f"n{k:08d}"
        folder.mkdir(parents=True)
        for i in range(min(per_class, files - written)):
            (folder / f"img_{i:06d}.png").write_bytes(payload)
            written += 1
    return root


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def time_scan(module, root: Path, rounds: int) -> tuple[float, int]:
    best, count = float("inf"), 0
    for _ in range(rounds):
        started = time.perf_counter()
        index = module.scan_image_folder(root)
        best = min(best, time.perf_counter() - started)
        count = index.num_images
    return best, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, help="an older mnv2/data.py to compare with")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temporary tree (default /tmp)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
    from mnv2 import data

    parent = tempfile.mkdtemp(prefix="mnv2-startup-", dir=args.dir)
    try:
        started = time.perf_counter()
        root = make_tree(Path(parent) / "tree", args.files, args.classes)
        figures: dict[str, object] = {"files": args.files, "classes": args.classes,
                                      "generate_seconds": round(time.perf_counter() - started, 2)}
        seconds, count = time_scan(data, root, args.rounds)
        assert count == args.files, count
        figures["scan_seconds_now"] = round(seconds, 3)
        if args.before:
            seconds, count = time_scan(load_module(args.before, "mnv2_data_before"), root, args.rounds)
            assert count == args.files, count
            figures["scan_seconds_before"] = round(seconds, 3)
            ratio = figures["scan_seconds_before"] / max(figures["scan_seconds_now"], 1e-9)
            figures["speedup"] = round(ratio, 1)
    finally:
        shutil.rmtree(parent, ignore_errors=True)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
