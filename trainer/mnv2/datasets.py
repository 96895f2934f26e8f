"""Small real datasets as image-folder trees: the quick start's data and the tests' data.

`make_digits_tree` turns scikit-learn's bundled digits (1,797 8x8 scans, no download) into RGB PNG
class folders with a deterministic train/val split. `make_synthetic_tree` draws a learnable task
(each class a colour and a shape, placed at random on noise) of any size, for tests.
No MindSpore here: these run before the trainer starts.

    python -m mnv2.datasets digits OUT [--image-size 32]
    python -m mnv2.datasets synthetic OUT --classes 4 --per-class 20 --size 32 --seed 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

VAL_EVERY = 5  # every fifth digit (in the bundled order) goes to val/: a stratified, fixed split

# Distinct colours and shapes; class k uses COLOURS[k % len] and SHAPES[k // len % len].
COLOURS: tuple[tuple[int, int, int], ...] = (
    (230, 40, 40), (40, 200, 40), (40, 80, 230), (230, 210, 40),
    (200, 40, 200), (40, 210, 210), (250, 140, 20), (140, 140, 140),
)
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "cross")


def make_digits_tree(out_dir: str | Path, image_size: int = 32) -> Path:
    """Write `out_dir/train/<digit>/*.png` and `out_dir/val/<digit>/*.png`; returns out_dir."""
    from sklearn.datasets import load_digits

    out = Path(out_dir)
    digits = load_digits()
    for index, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        split = "val" if index % VAL_EVERY == 0 else "train"
        folder = out / split / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        grey = np.clip(image * (255.0 / 16.0), 0, 255).astype(np.uint8)
        picture = Image.fromarray(grey, mode="L").resize((image_size, image_size), Image.BILINEAR)
        picture.convert("RGB").save(folder / f"{index:05d}.png")
    return out


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], colour) -> None:
    x0, y0, x1, y1 = box
    if shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=colour)
    else:  # cross
        w = max(1, (x1 - x0) // 4)
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        draw.rectangle((cx - w, y0, cx + w, y1), fill=colour)
        draw.rectangle((x0, cy - w, x1, cy + w), fill=colour)


def make_synthetic_tree(
    out_dir: str | Path, classes: int = 4, per_class: int = 20, size: int = 32, seed: int = 0
) -> Path:
    """Write `out_dir/class_<k>/<i>.png`: class k is one colour+shape at a random place on tinted noise."""
    if not 2 <= classes <= len(COLOURS) * len(SHAPES):
        raise ValueError(f"classes: must be between 2 and {len(COLOURS) * len(SHAPES)}")
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    for k in range(classes):
        folder = out / f"class_{k:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        colour = COLOURS[k % len(COLOURS)]
        shape = SHAPES[k // len(COLOURS) % len(SHAPES)]
        for i in range(per_class):
            # Noise tinted with the class colour: the colour survives random crops, the shape adds a cue.
            noise = rng.integers(0, 64, size=(size, size, 3))
            tinted = (noise + 0.6 * np.array(colour)).clip(0, 255).astype(np.uint8)
            picture = Image.fromarray(tinted, mode="RGB")
            extent = int(rng.integers(size // 2, size - 2))
            x0 = int(rng.integers(0, size - extent))
            y0 = int(rng.integers(0, size - extent))
            _draw_shape(ImageDraw.Draw(picture), shape, (x0, y0, x0 + extent, y0 + extent), colour)
            picture.save(folder / f"{i:04d}.png")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mnv2.datasets", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    digits = sub.add_parser("digits", help="scikit-learn digits as train/ and val/ class folders")
    digits.add_argument("out")
    digits.add_argument("--image-size", type=int, default=32)
    synthetic = sub.add_parser("synthetic", help="coloured shapes on noise, one folder per class")
    synthetic.add_argument("out")
    synthetic.add_argument("--classes", type=int, default=4)
    synthetic.add_argument("--per-class", type=int, default=20)
    synthetic.add_argument("--size", type=int, default=32)
    synthetic.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.kind == "digits":
        out = make_digits_tree(args.out, args.image_size)
    else:
        out = make_synthetic_tree(args.out, args.classes, args.per_class, args.size, args.seed)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
