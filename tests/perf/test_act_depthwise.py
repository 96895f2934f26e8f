"""BatchNorm + ReLU6 applied by the depthwise kernel as it reads agrees with MindSpore's own layers.

The reference is nn.BatchNorm2d -> nn.ReLU6 -> nn.Conv2d(group=c) [-> nn.BatchNorm2d -> nn.ReLU6],
MindSpore's ops throughout; the fused cells are BatchNormForDepthwise -> DepthwiseAfterBatchNorm
[-> BatchNormAfterDepthwise, which in evaluation applies the second BatchNorm + ReLU6 inside the
kernel]. Compared: the output, the gradients of the input, each gamma and beta and the depthwise
weight, and the moving statistics, in training (batch statistics) and evaluation (moving
statistics), at every (channels, size, stride) where MobileNetV2 has a BatchNorm + ReLU6 before a
depthwise convolution, at widths 0.35 and 1.4 on odd image sizes, and at odd geometries (padding 0,
partial blocks of 8 and 16 channels, non-square planes).
"""

from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from layer_loss import LayerLoss  # noqa: E402
from mindspore import Tensor, nn, ops  # noqa: E402
from mnv2.model import FIRST_CHANNELS, INVERTED_RESIDUAL_SETTINGS, MobileNetV2, make_divisible  # noqa: E402
from mnv2.ops.act_depthwise import (  # noqa: E402
    BatchNormAfterDepthwise,
    BatchNormForDepthwise,
    DepthwiseAfterBatchNorm,
    fuse_batchnorm_into_depthwise,
)
from mnv2.ops.batchnorm import FusedBatchNorm2d, replace_batchnorm  # noqa: E402
from mnv2.ops.depthwise import DepthwiseConv2d, reference_depthwise, replace_slow_convolutions  # noqa: E402


def _out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1  # 3x3, padding 1


def fused_sites(width: float, image: int) -> set[tuple[int, int, int]]:
    """(channels, input size, stride) of each depthwise convolution that follows a BatchNorm + ReLU6
    of its own: every block's with an expansion, and the first block's (after the stem)."""
    size = _out(image, 2)
    channels = make_divisible(FIRST_CHANNELS * width)
    sites = set()
    for t, c, n, s in INVERTED_RESIDUAL_SETTINGS:
        for i in range(n):
            stride = s if i == 0 else 1
            sites.add((round(channels * t), size, stride))  # t = 1 (first block): the stem's BatchNorm
            size = _out(size, stride)
            channels = make_divisible(c * width)
    return sites


SITES = sorted(set().union(*(fused_sites(w, s) for w in (0.35, 1.4) for s in (33, 97))))
# (batch, channels, height, width, stride, padding) the network does not have.
ODD = [(1, 1, 1, 1, 1, 1), (2, 21, 15, 14, 2, 1), (1, 19, 26, 25, 2, 0), (2, 37, 7, 9, 1, 0),
       (1, 18, 56, 57, 1, 1)]


def test_site_table_matches_the_model():
    """17 pairs in the trainer's MobileNetV2, at the channels and strides of the table above."""
    net = MobileNetV2(num_classes=10, width_mult=0.35)
    counts = replace_slow_convolutions(net, dense_input_grad=False)
    assert counts["batchnorm_into_depthwise"] == 17
    convs = [c for _, c in net.cells_and_names() if isinstance(c, DepthwiseAfterBatchNorm)]
    assert len(convs) == 17
    assert {(c.channels, c.stride) for c in convs} == {(c, s) for c, _, s in fused_sites(0.35, 33)}
    assert len([c for _, c in net.cells_and_names() if isinstance(c, BatchNormForDepthwise)]) == 17
    # Every depthwise convolution's own BatchNorm + ReLU6 goes into its kernel in evaluation.
    assert len([c for _, c in net.cells_and_names() if isinstance(c, BatchNormAfterDepthwise)]) == 17
    assert all(c.then_batchnorm for c in convs)
    # Every depthwise convolution is fused; the last 1x1's BatchNorm + ReLU6 stays.
    assert not [c for _, c in net.cells_and_names() if type(c) is DepthwiseConv2d]
    assert len([c for _, c in net.cells_and_names() if type(c) is FusedBatchNorm2d and c.relu6]) == 1


