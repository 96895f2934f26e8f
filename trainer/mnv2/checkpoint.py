"""Checkpoints: atomic writes, rotation, resume state, and loading pretrained weights.

A checkpoint holds the network, the optimizer's state (moments, global step, the learning-rate
array) and the loss scale, plus where the run stood (epoch, step in epoch, global step, steps per
epoch), so `--resume` continues at the exact step on the same schedule. It is written to a hidden
temporary file in the same folder, fsynced, then renamed over the final name: readers never see a
partial file, and a failed write leaves the previous checkpoints as they were.

Parameter names are the model zoo's (`features.*`, `dense.*`, optimizer state `moments.features.*`).
Files written before we matched the zoo name them `backbone.features.*` and `head.dense.*`; every
reader here translates those, so old checkpoints still resume, fine-tune and evaluate.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnv2.exitcodes import CheckpointError, ExitCode, TrainerError
from mnv2.logs import notice

PREFIX = "mobilenetv2"
# `<run prefix>-<epoch>_<step>.ckpt`; the run prefix is `mobilenetv2`, or `mobilenetv2_<n>` for a later
# run in the same folder (MindSpore's ModelCheckpoint rule, mindspore/train/callback/_checkpoint.py
# `_chg_ckpt_file_name_if_same_exist`: a new run never takes over another run's files).
NAME_RE = re.compile(rf"^({PREFIX}(?:_\d+)?)-(\d+)_(\d+)\.ckpt$")
ANY_RUN_RE = re.compile(rf"^{PREFIX}(?:_(\d+))?-.*\.ckpt$")
BEST_SUFFIX = "-best.ckpt"  # `<run prefix>-best.ckpt`: the best by top-1 (never rotated, never resumed)
HEAD_PARAMS = ("dense.weight", "dense.bias")
BACKBONE_PREFIX = "features."
# Our first naming scheme put the sub-cells' names in front: `backbone.features.*`, `head.dense.*`,
# also inside optimizer state (`moments.backbone.features.*`).
LEGACY_NAME_RE = re.compile(r"(^|\.)(?:backbone\.(?=features\.)|head\.(?=dense\.))")
# Run position saved beside the parameters (prefixed: the optimizer owns a `global_step` parameter).
META_PREFIX = "mnv2_"
META_FIELDS = ("epoch", "step_in_epoch", "global_step", "steps_per_epoch")
META_KEYS = tuple(META_PREFIX + key for key in META_FIELDS)


@dataclass(frozen=True)
class ResumeState:
    path: Path
    epoch: int  # the epoch to continue (0-based)
    step_in_epoch: int  # batches of that epoch already trained
    global_step: int
    steps_per_epoch: int

    @property
    def prefix(self) -> str:
        """The run the checkpoint belongs to: a resumed run keeps writing (and rotating) its own files."""
        return run_prefix(self.path)


def checkpoint_name(epoch: int, step_in_epoch: int, prefix: str = PREFIX) -> str:
    """The zoo's naming: `mobilenetv2-<epoch, 1-based>_<step in that epoch>.ckpt`."""
    return f"{prefix}-{epoch + 1}_{step_in_epoch}.ckpt"


def best_name(prefix: str = PREFIX) -> str:
    return prefix + BEST_SUFFIX


def run_prefix(path: str | Path) -> str:
    match = NAME_RE.match(Path(path).name)
    return match.group(1) if match else PREFIX


def new_run_prefix(folder: str | Path) -> str:
    """The prefix of a new run in `folder`: `mobilenetv2` in a fresh folder, else the next `_<n>`."""
    folder = Path(folder)
    numbers = []
    if folder.is_dir():
        for entry in folder.iterdir():
            match = ANY_RUN_RE.match(entry.name)
            if match:
                numbers.append(int(match.group(1) or 0))
    return f"{PREFIX}_{max(numbers) + 1}" if numbers else PREFIX


