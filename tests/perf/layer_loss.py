"""The loss through which the kernel tests take a layer's gradients."""

from __future__ import annotations

from mindspore import nn, ops


class LayerLoss(nn.Cell):
    """sum(layer(x) * g): its gradients are the layer's backward applied to the upstream gradient g."""

    def __init__(self, layer: nn.Cell) -> None:
        super().__init__()
        self.layer = layer

    def construct(self, x, g):
        return ops.reduce_sum(ops.mul(self.layer(x), g))
