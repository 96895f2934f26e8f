"""Where this process stands among its peers, and the few collectives the trainer needs.

The launcher (`mnv2 launch`) starts one process per device and sets MindSpore's own variables
(MS_ROLE/MS_SCHED_* for the dynamic cluster, RANK_TABLE_FILE for Ascend HCCL). When either is
present we initialise collective communication and data parallelism; otherwise this is a single
process (rank 0 of 1) and every collective is the identity. With MS_ROLE=MS_SCHED the process is
only the cluster's scheduler: it calls init() (which serves until the workers finish) and returns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from mnv2 import launchenv
from mnv2.exitcodes import ExitCode, TrainerError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    distributed: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, exports, config.yaml and the final result line."""
        return self.rank == 0


def wants_collectives(environ: os._Environ[str] | dict[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return bool(environ.get(launchenv.MS_ROLE) or environ.get(launchenv.RANK_TABLE_FILE))


def is_scheduler(environ: os._Environ[str] | dict[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return environ.get(launchenv.MS_ROLE) == "MS_SCHED"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise TrainerError(f"{name}: not an integer: {value!r}", ExitCode.INVALID_CONFIG) from None


def local_device_id() -> int:
    """The device this process drives: DEVICE_ID (rank-table mode), else the local rank."""
    return _env_int(launchenv.DEVICE_ID, _env_int(launchenv.LOCAL_RANK, 0))


def setup() -> DistContext:
    """Initialise communication when launched for it; call after the device context is set."""
    local_rank = _env_int(launchenv.LOCAL_RANK, 0)
    if not wants_collectives():
        return DistContext(
            rank=_env_int(launchenv.RANK, 0), world=_env_int(launchenv.WORLD_SIZE, 1),
            local_rank=local_rank, distributed=False,
        )
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    try:
        init()
    except Exception as error:  # MindSpore raises RuntimeError/ValueError with the reason
        raise TrainerError(f"communication: init() failed: {error}", ExitCode.COMMUNICATION_ERROR) from None
    if is_scheduler():
        return DistContext(rank=-1, world=0, local_rank=local_rank, distributed=True)
    rank, world = get_rank(), get_group_size()
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(
        parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True, device_num=world
    )
    return DistContext(rank=rank, world=world, local_rank=local_rank, distributed=world > 1)


def all_reduce_sum(values: np.ndarray, ctx: DistContext) -> np.ndarray:
    """Sum a small float vector over all ranks (exact counts for evaluation, stop flags)."""
    if not ctx.distributed:
        return np.asarray(values, dtype=np.float32)
    from mindspore import Tensor

    result = _all_reduce_cell()(Tensor(np.asarray(values, dtype=np.float32)))
    return result.asnumpy()


def broadcast_from_main(values: tuple[Any, ...], ctx: DistContext) -> tuple[np.ndarray, ...]:
    """Rank 0's arrays on every rank (the others' inputs give only shape and dtype), in one collective.

    Every rank must call it with the same shapes and dtypes in the same order, as with any collective.
    """
    arrays = tuple(np.ascontiguousarray(np.asarray(v)) for v in values)
    if not ctx.distributed or not arrays:
        return arrays
    from mindspore import Tensor

    result = _broadcast_cell()(tuple(Tensor(a) for a in arrays))
    return tuple(r.asnumpy() for r in result)


def broadcast_parameters(params: list[Any], ctx: DistContext) -> None:
    """Overwrite every rank's parameters with rank 0's values (weights, optimizer state)."""
    if not ctx.distributed or not params:
        return
    from mindspore import Tensor

    values = broadcast_from_main(tuple(p.asnumpy() for p in params), ctx)
    for param, value in zip(params, values, strict=True):
        param.set_data(Tensor(value, dtype=param.dtype))


_CELL: list = []
_BROADCAST: list = []


def _broadcast_cell():
    """A compiled cell around Broadcast from rank 0 (one call carries a whole tuple of tensors)."""
    if not _BROADCAST:
        from mindspore import nn, ops

        class BroadcastFromMain(nn.Cell):
            def __init__(self):
                super().__init__()
                self.broadcast = ops.Broadcast(0)

            def construct(self, values):
                return self.broadcast(values)

        _BROADCAST.append(BroadcastFromMain())
    return _BROADCAST[0]


def _all_reduce_cell():
    """A compiled cell around AllReduce (eager collectives are not supported in GRAPH mode)."""
    if not _CELL:
        from mindspore import nn, ops

        class AllReduceSum(nn.Cell):
            def __init__(self):
                super().__init__()
                self.reduce = ops.AllReduce()

            def construct(self, x):
                return self.reduce(x)

        _CELL.append(AllReduceSum())
    return _CELL[0]
