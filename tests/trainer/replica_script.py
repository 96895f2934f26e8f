"""One replica of a two-rank trainer run, for test_resume_replicas.py (not a test module itself).

    python replica_script.py prepare OUT TREE   # one process as rank 0 of 2: stop mid-epoch, checkpoint
    python replica_script.py resume OUT TREE    # a dynamic-cluster process (MS_ROLE set): resume, train

Each rank writes into its own folder OUT/rank<r> (as with node-local outputs), so only rank 0's
folder holds a checkpoint; after resuming each rank saves its final parameters to OUT/params-<r>.npz.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

STOP_AFTER = 6  # steps of the interrupted run: epoch 1, step 2 of 4


def config(out: Path, tree: Path, rank: int, resume: bool):
    from mnv2.config import build_config

    return build_config(dict(
        platform="CPU", dataset_path=str(tree), output_dir=str(out / f"rank{rank}"), num_classes=4,
        image_size=32, width_mult=0.25, batch_size=4, epochs=2, warmup_epochs=0, lr_init=0.05, lr_max=0.05,
        lr_end=0.0, num_workers=1, seed=7, resume=resume,
    ))


def main(mode: str, out: Path, tree: Path) -> int:
    import faulthandler

    faulthandler.enable()
    import numpy as np
    from mnv2.distributed import DistContext, is_scheduler, setup
    from mnv2.train import StopFlag, set_device_context, train

    class StopAfter(StopFlag):
        def __init__(self, steps: int):
            super().__init__()
            self.left = steps

        @property
        def requested(self) -> bool:
            self.left -= 1
            return self.left <= 0

        @requested.setter
        def requested(self, value: bool) -> None:
            pass

    set_device_context(config(out, tree, 0, False))
    if mode == "prepare":
        result = train(config(out, tree, 0, False), DistContext(rank=0, world=2), StopAfter(STOP_AFTER))
        print(f"prepared {result.last_checkpoint} at global step {result.global_step}", flush=True)
        return 0
    ctx = setup()
    if is_scheduler():
        return 0
    result = train(config(out, tree, ctx.rank, True), ctx)
    print(f"rank {ctx.rank} finished at global step {result.global_step}", flush=True)
    np.savez(out / f"params-{ctx.rank}.npz", **{p.name: p.asnumpy() for p in result.network.get_parameters()})
    return int(result.exit_code)


if __name__ == "__main__":
    os.environ.setdefault("MNV2_EXECUTION_MODE", "graph")
    raise SystemExit(main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])))
