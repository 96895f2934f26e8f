"""Image-folder datasets for training and evaluation (mindspore.dataset), sharded by rank at the source.

Start-up costs a listing, not a read: the scan lists class folders and file names (sorted classes,
sorted files: ImageFolderDataset's own order) and opens no image, so a missing folder or an empty
class is an `InputError` at once, and a corrupt file is found where it is decoded, per
`on_corrupt_image`: `error` stops naming the file, `skip` names it and goes on. A `SubsetSampler`
over indices selects exactly the files we mean: each epoch a permutation seeded by (seed, epoch),
dealt to ranks in equal shares, which makes the order reproducible for `--resume` (a resumed epoch
starts its sampler after the batches already trained: they are not read again) and gives evaluation
exact, non-overlapping shards. A skipped training file is replaced in its rank's share by the next
good one, so every rank still takes the same number of steps.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnv2 import launchenv
from mnv2.exitcodes import InputError
from mnv2.logs import notice

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG", ".BMP")
MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@dataclass
class ImageFolderIndex:
    """The files of one image-folder tree, in ImageFolderDataset's order."""

    root: Path
    classes: list[str]
    files: list[Path]
    labels: np.ndarray
    usable: np.ndarray  # indices into files: all of them (the shares are dealt from these)
    class_indexing: dict[str, int] = field(default_factory=dict)  # folder name -> label
    bad: set[int] = field(default_factory=set)  # files this process found corrupt while decoding

    @property
    def num_images(self) -> int:
        return len(self.usable)


def scan_image_folder(
    root: str | os.PathLike[str], *, what: str = "dataset_path", class_names: list[str] | None = None,
) -> ImageFolderIndex:
    """List an image-folder tree (no image is opened); raise InputError naming the folder at fault.

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
            if entry.name.endswith(IMAGE_EXTENSIONS) and entry.is_file()
        )
        if not images:
            kinds = ", ".join(IMAGE_EXTENSIONS[:4])
            raise InputError(f"{what}: {folder}: class folder has no images ({kinds})")
        files += [folder / image for image in images]
        labels += [label] * len(images)
    return ImageFolderIndex(
        root, classes, files, np.array(labels, dtype=np.int32), np.arange(len(files), dtype=np.int64),
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


def thread_share() -> int | None:
    """This process's share of the pod's CPUs from the launcher (MNV2_THREADS), if it set one."""
    value = os.environ.get(launchenv.THREADS, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def pipeline_workers(requested: int) -> int:
    """`requested` parallel workers, at most one per CPU (MindSpore refuses more) and at most this
    process's share of the pod's CPUs, with a notice once."""
    cpus = os.cpu_count() or 1
    share = thread_share()
    if share and share < cpus:
        limit, why = share, f"{share} CPU(s) of this process's share of the pod ({launchenv.THREADS})"
    else:
        limit, why = cpus, f"{cpus} CPU(s) here"
    if requested <= limit:
        return requested
    if (requested, limit) not in _CLAMPED:
        _CLAMPED.add((requested, limit))
        notice(f"num_workers: {requested} is more than the {why}; using {limit}")
    return limit


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


#: Rows each pipeline stage may hold ahead of the next (MindSpore's default is 16). The batch stage
#: counts batches, so 16 meant up to 16 decoded batches waiting: 300 MB at batch 32, 1.4 GB at 150,
#: and a burst of decoding at every epoch's start that slows its first steps. Two keep the workers
#: ahead of training, which consumes over 10x slower than one worker decodes (bench/RESULTS.md).
READ_AHEAD = 2


def _source(index: ImageFolderIndex, indices: np.ndarray, workers: int):
    import mindspore.dataset as ds

    # A process-wide setting, read when a pipeline starts; every pipeline of ours starts here.
    ds.config.set_prefetch_size(READ_AHEAD)
    workers = pipeline_workers(workers)
    return ds.ImageFolderDataset(
        str(index.root),
        sampler=ds.SubsetSampler([int(i) for i in indices]),
        extensions=list(IMAGE_EXTENSIONS),
        class_indexing=index.class_indexing,
        num_parallel_workers=workers,
    )


def train_files(
    index: ImageFolderIndex, *, epoch: int, seed: int, rank: int, world: int, batch_size: int, skip: int = 0,
) -> np.ndarray:
    """This rank's files for one epoch from batch `skip` on, each known-bad file replaced by a good one."""
    indices = epoch_indices(index, epoch=epoch, seed=seed, rank=rank, world=world)
    return _replace_bad(indices, index)[skip * batch_size:]


def _replace_bad(indices: np.ndarray, index: ImageFolderIndex) -> np.ndarray:
    """Each bad file gives its place to the next good file of the same share (cyclically), so the
    share keeps its size and every rank its number of steps."""
    if not index.bad:
        return indices
    good = ~np.isin(indices, list(index.bad))
    if not good.any():
        raise InputError(f"dataset_path: {index.root}: every image of this rank's share is corrupt")
    replaced = indices.copy()
    for position in np.flatnonzero(~good):
        step = 1
        while not good[(position + step) % len(indices)]:
            step += 1
        replaced[position] = indices[(position + step) % len(indices)]
    return replaced


def eval_files(index: ImageFolderIndex, *, rank: int, world: int) -> np.ndarray:
    """This rank's evaluation files, without those found corrupt (counts are exact over the rest)."""
    indices = eval_indices(index, rank=rank, world=world)
    return indices[~np.isin(indices, list(index.bad))] if index.bad else indices


