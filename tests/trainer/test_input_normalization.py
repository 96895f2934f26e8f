"""With the project's kernels the trainer's batches leave the pipeline as uint8 and are normalized by
csrc/normalize.cc: the network must see the same float32 values as from the zoo's pipeline
(vision.Normalize, then HWC2CHW), bit for bit, or the kernels would change what is trained."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import small_config
from mnv2 import data
from mnv2.distributed import DistContext
from mnv2.train import _image_batches


def test_the_kernel_computes_visions_normalize(device):
    import mindspore.dataset.vision as V
    from mindspore import Tensor
    from mnv2.ops.normalize import normalize_images

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 37, 41, 3), dtype=np.uint8)  # HWC, odd sizes, every byte value
    images[0, 0, :3] = [[0, 0, 0], [255, 255, 255], [128, 64, 1]]
    zoo = np.stack([V.HWC2CHW()(V.Normalize(mean=data.MEAN, std=data.STD)(im)) for im in images])
    ours = normalize_images(Tensor(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))).asnumpy()
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, zoo)


@pytest.mark.parametrize("epoch", [0, 1])
def test_the_trainer_gets_the_pipelines_values_from_uint8_batches(trees, device, tmp_path, epoch):
    config = small_config(trees, tmp_path, batch_size=8)
    index = data.scan_image_folder(trees.train)
    zoo = list(_image_batches(index, config, DistContext(), custom_kernels=False)(epoch, 0))
    ours = list(_image_batches(index, config, DistContext(), custom_kernels=True)(epoch, 0))
    assert len(ours) == len(zoo) == index.num_images // 8
    for (x, y), (x_zoo, y_zoo) in zip(ours, zoo, strict=True):
        assert x.dtype == x_zoo.dtype and x.shape == x_zoo.shape == (8, 3, 32, 32)
        np.testing.assert_array_equal(x.asnumpy(), x_zoo.asnumpy())
        np.testing.assert_array_equal(y.asnumpy(), y_zoo.asnumpy())
