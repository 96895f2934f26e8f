"""Fixtures for the trainer tests: tiny generated image trees and one shared real training run.

Real MindSpore on CPU, 32 px images, width 0.25, batch 16: a full run is a few dozen steps.
GRAPH mode is used: on this network it compiles in a few seconds and then runs steps about 5x
faster than PYNATIVE, which wins from ~20 steps on (measured: 18 steps 15.7 s vs 20.5 s).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mnv2.config import TrainingConfig, build_config
from mnv2.datasets import make_synthetic_tree
from mnv2.train import StopFlag

CLASSES = 4
TRAIN_PER_CLASS = 32
VAL_PER_CLASS = 8
SMALL: dict[str, Any] = dict(
    platform="CPU", num_classes=CLASSES, image_size=32, width_mult=0.25, batch_size=16,
    epochs=6, warmup_epochs=1, lr_init=0.0, lr_max=0.02, lr_end=0.0, num_workers=1, seed=7,
)


@dataclass(frozen=True)
class Trees:
    train: Path
    val: Path


@pytest.fixture(scope="session")
def trees(tmp_path_factory: pytest.TempPathFactory) -> Trees:
    root = tmp_path_factory.mktemp("data")
    return Trees(
        train=make_synthetic_tree(root / "train", CLASSES, TRAIN_PER_CLASS, 32, seed=0),
        val=make_synthetic_tree(root / "val", CLASSES, VAL_PER_CLASS, 32, seed=1),
    )


def small_config(trees: Trees, output_dir: Path, **overrides: Any) -> TrainingConfig:
    layer = dict(SMALL, dataset_path=str(trees.train), eval_dataset_path=str(trees.val))
    layer["output_dir"] = str(output_dir)
    layer.update(overrides)
    return build_config(layer)


@pytest.fixture(scope="session")
def device() -> None:
    """MindSpore's process-wide context, set once (the CLI does the same per process)."""
    os.environ.setdefault("MNV2_EXECUTION_MODE", "graph")
    from mnv2.train import set_device_context

    set_device_context(build_config({"platform": "CPU"}))


@dataclass
class Trained:
    config: TrainingConfig
    result: Any
    output: Path
    log: str


@pytest.fixture(scope="session")
def trained(trees: Trees, device: None, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """One scratch training run (10 epochs x 8 steps) that several tests inspect or start from.

    Ten epochs, not fewer: with 8 steps per epoch the BatchNorm moving statistics need that long to
    settle, or top-1 depends on float rounding (seen when the CPU kernels changed the last bits).
    """
    import contextlib
    import io

    from mnv2.distributed import DistContext
    from mnv2.train import train

    output = tmp_path_factory.mktemp("scratch")
    config = small_config(trees, output, keep_checkpoint_max=3, epochs=10)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = train(config, DistContext())
    return Trained(config, result, output, buffer.getvalue())


class StopAfter(StopFlag):
    """Asks to stop once `steps` steps have run, like a SIGTERM arriving mid-epoch."""

    def __init__(self, steps: int):
        super().__init__()
        self.left = steps

    @property
    def requested(self) -> bool:  # read once after every step
        self.left -= 1
        return self.left <= 0

    @requested.setter
    def requested(self, value: bool) -> None:
        pass
