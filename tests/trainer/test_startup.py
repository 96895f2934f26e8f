"""Start-up proportional to listing: no image opened before training, corrupt files met where decoded.

Before, every rank opened and verified every image before the first step (and again on each resume
and `mnv2 eval`), and a resumed epoch decoded the batches it skipped. bench/startup.py measures it.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import small_config
from mnv2 import data
from mnv2.distributed import DistContext
from mnv2.exitcodes import InputError
from mnv2.train import _image_batches


@pytest.fixture
def tree(trees, tmp_path):
    root = tmp_path / "train"
    shutil.copytree(trees.train, root)
    return root


def _first_epoch_file(index, config, batch: int):
    """A file that epoch 0 of rank 0 reads in batch `batch` (positions are fixed by seed and epoch)."""
    files = data.train_files(index, epoch=0, seed=config.seed, rank=0, world=1, batch_size=config.batch_size)
    return index.files[int(files[batch * config.batch_size])]


def test_the_scan_lists_without_opening_any_image(tree, monkeypatch):
    import PIL.Image

    def no_open(*args, **kwargs):
        raise AssertionError("the scan opened an image")

    monkeypatch.setattr(PIL.Image, "open", no_open)
    index = data.scan_image_folder(tree)
    assert index.num_images == 4 * 32


def test_a_corrupt_image_stops_training_naming_it_where_it_is_decoded(tree, device, tmp_path):
    config = small_config(tree_paths(tree), tmp_path, on_corrupt_image="error")
    index = data.scan_image_folder(tree)
    bad = _first_epoch_file(index, config, batch=3)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(64)))
    batches = _image_batches(index, config, DistContext())(0, 0)
    seen = 0
    with pytest.raises(InputError, match=rf"dataset_path: {bad}: corrupt or unreadable image"):
        for _ in batches:
            seen += 1
    assert seen <= 3  # it stops at batch 3 at the latest (MindSpore may meet the file while prefetching)


def test_skip_policy_names_the_file_and_keeps_every_step(tree, device, tmp_path, capsys):
    config = small_config(tree_paths(tree), tmp_path, on_corrupt_image="skip")
    index = data.scan_image_folder(tree)
    bad = _first_epoch_file(index, config, batch=2)
    bad.write_bytes(b"GIF89a not a picture")
    spe = data.steps_per_epoch(index, batch_size=config.batch_size, world=1)
    labels = [y.asnumpy() for _, y in _image_batches(index, config, DistContext())(0, 0)]
    assert len(labels) == spe  # the same number of steps on every rank: its place went to a good file
    assert f"skipping corrupt image {bad}" in capsys.readouterr().err
    position = index.files.index(bad)
    assert index.bad == {position}
    later = data.train_files(index, epoch=1, seed=config.seed, rank=0, world=1, batch_size=config.batch_size)
    assert position not in later and len(later) == spe * config.batch_size


def test_a_resumed_epoch_does_not_decode_the_batches_it_skips(tree, device, tmp_path):
    """A corrupt file in batch 1 stops a run from the epoch's start, not one resumed at batch 2."""
    config = small_config(tree_paths(tree), tmp_path, on_corrupt_image="error")
    index = data.scan_image_folder(tree)
    _first_epoch_file(index, config, batch=1).write_bytes(b"not an image")
    resumed = list(_image_batches(index, config, DistContext())(0, 2))
    spe = data.steps_per_epoch(index, batch_size=config.batch_size, world=1)
    assert len(resumed) == spe - 2
    expected = data.train_files(index, epoch=0, seed=config.seed, rank=0, world=1,
                                batch_size=config.batch_size)[2 * config.batch_size:]
    np.testing.assert_array_equal(np.concatenate([y.asnumpy() for _, y in resumed]), index.labels[expected])
    with pytest.raises(InputError, match="corrupt or unreadable image"):
        list(_image_batches(index, config, DistContext())(0, 0))


def tree_paths(root):
    """The conftest `Trees` shape for small_config, with this test's own copy as the training tree."""
    from conftest import Trees

    return Trees(train=root, val=root)