def list_checkpoints(folder: str | Path, prefix: str | None = None) -> list[Path]:
    """One run's checkpoints in `folder`, oldest first (by epoch, then step).

    With no `prefix`, the run written most recently (the run whose newest checkpoint is the newest file).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    runs: dict[str, list[tuple[tuple[int, int], Path]]] = {}
    for entry in folder.iterdir():
        match = NAME_RE.match(entry.name)
        if match:
            runs.setdefault(match.group(1), []).append(((int(match.group(2)), int(match.group(3))), entry))
    if prefix is None and runs:
        prefix = max(runs, key=lambda run: (_mtime(max(runs[run])[1]), _run_number(run)))
    return [path for _, path in sorted(runs.get(prefix or PREFIX, []))]


def _run_number(prefix: str) -> int:
    return int(prefix.rpartition("_")[2]) if prefix != PREFIX else 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write(save_obj: list[dict[str, Any]], path: Path, meta: dict[str, Any]) -> None:
    """The MindSpore write, separate so tests can make it fail half-way like a full disk."""
    import mindspore as ms

    ms.save_checkpoint(save_obj, str(path), append_dict={META_PREFIX + k: v for k, v in meta.items()})


def save_atomic(save_obj: list[dict[str, Any]], path: str | Path, meta: dict[str, Any]) -> Path:
    """Write a checkpoint so that it appears complete or not at all; disk errors exit IO_ERROR.

    MindSpore writes its own intermediate files beside the target, so the write happens in a private
    hidden folder next to it (same file system, so the final rename is atomic) that is always removed.
    """
    path = Path(path)
    scratch: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", dir=path.parent))
        tmp = scratch / path.name
        _write(save_obj, tmp, meta)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except (OSError, RuntimeError, ValueError) as error:
        raise TrainerError(f"checkpoint: cannot write {path}: {error}", ExitCode.IO_ERROR) from None
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return path


def rotate(folder: str | Path, keep: int, prefix: str = PREFIX) -> list[Path]:
    """Delete this run's oldest checkpoints beyond `keep` (other runs' files are not ours to delete)."""
    existing = list_checkpoints(folder, prefix)
    doomed = existing[: max(0, len(existing) - keep)]
    for path in doomed:
        try:
            path.unlink()
        except OSError as error:
            notice(f"could not delete old checkpoint {path}: {error}")
    return doomed


def collect_parameters(*cells: Any) -> list[dict[str, Any]]:
    """Every parameter of the given cells, each name once (network first, then optimizer state)."""
    seen: dict[str, Any] = {}
    for cell in cells:
        for param in cell.get_parameters():
            seen.setdefault(param.name, param)
    return [{"name": name, "data": param} for name, param in seen.items()]


def zoo_name(name: str) -> str:
    """A parameter name in the zoo's scheme (names written by our first versions are translated)."""
    return LEGACY_NAME_RE.sub(r"\1", name)


def _load(path: Path, what: str) -> dict[str, Any]:
    """A checkpoint's parameters by zoo name."""
    import mindspore as ms

    if not path.is_file():
        raise CheckpointError(f"{what}: {path}: no such checkpoint file")
    try:
        params = ms.load_checkpoint(str(path))
    except Exception as error:  # MindSpore raises ValueError/RuntimeError for bad files
        raise CheckpointError(f"{what}: {path}: not a readable MindSpore checkpoint: {error}") from None
    renamed = {zoo_name(name): value for name, value in params.items()}
    if len(renamed) != len(params):
        raise CheckpointError(f"{what}: {path}: holds parameters under both the zoo's and the old names")
    return renamed


def latest_resume_state(folder: str | Path) -> ResumeState | None:
    """The newest checkpoint's position, or None when there is none to resume from."""
    for path in reversed(list_checkpoints(folder)):
        params = _load(path, "resume")
        try:
            values = {key: int(params[META_PREFIX + key].asnumpy()) for key in META_FIELDS}
        except KeyError as error:
            raise CheckpointError(f"resume: {path}: lacks the run position ({error.args[0]})") from None
        return ResumeState(path=path, **values)
    return None


