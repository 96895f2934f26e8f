"""Generated JPEG image-folder trees for the data-pipeline benchmarks (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def generate_image_folder(
    root: Path, classes: int = 4, per_class: int = 16, size: tuple[int, int] = (500, 375), seed: int = 0
) -> Path:
    """Write `classes` x `per_class` JPEGs of ImageNet-like size (500x375) under root/<class>/.

    Smooth colour gradients plus mild noise: compresses and decodes like a photo (random noise
    would make unrealistically large files, flat colour unrealistically small ones).
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for c in range(classes):
        folder = root / f"class_{c:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            fx, fy, phase = rng.uniform(0.005, 0.03), rng.uniform(0.005, 0.03), rng.uniform(0, 6.28, 3)
            channels = [127 + 100 * np.sin(xx * fx + yy * fy * (k + 1) + phase[k]) for k in range(3)]
            image = np.stack(channels, axis=-1) + rng.normal(0, 12, (height, width, 3))
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"{i:04d}.jpg", quality=90)
    return root