def _batchnorm(channels: int, params: dict[str, np.ndarray]) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        getattr(bn, name).set_data(Tensor(params[name].astype(np.float32)))
    return bn


def _layers(channels: int, stride: int, padding: int, params: dict[str, np.ndarray], fused: bool,
            then_batchnorm: bool):
    """(layers, their BatchNorms, the depthwise convolution's weight) as MindSpore's or fused."""
    bns = [_batchnorm(channels, params)]
    conv = reference_depthwise(channels, stride, padding)
    conv.weight.set_data(Tensor(params["weight"].astype(np.float32)))
    if then_batchnorm:  # the depthwise convolution's own BatchNorm: other statistics
        bns.append(_batchnorm(channels, {k: v[::-1] for k, v in params.items()}))
    if not fused:
        after = [bns[1], nn.ReLU6()] if then_batchnorm else []
        return nn.SequentialCell([bns[0], nn.ReLU6(), conv, *after]), bns, conv.weight
    fast = DepthwiseConv2d(channels, 3, stride, padding)
    fast.weight = conv.weight
    cells = [BatchNormForDepthwise(FusedBatchNorm2d(bns[0], relu6=True)),
             DepthwiseAfterBatchNorm(fast, then_batchnorm)]
    if then_batchnorm:
        cells.append(BatchNormAfterDepthwise(FusedBatchNorm2d(bns[1], relu6=True), cells[1]))
    return nn.SequentialCell(cells), bns, conv.weight


def _run(layer: nn.Cell, bns, weight, x: Tensor, g: Tensor, training: bool) -> dict[str, np.ndarray]:
    layer.set_train(training)
    loss = LayerLoss(layer)
    loss.set_train(training)
    params = [weight] + [p for bn in bns for p in (bn.gamma, bn.beta)]
    grad = ops.GradOperation(get_all=True, get_by_list=True)(loss, params)
    (dx, _), grads = grad(x, g)  # one forward: the moving statistics move once
    got = {"y": layer(x).asnumpy(), "dx": dx.asnumpy(), "dweight": grads[0].asnumpy()}
    for i, bn in enumerate(bns):
        got |= {f"dgamma{i}": grads[1 + 2 * i].asnumpy(), f"dbeta{i}": grads[2 + 2 * i].asnumpy(),
                f"moving_mean{i}": bn.moving_mean.asnumpy(),
                f"moving_variance{i}": bn.moving_variance.asnumpy()}
    return got


def _compare(batch: int, channels: int, height: int, width: int, stride: int, padding: int, training: bool,
             seed: int, then_batchnorm: bool = False) -> None:
    rng = np.random.default_rng(seed)
    params = {
        "gamma": rng.uniform(0.5, 1.5, channels), "beta": rng.normal(0.5, 1.0, channels),
        "moving_mean": rng.normal(0, 1, channels), "moving_variance": rng.uniform(0.5, 2, channels),
        "weight": rng.normal(0, 0.5, (channels, 1, 3, 3)),
    }
    # A mean far from zero and a spread of ~2 (conv outputs), so ReLU6 clips on both sides.
    shape = (batch, channels, height, width)
    x = Tensor((rng.normal(1.0, 2.0, shape) + rng.normal(0, 3, (1, channels, 1, 1))).astype(np.float32))
    oh, ow = (height + 2 * padding - 3) // stride + 1, (width + 2 * padding - 3) // stride + 1
    g = Tensor(rng.standard_normal((batch, channels, oh, ow)).astype(np.float32))
    want = _run(*_layers(channels, stride, padding, params, False, then_batchnorm), x, g, training)
    got = _run(*_layers(channels, stride, padding, params, True, then_batchnorm), x, g, training)
    assert got.keys() == want.keys()
    for key, expected in want.items():
        if key.startswith("moving_variance") and training and batch * height * width == 1:
            continue  # MindSpore stores NaN for one value per channel; the kernel 0 (test_batchnorm.py)
        scale = float(np.abs(expected).max()) or 1.0
        where = (f"{key} {batch}x{channels}x{height}x{width} s{stride} p{padding} train={training} "
                 f"then_batchnorm={then_batchnorm}")
        np.testing.assert_allclose(got[key], expected, rtol=1e-4, atol=5e-5 * scale, err_msg=where)