def best_top1(path: Path) -> float | None:
    """The top-1 a best checkpoint (`<run>-best.ckpt`) was kept for, or None if it does not say."""
    value = _load(path, "keep_best").get(META_PREFIX + "top1")
    return None if value is None else float(value.asnumpy())


def restore(path: Path, *cells: Any) -> None:
    """Load a resume checkpoint into the network and optimizer (all names must be present)."""
    import mindspore as ms

    params = {k: v for k, v in _load(path, "resume").items() if k not in META_KEYS}
    wanted = {p["name"] for p in collect_parameters(*cells)}
    missing = sorted(wanted - set(params))
    if missing:
        raise CheckpointError(f"resume: {path}: parameter {missing[0]} is missing ({len(missing)} in all)")
    for cell in cells:
        _check_shapes(cell, params, path, "resume")
        ms.load_param_into_net(cell, params, strict_load=False)


def _check_shapes(network: Any, params: dict[str, Any], path: Path, what: str) -> None:
    for param in network.get_parameters():
        if param.name in params:
            have, want = tuple(params[param.name].shape), tuple(param.shape)
            if have != want:
                raise CheckpointError(
                    f"{what}: {path}: parameter {param.name} has shape {have}, the network needs {want}"
                )


def load_pretrained(network: Any, path: str | Path, num_classes: int) -> dict[str, Any]:
    """Load pretrained weights into `network` (zoo names; our older names are read too).

    A head for a different number of classes is dropped with a notice (fine-tuning to a new
    task); any other shape mismatch, or a checkpoint without the backbone, is a CheckpointError.
    Returns the parameters that were loaded.
    """
    import mindspore as ms

    path = Path(path)
    params = _load(path, "pretrain_ckpt")
    names = {p.name for p in network.get_parameters()}
    params = {k: v for k, v in params.items() if k in names}
    head = params.get(HEAD_PARAMS[0])
    head_classes = int(head.shape[0]) if head is not None else num_classes
    if head_classes != num_classes:
        notice(
            f"pretrain_ckpt: {path}: head has {head_classes} classes, this run {num_classes}: "
            "dropping the checkpoint's head (dense.*)"
        )
        for key in HEAD_PARAMS:
            params.pop(key, None)
    backbone = [n for n in names if n.startswith(BACKBONE_PREFIX)]
    missing = sorted(n for n in backbone if n not in params)
    if len(missing) == len(backbone):
        raise CheckpointError(f"pretrain_ckpt: {path}: holds no MobileNetV2 backbone parameters (features.*)")
    if missing:
        raise CheckpointError(
            f"pretrain_ckpt: {path}: parameter {missing[0]} is missing ({len(missing)} in all)"
        )
    _check_shapes(network, params, path, "pretrain_ckpt")
    ms.load_param_into_net(network, params, strict_load=False)
    return params


def resolve_checkpoint(path: str | Path, what: str = "pretrain_ckpt") -> Path:
    """A checkpoint file, or the newest of ours in a folder (or its `checkpoint/` sub-folder).

    The newest is the last checkpoint of the run written most recently.
    """
    path = Path(path)
    if path.is_dir():
        for folder in (path, path / "checkpoint"):
            found = list_checkpoints(folder)
            if found:
                return found[-1]
        raise CheckpointError(f"{what}: {path}: folder holds no {PREFIX}-*.ckpt checkpoint")
    if not path.is_file():
        raise CheckpointError(f"{what}: {path}: no such checkpoint file")
    return path


def load_for_inference(network: Any, path: str | Path, what: str = "pretrain_ckpt") -> None:
    """Load every network parameter (evaluation, export): nothing may be missing or mis-shaped."""
    import mindspore as ms

    path = Path(path)
    params = _load(path, what)
    names = [p.name for p in network.get_parameters()]
    missing = [n for n in names if n not in params]
    if missing:
        raise CheckpointError(
            f"{what}: {path}: parameter {missing[0]} is missing ({len(missing)} in all); "
            "check width_mult and num_classes"
        )
    _check_shapes(network, params, path, what)
    ms.load_param_into_net(network, {k: v for k, v in params.items() if k in set(names)}, strict_load=False)
