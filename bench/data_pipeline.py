"""Data pipeline throughput per core: `python -m bench.data_pipeline IMPL --root DIR --images N`.

IMPL `mindspore`: the trainer's own train pipeline (`mnv2.data.create_train_dataset`: random crop
+ decode + resize to 224, flip, colour jitter 0.4/0.4/0.4, normalise, HWC to CHW, batch) with one
worker. IMPL `pillow`: the same transforms written with Pillow and numpy, in one thread. Both
report wall images/s and images per CPU-second of the whole process (the per-core figure: the
MindSpore pipeline runs helper threads besides its one worker). Prints one BENCH-RESULT JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import time
from pathlib import Path

import numpy as np

IMAGE_SIZE, BATCH = 224, 32
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_mindspore(root: Path, images: int) -> int:
    from mnv2.data import create_train_dataset, scan_image_folder

    index = scan_image_folder(root)
    batches = max(1, images // BATCH)
    data = create_train_dataset(index, image_size=IMAGE_SIZE, batch_size=BATCH, epoch=0, seed=0, workers=1)
    data = data.repeat(math.ceil(batches * BATCH / max(1, index.num_images)) + 1)
    seen = 0
    for image, _ in data.create_tuple_iterator(output_numpy=True, num_epochs=1):
        seen += image.shape[0]
        if seen >= batches * BATCH:
            break
    return seen


def _random_resized_crop(image, rng: random.Random):
    """torchvision/MindSpore RandomResizedCrop: area 0.08-1.0, aspect 3/4-4/3, 10 tries, centre fallback."""
    from PIL import Image

    width, height = image.size
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        aspect = math.exp(rng.uniform(math.log(0.75), math.log(1.333)))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            x, y = rng.randint(0, width - w), rng.randint(0, height - h)
            return image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR, box=(x, y, x + w, y + h))
    side = min(width, height)
    x, y = (width - side) // 2, (height - side) // 2
    return image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR, box=(x, y, x + side, y + side))


def pillow_transform(path: Path, rng: random.Random) -> np.ndarray:
    """Decode + the zoo's train transforms with Pillow; returns a CHW float32 array."""
    from PIL import Image, ImageEnhance, ImageOps

    with Image.open(path) as raw:
        image = _random_resized_crop(raw.convert("RGB"), rng)
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhance(image).enhance(rng.uniform(0.6, 1.4))
    array = (np.asarray(image, dtype=np.float32) - MEAN) / STD
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def run_pillow(root: Path, images: int) -> int:
    files = sorted(root.glob("*/*.jpg"))
    rng = random.Random(0)
    batches = max(1, images // BATCH)
    seen = 0
    for b in range(batches):
        batch = [pillow_transform(files[(b * BATCH + i) % len(files)], rng) for i in range(BATCH)]
        np.stack(batch)
        seen += BATCH
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("impl", choices=["mindspore", "pillow"])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args(argv)
    run = run_mindspore if args.impl == "mindspore" else run_pillow
    run(args.root, BATCH)  # warm-up: imports, thread start-up, file cache
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    seen = run(args.root, args.images)
    wall, cpu = time.perf_counter() - wall0, _cpu_seconds() - cpu0
    print("BENCH-RESULT " + json.dumps({
        "impl": args.impl, "images": seen, "wall_s": wall, "cpu_s": cpu, "images_per_s": seen / wall,
        "images_per_cpu_s": seen / cpu, "cores": os.cpu_count(),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