def test_every_mobilenetv2_site(pynative):
    """Training and evaluation with the depthwise convolution's own BatchNorm + ReLU6 as in the
    network (in training it takes the kernel's batch statistics) at every site; without it at every
    third."""
    assert len(SITES) > 25
    for i, (channels, size, stride) in enumerate(SITES):
        _compare(2, channels, size, size, stride, 1, training=True, seed=i, then_batchnorm=True)
        _compare(2, channels, size, size, stride, 1, training=False, seed=i, then_batchnorm=True)
        if i % 3 == 0:
            _compare(2, channels, size, size, stride, 1, training=True, seed=i)
            _compare(2, channels, size, size, stride, 1, training=False, seed=i)


@pytest.mark.parametrize("shape", ODD, ids=lambda s: "x".join(map(str, s)))
def test_odd_geometries(pynative, shape):
    _compare(*shape, training=True, seed=sum(shape))
    _compare(*shape, training=False, seed=sum(shape) + 1)
    _compare(*shape, training=False, seed=sum(shape) + 2, then_batchnorm=True)
    _compare(*shape, training=True, seed=sum(shape) + 3, then_batchnorm=True)


# (batch, channels, height, width, stride, padding): 65 x 66 has more values per plane than the
# BatchNorm backward's plane-wise limit (4096), so its two-pass version goes channel by channel.
SUMS_SHAPES = [(2, 24, 65, 66, 1, 1), (3, 19, 15, 14, 2, 1), (2, 37, 7, 9, 1, 0), (1, 17, 56, 57, 1, 1),
               (2, 9, 28, 28, 2, 0)]


def _batchnorm_input(rng: np.random.Generator, shape: tuple[int, ...]) -> list[np.ndarray]:
    """x of `shape` with a spread-out mean per channel, and a training BatchNorm's gamma, beta and
    batch statistics (save_mean, save_invstd) over it."""
    channels = shape[1]
    x = (rng.normal(1.0, 2.0, shape) + rng.normal(0, 3, (1, channels, 1, 1))).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, channels).astype(np.float32)
    beta = rng.normal(0.5, 1.0, channels).astype(np.float32)
    mean = x.mean(axis=(0, 2, 3)).astype(np.float32)
    invstd = (1 / np.sqrt(x.var(axis=(0, 2, 3)) + 1e-5)).astype(np.float32)
    return [x, gamma, beta, mean, invstd]


def _backward_operands(shape: tuple[int, ...]) -> list[Tensor]:
    """(dy, x, weight, scale, bias, gamma, beta, save_mean, save_invstd) of an act-depthwise backward
    (batch, channels, height, width, stride, padding), scale and bias from that BatchNorm."""
    batch, channels, height, width, stride, padding = shape
    rng = np.random.default_rng(sum(shape))
    x, gamma, beta, mean, invstd = _batchnorm_input(rng, (batch, channels, height, width))
    oh, ow = (height + 2 * padding - 3) // stride + 1, (width + 2 * padding - 3) // stride + 1
    dy = rng.standard_normal((batch, channels, oh, ow)).astype(np.float32)
    weight = rng.normal(0, 0.5, (channels, 1, 3, 3)).astype(np.float32)
    scale = gamma * invstd
    bias = (beta - mean * scale).astype(np.float32)
    return [Tensor(a) for a in (dy, x, weight, scale, bias, gamma, beta, mean, invstd)]


