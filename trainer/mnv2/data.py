"""Image-folder datasets for training and evaluation (mindspore.dataset), sharded by rank at the source.

The folder is scanned and its images verified up front with Pillow, so a missing folder, an empty
class or a corrupt file is an `InputError` naming it before any MindSpore work (never a hang in a
worker). The scan lists files in ImageFolderDataset's own order (sorted classes, sorted files), so a
`SubsetSampler` over indices selects exactly the files we mean: each epoch a permutation seeded by
(seed, epoch), dealt to ranks in equal shares. That makes the order reproducible for `--resume`,
lets the `skip` policy leave out bad files, and gives evaluation exact, non-overlapping shards.
"""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnv2.exitcodes import InputError
from mnv2.logs import notice

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG", ".BMP")
MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@dataclass
class ImageFolderIndex:
    """The files of one image-folder tree, in ImageFolderDataset's order, and which of them to use."""

    root: Path
    classes: list[str]
    files: list[Path]
    labels: np.ndarray
    usable: np.ndarray  # indices into files (all of them unless the skip policy left some out)
    skipped: list[Path] = field(default_factory=list)
    class_indexing: dict[str, int] = field(default_factory=dict)  # folder name -> label

    @property
    def num_images(self) -> int:
        return len(self.usable)


def _verify_image(path: Path) -> str | None:
    """None when Pillow can parse the file's structure, else why not (cheap: no full decode)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as error:  # Pillow raises many types for bad data
        return f"{type(error).__name__}: {error}"
    return None


def scan_image_folder(
    root: str | os.PathLike[str], *, on_corrupt: str = "error", verify: bool = True,
    what: str = "dataset_path", class_names: list[str] | None = None,
) -> ImageFolderIndex:
    """List and verify an image-folder tree; raise InputError naming the folder or file at fault.

    `class_names` imposes another tree's labels (evaluation during training uses the training
    classes, so a validation tree that lacks a class still labels the others correctly).
    """
    root = Path(root)
    if not str(root):
        raise InputError(f"{what}: no dataset folder given")
    if not root.is_dir():
        raise InputError(f"{what}: {root}: no such folder")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        raise InputError(f"{what}: {root}: no class folders (expected one sub-folder per class)")
    mapping = {name: label for label, name in enumerate(class_names or classes)}
    unknown = [name for name in classes if name not in mapping]
    if unknown:
        raise InputError(f"{what}: {root}: class folder(s) {unknown} are not among the training classes")
    files: list[Path] = []
    labels: list[int] = []
    for name in classes:
        label = mapping[name]
        folder = root / name
        images = sorted(
            entry.name for entry in os.scandir(folder)
            if entry.is_file() and entry.name.endswith(IMAGE_EXTENSIONS)
        )
        if not images:
            kinds = ", ".join(IMAGE_EXTENSIONS[:4])
            raise InputError(f"{what}: {folder}: class folder has no images ({kinds})")
        files += [folder / image for image in images]
        labels += [label] * len(images)
    bad: dict[int, str] = {}
    if verify:
        with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) * 4)) as pool:
            for index, problem in enumerate(pool.map(_verify_image, files, chunksize=64)):
                if problem is not None:
                    bad[index] = problem
    if bad and on_corrupt != "skip":
        index, problem = next(iter(sorted(bad.items())))
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise InputError(f"{what}: {files[index]}: corrupt or unreadable image: {problem}{more}")
    skipped = [files[i] for i in sorted(bad)]
    for i in sorted(bad):
        notice(f"skipping corrupt image {files[i]}: {bad[i]}")
    if skipped:
        notice(f"{what}: skipped {len(skipped)} corrupt image(s) of {len(files)} (on_corrupt_image=skip)")
    usable = np.array([i for i in range(len(files)) if i not in bad], dtype=np.int64)
    if len(usable) == 0:
        raise InputError(f"{what}: {root}: no usable images")
    return ImageFolderIndex(
        root, classes, files, np.array(labels, dtype=np.int32), usable, skipped,
        class_indexing={name: mapping[name] for name in classes},
    )


def check_num_classes(index: ImageFolderIndex, num_classes: int, what: str = "dataset_path") -> None:
    """More class folders than the head has outputs would give out-of-range labels: refuse early."""
    highest = max(index.class_indexing.values())
    if highest >= num_classes:
        raise InputError(
            f"{what}: {index.root} has {highest + 1} classes but num_classes is {num_classes}"
        )


def epoch_indices(index: ImageFolderIndex, *, epoch: int, seed: int, rank: int, world: int) -> np.ndarray:
    """This rank's files for one epoch: one permutation shared by all ranks, dealt in equal shares."""
    permutation = np.random.default_rng([seed, epoch]).permutation(index.usable)
    share = len(permutation) // world
    return permutation[rank::world][:share]


