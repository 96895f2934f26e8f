"""A minimal data-parallel MindSpore training script, independent of the trainer.

Run as a dynamic-cluster process (MS_ROLE set: scheduler or worker) it trains a tiny net on its
shard of a fixed global batch with DATA_PARALLEL and mean-reduced gradients. Run with no MS_ROLE
it trains the same net in one process on the whole batch: the reference the ranks must match.
Writes the final parameters to <out>/params-<rank>.npz (rank "single" for the reference).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

GLOBAL_BATCH = 8
FEATURES = 6
CLASSES = 3
STEPS = 4


def _data(step: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1000 + step)
    x = rng.standard_normal((GLOBAL_BATCH, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, GLOBAL_BATCH).astype(np.int32)
    return x, y


def main(out: Path) -> int:
    import faulthandler

    faulthandler.enable()  # a crash in MindSpore's native code shows its Python stack in the log
    import mindspore as ms
    from mindspore import nn
    from mindspore.communication import get_group_size, get_rank, init

    ms.set_context(mode=ms.GRAPH_MODE)
    distributed = "MS_ROLE" in os.environ
    if distributed:
        init()
        if os.environ["MS_ROLE"] == "MS_SCHED":
            return 0
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
        rank, size = get_rank(), get_group_size()
    else:
        rank, size = "single", 1
    ms.set_seed(7)
    net = nn.SequentialCell(nn.Dense(FEATURES, 5), nn.ReLU(), nn.Dense(5, CLASSES))
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    optimizer = nn.Momentum(net.trainable_params(), learning_rate=0.1, momentum=0.9)
    step_cell = nn.TrainOneStepCell(nn.WithLossCell(net, loss), optimizer)
    step_cell.set_train()
    initial = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    np.savez(out / f"initial-{rank}.npz", **initial)
    shard = GLOBAL_BATCH // size
    for step in range(STEPS):
        x, y = _data(step)
        if distributed:
            x, y = x[rank * shard : (rank + 1) * shard], y[rank * shard : (rank + 1) * shard]
        value = step_cell(ms.Tensor(x), ms.Tensor(y))
        print(f"rank {rank} step {step} loss {float(value.asnumpy()):.6f}", flush=True)
    params = {p.name: p.asnumpy() for p in net.get_parameters()}
    np.savez(out / f"params-{rank}.npz", **params)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
