"""The network: the zoo's parameter names, size, initialisation, backbone/head split, the hub factory."""

from __future__ import annotations

import numpy as np
import pytest
from mnv2.exitcodes import ConfigError
from mnv2.hub import create_network
from zoo import zoo_parameter_shapes


def test_full_width_network_matches_the_zoo():
    """Names and shapes are exactly those of the zoo's `mobilenet_v2(backbone, head)` (see zoo.py)."""
    net = create_network("mobilenetv2", num_classes=1000, width_mult=1.0, seed=0)
    ours = {p.name: tuple(p.shape) for p in net.get_parameters()}
    assert ours == zoo_parameter_shapes(1.0, 1000)
    assert not any(n.startswith(("backbone.", "head.")) for n in ours)  # auto_prefix=False, as the zoo
    trainable = sum(int(np.prod(p.shape)) for p in net.trainable_params())
    assert 3.3e6 <= trainable <= 3.55e6
    params = {p.name: p.asnumpy() for p in net.get_parameters()}
    assert params["dense.weight"].std() == pytest.approx(0.01, rel=0.05)
    assert not params["dense.bias"].any()
    stem = params["features.0.features.0.weight"]  # 32 x 3 x 3 x 3
    assert stem.std() == pytest.approx(np.sqrt(2 / (9 * 32)), rel=0.15)
    assert np.all(params["features.0.features.1.gamma"] == 1)


@pytest.mark.parametrize("width", [0.25, 0.35, 0.75, 1.4])
def test_other_widths_match_the_zoo(width):
    net = create_network("mobilenetv2", num_classes=7, width_mult=width, seed=0)
    assert {p.name: tuple(p.shape) for p in net.get_parameters()} == zoo_parameter_shapes(width, 7)


def test_forward_shapes_and_split(device):
    import mindspore as ms

    net = create_network("mobilenetv2", num_classes=4, width_mult=0.25, seed=0)
    net.set_train(False)
    x = ms.Tensor(np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32))
    features = net.forward_features(x)
    assert tuple(features.shape) == (2, 1280, 1, 1)
    np.testing.assert_allclose(net(x).asnumpy(), net.forward_head(features).asnumpy(), rtol=1e-5, atol=1e-6)


def test_unknown_network_name_fails():
    with pytest.raises(ConfigError, match="unknown name 'resnet50'"):
        create_network("resnet50")