@pytest.mark.parametrize("shape", SUMS_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_backward_sums_give_the_two_pass_backward_bit_for_bit(pynative, shape):
    """The depthwise backward that also sums the BatchNorm's gradient, then the one-pass BatchNorm
    backward, give the bits of the depthwise backward then the two-pass BatchNorm backward (the same
    per-plane sums added in the same order); the training cells take the first pair."""
    from mnv2.ops.act_depthwise import _depthwise, _depthwise_backward_with_sums
    from mnv2.ops.batchnorm import train_backward, train_backward_from_sums

    batch, channels, height, width, stride, padding = shape
    t = _backward_operands(shape)

    grad_act, dweight = _depthwise(stride, padding)[1](*t[:5])
    dx, dgamma, dbeta = train_backward(relu6=True)(grad_act, t[1], *t[5:])
    grad_act2, dweight2, sums = _depthwise_backward_with_sums(stride, padding)(*t)
    dx2, dgamma2, dbeta2 = train_backward_from_sums()(grad_act2, t[1], *t[5:], sums)

    pairs = [("grad_act", grad_act, grad_act2), ("dweight", dweight, dweight2), ("dx", dx, dx2),
             ("dgamma", dgamma, dgamma2), ("dbeta", dbeta, dbeta2), ("sums[:C]", dbeta, sums[:channels]),
             ("sums[C:2C]", dgamma, sums[channels:2 * channels])]
    for name, want, got in pairs:
        np.testing.assert_array_equal(got.asnumpy(), want.asnumpy(), err_msg=name)
    means = np.concatenate([dbeta.asnumpy(), dgamma.asnumpy()]) / (batch * height * width)
    np.testing.assert_allclose(sums.asnumpy()[2 * channels:], means, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("shape", SUMS_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_backward_through_batchnorm_after_is_bit_exact(pynative, shape):
    """The backward of act -> depthwise -> training BatchNorm + ReLU6 as the training cells run it
    (that BatchNorm's reduction, then the depthwise backward computing the convolution's output
    gradient as it reads dy) gives the bits of that BatchNorm's two-pass backward then the depthwise
    backward: the same per-plane formula (mnv2::grad_apply_plane) on the same sums."""
    from mnv2.ops.act_depthwise import _depthwise_backward_through_batchnorm, _depthwise_backward_with_sums
    from mnv2.ops.batchnorm import train_backward, train_backward_reduce

    stride, padding = shape[4:]
    dy, *inputs = _backward_operands(shape)
    conv, gamma2, beta2, mean2, invstd2 = (Tensor(a) for a in
                                           _batchnorm_input(np.random.default_rng(7), dy.shape))

    dconv, dgamma2, dbeta2 = train_backward(relu6=True)(dy, conv, gamma2, beta2, mean2, invstd2)
    grad_act, dweight, sums = _depthwise_backward_with_sums(stride, padding)(dconv, *inputs)
    dgamma2b, dbeta2b, means2 = train_backward_reduce()(dy, conv, gamma2, beta2, mean2, invstd2)
    grad_act2, dweight2, sums2 = _depthwise_backward_through_batchnorm(stride, padding)(
        dy, *inputs, conv, gamma2, beta2, mean2, invstd2, means2)

    pairs = [("dgamma2", dgamma2, dgamma2b), ("dbeta2", dbeta2, dbeta2b), ("grad_act", grad_act, grad_act2),
             ("dweight", dweight, dweight2), ("sums", sums, sums2)]
    for name, want, got in pairs:
        np.testing.assert_array_equal(got.asnumpy(), want.asnumpy(), err_msg=name)
    assert np.abs(dconv.asnumpy()).max() > 0.1  # the BatchNorm passes a gradient to compare with


def _network(fuse: bool) -> nn.Cell:
    net = MobileNetV2(num_classes=5, width_mult=0.35, seed=3)
    if fuse:
        replace_slow_convolutions(net, dense_input_grad=False)
    else:  # the same kernels, each BatchNorm + ReLU6 writing its output
        replace_slow_convolutions(net, dense_input_grad=False, fuse_batchnorm=False)
        replace_batchnorm(net)
    assert fuse == any(isinstance(c, DepthwiseAfterBatchNorm) for _, c in net.cells_and_names())
    return net


def _train_then_evaluate(net: nn.Cell, x: Tensor, y: Tensor, lr: float) -> tuple[list[float], np.ndarray]:
    """Three training steps (SGD with momentum), then the evaluation output (moving statistics)."""
    from mnv2.loss import LabelSmoothingCrossEntropy

    opt = nn.Momentum(net.trainable_params(), lr, 0.9, weight_decay=4e-5)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, LabelSmoothingCrossEntropy(5)), opt)
    step.set_train()
    losses = [float(step(x, y).asnumpy()) for _ in range(3)]
    net.set_train(False)
    return losses, net(x).asnumpy()


def _batch() -> tuple[Tensor, Tensor]:
    rng = np.random.default_rng(5)
    return (Tensor(rng.standard_normal((4, 3, 49, 49)).astype(np.float32)),
            Tensor(rng.integers(0, 5, 4).astype(np.int32)))


def test_graph_mode_network_is_pynative_bit_for_bit():
    """The trainer's fused MobileNetV2 trains and evaluates in GRAPH_MODE exactly as in PYNATIVE_MODE,
    whose layers the tests above compare with MindSpore's at every site: the cells' tuples, bprops
    and in-place moving averages are wired the same in the compiled graph."""
    x, y = _batch()
    runs = {}
    previous = ms.get_context("mode")
    try:
        for mode in (ms.GRAPH_MODE, ms.PYNATIVE_MODE):
            ms.set_context(mode=mode, device_target="CPU")
            net = _network(True)
            losses, evaluated = _train_then_evaluate(net, x, y, lr=0.05)
            runs[mode] = losses, evaluated, {p.name: p.asnumpy() for p in net.get_parameters()}
    finally:
        ms.set_context(mode=previous)
    (graph_losses, graph_eval, graph_params), (losses, evaluated, params) = runs.values()
    assert graph_losses == losses
    np.testing.assert_array_equal(graph_eval, evaluated)
    for name, value in params.items():
        np.testing.assert_array_equal(graph_params[name], value, err_msg=name)


def test_graph_mode_network_matches_unfused_kernels(graph_mode):
    """The fused network against the same kernels unfused, in GRAPH_MODE: the first loss, and the
    evaluation after three training forwards at learning rate 0 (so the moving statistics alone
    moved). Their batch statistics are summed in another order (the depthwise kernel's, per row as it
    writes its output), so later losses are not compared: in this small network a 1e-7 change of the
    input moves the third loss by 8 % (ReLU6's gradient masks flip), fused or not.

    (Against MindSpore's own layers the whole network is compared in test_training_equivalence.py.)
    """
    x, y = _batch()
    ref_net, net = _network(False), _network(True)
    ref_losses, ref_eval = _train_then_evaluate(ref_net, x, y, lr=0.0)
    losses, evaluated = _train_then_evaluate(net, x, y, lr=0.0)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    np.testing.assert_allclose(evaluated, ref_eval, rtol=1e-4, atol=1e-5 * float(np.abs(ref_eval).max()))
    untrained = _network(True)
    untrained.set_train(False)
    assert not np.allclose(untrained(x).asnumpy(), evaluated, rtol=1e-2)  # the moving statistics moved
    # the same names: checkpoints load either way
    assert [p.name for p in net.get_parameters()] == [p.name for p in ref_net.get_parameters()]


def test_only_fused_relu6_batchnorms_before_depthwise_are_taken():
    """A network without the kernels swapped in, or a second call, changes nothing."""
    net = MobileNetV2(num_classes=10, width_mult=0.35)
    assert fuse_batchnorm_into_depthwise(net) == 0  # MindSpore's own layers: left alone
    replace_slow_convolutions(net, dense_input_grad=False)
    assert fuse_batchnorm_into_depthwise(net) == 0  # already fused
    with pytest.raises(ValueError, match="ReLU6"):
        BatchNormForDepthwise(FusedBatchNorm2d(nn.BatchNorm2d(4), relu6=False))
    with pytest.raises(ValueError, match="ReLU6"):
        BatchNormAfterDepthwise(FusedBatchNorm2d(nn.BatchNorm2d(4), relu6=False),
                                DepthwiseAfterBatchNorm(DepthwiseConv2d(4, 3, 1, 1), True))
