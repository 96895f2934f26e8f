"""MobileNetV2 on MindSpore: the architecture as a table, split into backbone and head.

Parameter names are the MindSpore model zoo's (`features.*`, `dense.weight`, `dense.bias`): like the
zoo's `MobileNetV2Combine`, the whole network is built with `auto_prefix=False`, so neither
`backbone.` nor `head.` enters a name and zoo checkpoints load unchanged (and ours load in the zoo's
eval.py). The backbone returns the unpooled feature map; the head pools and classifies, which lets
the head-only mode cache pooled features and train the head alone.
"""

from __future__ import annotations

import math

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common import dtype as mstype

# (expansion t, output channels c, repeats n, first stride s): the paper's Table 2.
INVERTED_RESIDUAL_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
FIRST_CHANNELS = 32
LAST_CHANNELS = 1280


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of `divisor`, never losing more than 10 % (the zoo's rule)."""
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


class ConvBNReLU(nn.Cell):
    """Convolution, BatchNorm, ReLU6; depthwise when groups > 1 (zoo layout: `features.0/1`)."""

    def __init__(
        self, in_planes: int, out_planes: int, kernel_size: int = 3, stride: int = 1,
        groups: int = 1,
    ):
        super().__init__()
        if groups == 1:
            padding = (kernel_size - 1) // 2
            conv = nn.Conv2d(
                in_planes, out_planes, kernel_size, stride, pad_mode="pad", padding=padding, has_bias=False
            )
        else:  # depthwise; on CPU `mnv2.ops.depthwise.replace_slow_convolutions` swaps in a fast kernel
            conv = nn.Conv2d(
                in_planes, in_planes, 3, stride, pad_mode="pad", padding=1, group=in_planes, has_bias=False
            )
        self.features = nn.SequentialCell([conv, nn.BatchNorm2d(out_planes), nn.ReLU6()])

    def construct(self, x):
        return self.features(x)


class InvertedResidual(nn.Cell):
    """Expand (1x1), depthwise (3x3), project (1x1, linear); residual when shapes allow."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Cell] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(inp, hidden, kernel_size=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, 1, has_bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.SequentialCell(layers)

    def construct(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2Backbone(nn.Cell):
    """Stem, inverted residual stages, 1x1 to the last channels; returns the unpooled map."""

    def __init__(self, width_mult: float = 1.0, round_nearest: int = 8):
        super().__init__()
        input_channel = make_divisible(FIRST_CHANNELS * width_mult, round_nearest)
        self.out_channels = make_divisible(LAST_CHANNELS * max(1.0, width_mult), round_nearest)
        features: list[nn.Cell] = [ConvBNReLU(3, input_channel, stride=2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTINGS:
            output_channel = make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t))
                input_channel = output_channel
        features.append(ConvBNReLU(input_channel, self.out_channels, kernel_size=1))
        self.features = nn.SequentialCell(features)

    def construct(self, x):
        return self.features(x)


class GlobalAvgPool(nn.Cell):
    """(N, C, H, W) -> (N, C): the mean over height and width, as the zoo's head computes it (ReduceMean)."""

    def __init__(self):
        super().__init__()
        self.mean = ops.ReduceMean(keep_dims=False)

    def construct(self, x):
        return self.mean(x, (2, 3))


class WindowAvgPool(nn.Cell):
    """GlobalAvgPool as one AvgPool window over the whole plane: the same means (another summation
    order) and the same gradient (dy / (H*W) everywhere). On CPU, MindSpore's ReduceMean gradient
    (Tile, then RealDiv) made the pair 20 ms per training step at batch 32 (1280 x 7 x 7), against
    3-5 ms for AvgPool's; `mnv2.ops.depthwise.replace_slow_convolutions` swaps it in there."""

    def construct(self, x):
        pooled = ops.AvgPool(kernel_size=(x.shape[2], x.shape[3]), strides=1)(x)
        return pooled.reshape(x.shape[0], x.shape[1])


class MobileNetV2Head(nn.Cell):
    """Global average pooling and a dense classifier (`dense.weight`, `dense.bias`)."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.dense = nn.Dense(in_channels, num_classes, has_bias=True)
        self.pool = GlobalAvgPool()

    def construct(self, x):
        if x.ndim == 4:
            x = self.pool(x)
        return self.dense(x)


class MobileNetV2(nn.Cell):
    """Backbone plus head; `forward_features` and `forward_head` mirror timm/mindcv.

    `auto_prefix=False` as in the zoo's `MobileNetV2Combine`: parameters are named `features.*` and
    `dense.*`, the names of the zoo's checkpoints (REFERENCE.md section 1).
    """

    def __init__(
        self, num_classes: int = 1000, width_mult: float = 1.0, seed: int | None = None,
    ):
        super().__init__(auto_prefix=False)
        self.backbone = MobileNetV2Backbone(width_mult)
        self.head = MobileNetV2Head(self.backbone.out_channels, num_classes)
        initialize_weights(self, seed)

    def forward_features(self, x):
        return self.backbone(x)

    def forward_head(self, x):
        return self.head(x)

    def construct(self, x):
        return self.head(self.backbone(x))


def _set(param: Parameter, value: np.ndarray) -> None:
    param.set_data(Tensor(value.astype(np.float32), mstype.float32))


def initialize_weights(network: nn.Cell, seed: int | None = None) -> None:
    """The zoo's initialisation: conv N(0, sqrt(2/(k*k*out))), BN 1/0, dense N(0, 0.01) bias 0.

    Drawn from numpy so a seed gives the same network on every platform.
    """
    rng = np.random.default_rng(seed) if seed is not None else np.random
    for _, cell in network.cells_and_names():
        if isinstance(cell, nn.Conv2d) or (
            hasattr(cell, "weight") and isinstance(getattr(cell, "weight", None), Parameter)
            and cell.weight.ndim == 4
        ):
            shape = tuple(cell.weight.shape)
            k = shape[2] * shape[3]
            n = k * (cell.out_channels if hasattr(cell, "out_channels") else shape[0])
            _set(cell.weight, rng.normal(0.0, math.sqrt(2.0 / n), shape))
            if getattr(cell, "bias", None) is not None and isinstance(cell.bias, Parameter):
                _set(cell.bias, np.zeros(tuple(cell.bias.shape)))
        elif isinstance(cell, nn.BatchNorm2d):
            _set(cell.gamma, np.ones(tuple(cell.gamma.shape)))
            _set(cell.beta, np.zeros(tuple(cell.beta.shape)))
        elif isinstance(cell, nn.Dense):
            _set(cell.weight, rng.normal(0.0, 0.01, tuple(cell.weight.shape)))
            if cell.bias is not None:
                _set(cell.bias, np.zeros(tuple(cell.bias.shape)))


def count_parameters(network: nn.Cell) -> int:
    """Trainable parameters (3.3-3.5 M at width 1.0, 1000 classes)."""
    return sum(int(np.prod(p.shape)) for p in network.trainable_params())