def eval_indices(index: ImageFolderIndex, *, rank: int, world: int) -> np.ndarray:
    """Every usable file exactly once across ranks (shares differ by at most one: nothing dropped)."""
    return index.usable[rank::world]


def steps_per_epoch(index: ImageFolderIndex, *, batch_size: int, world: int) -> int:
    steps = (index.num_images // world) // batch_size
    if steps < 1:
        raise InputError(
            f"dataset_path: {index.root}: {index.num_images} images give less than one batch of "
            f"{batch_size} per device on {world} device(s); lower batch_size"
        )
    return steps


def eval_resize(image_size: int) -> int:
    """The eval resize before the centre crop: 256 for 224, scaled alike for other sizes."""
    return round(image_size * 256 / 224)


_CLAMPED: set[tuple[int, int]] = set()


def pipeline_workers(requested: int) -> int:
    """`requested` parallel workers, at most one per CPU (MindSpore refuses more), with a notice once."""
    cpus = os.cpu_count() or 1
    if requested <= cpus:
        return requested
    if (requested, cpus) not in _CLAMPED:
        _CLAMPED.add((requested, cpus))
        notice(f"num_workers: {requested} is more than the {cpus} CPU(s) here; using {cpus}")
    return cpus


@contextmanager
def _global_generators_kept():
    """MindSpore's dataset `set_seed` also seeds Python's `random` and numpy's global generator
    (mindspore/dataset/core/config.py); a pipeline seed must not reset other code's randomness."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _source(index: ImageFolderIndex, indices: np.ndarray, workers: int):
    import mindspore.dataset as ds

    workers = pipeline_workers(workers)
    return ds.ImageFolderDataset(
        str(index.root),
        sampler=ds.SubsetSampler([int(i) for i in indices]),
        extensions=list(IMAGE_EXTENSIONS),
        class_indexing=index.class_indexing,
        num_parallel_workers=workers,
    )


def create_train_dataset(
    index: ImageFolderIndex, *, image_size: int, batch_size: int, epoch: int, seed: int,
    rank: int = 0, world: int = 1, workers: int = 2,
    min_crop_scale: float = 0.08, horizontal_flip: bool = True,
):
    """One epoch of augmented batches (zoo train transforms), drop_remainder, this rank's share."""
    import mindspore.dataset as ds
    import mindspore.dataset.transforms as T
    import mindspore.dataset.vision as V
    from mindspore.common import dtype as mstype

    # The augmentation RNG is seeded per (seed, epoch, rank): a resumed epoch draws the same crops.
    with _global_generators_kept():
        ds.config.set_seed(int(seed) * 100_003 + epoch * 1_009 + rank)
    workers = pipeline_workers(workers)
    indices = epoch_indices(index, epoch=epoch, seed=seed, rank=rank, world=world)
    data = _source(index, indices, workers)
    image_ops = [
        V.RandomCropDecodeResize(image_size, scale=(min_crop_scale, 1.0), ratio=(0.75, 1.333)),
        *([V.RandomHorizontalFlip(prob=0.5)] if horizontal_flip else []),
        V.RandomColorAdjust(brightness=0.4, contrast=0.4, saturation=0.4),
        V.Normalize(mean=MEAN, std=STD),
        V.HWC2CHW(),
    ]
    data = data.map(operations=image_ops, input_columns="image", num_parallel_workers=workers)
    data = data.map(operations=T.TypeCast(mstype.int32), input_columns="label", num_parallel_workers=workers)
    return data.batch(batch_size, drop_remainder=True)


def create_eval_dataset(
    index: ImageFolderIndex, *, image_size: int, batch_size: int, rank: int = 0, world: int = 1,
    workers: int = 2,
):
    """Decode, resize to a square, centre crop (zoo eval transforms); every image of this rank's share."""
    import mindspore.dataset.transforms as T
    import mindspore.dataset.vision as V
    from mindspore.common import dtype as mstype

    workers = pipeline_workers(workers)
    data = _source(index, eval_indices(index, rank=rank, world=world), workers)
    resize = eval_resize(image_size)
    image_ops = [
        V.Decode(),
        V.Resize((resize, resize)),
        V.CenterCrop(image_size),
        V.Normalize(mean=MEAN, std=STD),
        V.HWC2CHW(),
    ]
    data = data.map(operations=image_ops, input_columns="image", num_parallel_workers=workers)
    data = data.map(operations=T.TypeCast(mstype.int32), input_columns="label", num_parallel_workers=workers)
    return data.batch(batch_size, drop_remainder=False)
