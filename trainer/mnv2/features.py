"""Head-only fine-tuning: backbone features extracted once (eval transforms), cached, reused.

With `--freeze_layer backbone` the backbone never changes, so running it every epoch is waste:
we run it once over this rank's images, keep the globally pooled features (pooling commutes with
nothing trainable: the head is pooling + dense), and train the dense layer on them. The cache file
is keyed by a hash of the checkpoint's bytes, the dataset's files (name, size, mtime), the image
size, the width and the rank's share, so any change recomputes and a rerun reuses.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mnv2.data import ImageFolderIndex, create_eval_dataset, eval_files, eval_indices, tolerant_batches
from mnv2.distributed import DistContext
from mnv2.logs import notice

CACHE_VERSION = "1"


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(
    *, ckpt: str | Path, index: ImageFolderIndex, image_size: int, width_mult: float, rank: int, world: int
) -> str:
    """What the cached features depend on, hashed."""
    digest = hashlib.sha256()
    digest.update(f"v{CACHE_VERSION}|{image_size}|{width_mult}|{rank}/{world}|".encode())
    digest.update(file_digest(Path(ckpt)).encode())
    for i in index.usable:
        path = index.files[int(i)]
        stat = os.stat(path)
        digest.update(f"{path.relative_to(index.root)}|{index.labels[int(i)]}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def cache_path(output_dir: str | Path, key: str) -> Path:
    return Path(output_dir) / f"features-{key}.npz"


def extract_features(network, batches) -> tuple[np.ndarray, np.ndarray]:
    """Pooled backbone features (N, C) and labels (N,) over batches of images, in inference mode."""
    network.set_train(False)
    chunks, labels = [], []
    for images, batch_labels in batches:
        # Pool in numpy: an eager MindSpore op outside a cell is slower and, with NumPy 2, fragile.
        maps = network.backbone(images).asnumpy().astype(np.float32)
        chunks.append(maps.mean(axis=(2, 3)))
        labels.append(batch_labels.asnumpy().astype(np.int32))
    return np.concatenate(chunks), np.concatenate(labels)


def load_or_extract(
    network, index: ImageFolderIndex, *, ckpt: str, output_dir: str, image_size: int, width_mult: float,
    batch_size: int, workers: int, ctx: DistContext, on_corrupt: str = "error",
) -> tuple[np.ndarray, np.ndarray, Path]:
    """This rank's features: from the cache when its key matches, else extracted and cached."""
    key = cache_key(
        ckpt=ckpt, index=index, image_size=image_size, width_mult=width_mult, rank=ctx.rank, world=ctx.world
    )
    path = cache_path(output_dir, key)
    if path.is_file():
        with np.load(path) as cached:
            notice(f"head-only: reusing cached backbone features {path}")
            return cached["features"], cached["labels"], path
    if len(eval_indices(index, rank=ctx.rank, world=ctx.world)) == 0:
        return np.zeros((0, network.head.in_channels), np.float32), np.zeros((0,), np.int32), path

    def make(start: int):
        dataset = create_eval_dataset(index, image_size=image_size, batch_size=batch_size, rank=ctx.rank,
                                      world=ctx.world, workers=workers, skip=start)
        return dataset, eval_files(index, rank=ctx.rank, world=ctx.world)[start * batch_size:]

    batches = tolerant_batches(make, index, batch_size=batch_size, on_corrupt=on_corrupt, what="dataset_path")
    features, labels = extract_features(network, batches)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, features=features, labels=labels)
    os.replace(tmp, path)
    notice(f"head-only: cached backbone features of {len(labels)} images in {path}")
    return features, labels, path


def feature_batches(
    features: np.ndarray, labels: np.ndarray, *, batch_size: int, steps: int, epoch: int, seed: int,
    rank: int, skip: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`steps` shuffled batches of one epoch (order fixed by seed, epoch and rank), from `skip` on."""
    order = np.random.default_rng([seed, epoch, rank]).permutation(len(labels))
    for step in range(skip, steps):
        chosen = order[step * batch_size:(step + 1) * batch_size]
        yield features[chosen], labels[chosen]