def create_train_dataset(
    index: ImageFolderIndex, *, image_size: int, batch_size: int, epoch: int, seed: int,
    rank: int = 0, world: int = 1, workers: int = 2,
    min_crop_scale: float = 0.08, horizontal_flip: bool = True, skip: int = 0, normalized: bool = True,
):
    """One epoch of augmented batches (zoo train transforms), drop_remainder, this rank's share.

    `skip` batches are left out at the sampler: a resumed epoch does not read them again. With
    `normalized=False` the images stay uint8 (CHW), for `mnv2.ops.normalize.normalize_images`.
    """
    import mindspore.dataset as ds
    import mindspore.dataset.transforms as T
    import mindspore.dataset.vision as V
    from mindspore.common import dtype as mstype

    # The augmentation RNG is seeded per (seed, epoch, rank), and per resume point: the draws are
    # reproducible, but a resumed epoch's remaining batches get other crops than an unbroken run's.
    with _global_generators_kept():
        ds.config.set_seed((int(seed) * 100_003 + epoch * 1_009 + rank + skip * 7_919_993) % 2**32)
    workers = pipeline_workers(workers)
    indices = train_files(index, epoch=epoch, seed=seed, rank=rank, world=world, batch_size=batch_size,
                          skip=skip)
    data = _source(index, indices, workers)
    image_ops = [
        V.RandomCropDecodeResize(image_size, scale=(min_crop_scale, 1.0), ratio=(0.75, 1.333)),
        *([V.RandomHorizontalFlip(prob=0.5)] if horizontal_flip else []),
        V.RandomColorAdjust(brightness=0.4, contrast=0.4, saturation=0.4),
        *([V.Normalize(mean=MEAN, std=STD)] if normalized else []),
        V.HWC2CHW(),
    ]
    data = data.map(operations=image_ops, input_columns="image", num_parallel_workers=workers)
    data = data.map(operations=T.TypeCast(mstype.int32), input_columns="label", num_parallel_workers=workers)
    return data.batch(batch_size, drop_remainder=True)


def create_eval_dataset(
    index: ImageFolderIndex, *, image_size: int, batch_size: int, rank: int = 0, world: int = 1,
    workers: int = 2, skip: int = 0,
):
    """Decode, resize to a square, centre crop (zoo eval transforms); every image of this rank's share."""
    import mindspore.dataset.transforms as T
    import mindspore.dataset.vision as V
    from mindspore.common import dtype as mstype

    workers = pipeline_workers(workers)
    data = _source(index, eval_files(index, rank=rank, world=world)[skip * batch_size:], workers)
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


PREFETCH_BATCHES = 16  # how far past the delivered batches Pillow looks when MindSpore names no file


def find_corrupt(
    error: BaseException, paths: list[Path], check: int | None = None
) -> tuple[Path | None, str]:
    """Which of `paths` made the pipeline fail, and why: MindSpore names the file in its error
    ("The corresponding data file is: ..."); otherwise Pillow checks the first `check` of them.
    (None, "") if none."""
    message = str(error)
    for path in paths:
        at = message.find(str(path))
        if at >= 0:
            reason = message[at + len(str(path)):].lstrip(". ").split("\n")[0].split(". ")[0]
            return path, reason.strip() or "cannot be decoded"
    from PIL import Image

    for path in paths[:check]:
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as problem:  # Pillow raises many types for bad data
            return path, f"{type(problem).__name__}: {problem}"
    return None, ""


#: Niceness of the input pipeline's threads (Linux, 19 the lowest priority). On CPU they decode on
#: the cores the training step computes on, and a decoding thread that takes a core in the middle of
#: an operator holds back every thread of it; at the lowest priority they decode in the cores' idle
#: moments instead (between operators, during single-threaded ones). `mnv2 train` on 2 cores, three
#: runs each way: batch 8, 218 -> 214 ms per step; batch 150, 3526 -> 3445 ms (one run); batch 32 the same.
PIPELINE_NICE = 19


def _threads() -> set[str]:
    """This process's thread ids (empty where /proc is not there)."""
    try:
        return set(os.listdir("/proc/self/task"))
    except OSError:
        return set()


def yielding_cores(batches: Iterator[Any]) -> Iterator[Any]:
    """`batches`, with the threads its pipeline starts (all there once the first batch is out: MindSpore
    starts them as the iterator first runs) at PIPELINE_NICE."""
    before = _threads()
    for position, item in enumerate(batches):
        if position == 0:
            for thread in _threads() - before:
                # Only lowers (never needs a privilege); a thread that has ended meanwhile is skipped.
                with suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, int(thread), PIPELINE_NICE)
        yield item


def tolerant_batches(
    make: Callable[[int], tuple[Any, np.ndarray]], index: ImageFolderIndex, *, batch_size: int,
    on_corrupt: str, what: str,
) -> Iterator[tuple[Any, Any]]:
    """Batches of `make(start_batch)` -> (dataset, its files in order), with corrupt files handled
    where they are decoded: `error` raises InputError naming the file; `skip` names it, marks it bad
    and continues with a pipeline rebuilt from the failing batch on."""
    start = 0
    while True:
        dataset, files = make(start)
        done = 0
        try:
            for images, labels in yielding_cores(dataset.create_tuple_iterator(num_epochs=1)):
                yield images, labels
                done += 1
            return
        except RuntimeError as error:
            # The pipeline decodes ahead of the batches delivered, so the file may sit in any later one.
            pending = [int(i) for i in files[done * batch_size:]]
            culprit, reason = find_corrupt(error, [index.files[i] for i in pending],
                                           check=PREFETCH_BATCHES * batch_size)
            if culprit is None:
                raise
            if on_corrupt != "skip":
                raise InputError(f"{what}: {culprit}: corrupt or unreadable image: {reason}") from None
            notice(f"skipping corrupt image {culprit}: {reason} (on_corrupt_image=skip)")
            index.bad.add(pending[[index.files[i] for i in pending].index(culprit)])
            start += done
