"""The MindSpore model zoo's MobileNetV2 parameter names and shapes, derived from the zoo's code alone.

Source: mindspore-ai/models, official/cv/MobileNet/mobilenetv2/src/mobilenetV2.py (commit be72367).
There `mobilenet_v2(backbone, head)` returns `MobileNetV2Combine(backbone, head)`, whose
`__init__` calls `super().__init__(auto_prefix=False)`, so the names start at the sub-cells'
attributes: `MobileNetV2Backbone.features` (a SequentialCell) and `MobileNetV2Head.dense`:

- `ConvBNReLU`: `self.features = SequentialCell([conv, BatchNorm2d, ReLU6])`, the conv without bias
  (nn.Conv2d's default), depthwise (`group=in_channels`, out = in) when groups > 1;
- `InvertedResidual`: `self.conv = SequentialCell([ConvBNReLU 1x1 (only when t != 1), ConvBNReLU dw,
  Conv2d 1x1 (has_bias=False), BatchNorm2d])`;
- the backbone: `ConvBNReLU(3, 32*w, stride 2)`, the blocks of the (t, c, n, s) table, then
  `ConvBNReLU(last, 1280*max(1, w), 1)`; the head: `GlobalAvgPooling` (no parameters) and
  `nn.Dense(1280, classes, has_bias=True)`;
- BatchNorm2d holds `moving_mean`, `moving_variance`, `gamma`, `beta`.

Nothing here imports the trainer's model: tests compare our network and our files against this.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ZOO_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))
BN = ("moving_mean", "moving_variance", "gamma", "beta")


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def zoo_parameter_shapes(width_mult: float = 1.0, num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """Every parameter of the zoo's `mobilenet_v2(backbone, head)`: name -> shape."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, channels: int) -> None:
        for name in BN:
            shapes[f"{prefix}.{name}"] = (channels,)

    def conv_bn_relu(prefix: str, cin: int, cout: int, kernel: int, depthwise: bool = False) -> None:
        shapes[f"{prefix}.features.0.weight"] = (cin, 1, kernel, kernel) if depthwise else (cout, cin, kernel,
                                                                                            kernel)
        bn(f"{prefix}.features.1", cout)

    channels = _make_divisible(32 * width_mult)
    last = _make_divisible(1280 * max(1.0, width_mult))
    conv_bn_relu("features.0", 3, channels, 3)
    index = 1
    for t, c, n, _ in ZOO_SETTINGS:
        out = _make_divisible(c * width_mult)
        for _ in range(n):
            hidden = round(channels * t)
            prefix, layer = f"features.{index}.conv", 0
            if t != 1:
                conv_bn_relu(f"{prefix}.0", channels, hidden, 1)
                layer = 1
            conv_bn_relu(f"{prefix}.{layer}", hidden, hidden, 3, depthwise=True)
            shapes[f"{prefix}.{layer + 1}.weight"] = (out, hidden, 1, 1)
            bn(f"{prefix}.{layer + 2}", out)
            channels, index = out, index + 1
    conv_bn_relu(f"features.{index}", channels, last, 1)
    shapes["dense.weight"] = (num_classes, last)
    shapes["dense.bias"] = (num_classes,)
    return shapes


def write_zoo_checkpoint(
    path: Path, width_mult: float, num_classes: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """A checkpoint with exactly the zoo's names and nothing else, like the official release.

    Values are plausible (the zoo's initialisation, BatchNorm statistics near 0/1) so a network runs
    on them; returns them.
    """
    import mindspore as ms

    rng = np.random.default_rng(seed)
    values: dict[str, np.ndarray] = {}
    for name, shape in zoo_parameter_shapes(width_mult, num_classes).items():
        if name.endswith(("moving_variance", "gamma")):
            value = 1.0 + 0.1 * rng.random(shape)
        elif name.endswith(("moving_mean", "beta", "bias")):
            value = 0.1 * rng.standard_normal(shape)
        elif name == "dense.weight":
            value = 0.01 * rng.standard_normal(shape)
        else:
            value = rng.standard_normal(shape) * np.sqrt(2.0 / (shape[0] * shape[2] * shape[3]))
        values[name] = value.astype(np.float32)
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in values.items()], str(path))
    return values
