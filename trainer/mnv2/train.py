"""The training run: a straight line of factory calls, one training loop for every mode.

    config -> device + ranks -> data -> network (+ pretrained) -> LR, loss, optimizer, AMP
           -> resume -> loop (log lines, metrics, NaN check, SIGTERM, checkpoints) -> evaluation

Full training feeds images; head-only training (`freeze_layer=backbone`) feeds cached pooled
features to the head alone. Both share the loop, the checkpoints and the log lines.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnv2 import checkpoint as ckpt
from mnv2 import data, launchenv
from mnv2.config import AmpLevel, FreezeLayer, Platform, TrainingConfig, save_config
from mnv2.distributed import DistContext, all_reduce_sum, broadcast_from_main, broadcast_parameters
from mnv2.exitcodes import DivergedError, ExitCode
from mnv2.logs import emit, epoch_line, notice, result_line, step_line

EXECUTION_MODE_ENV = "MNV2_EXECUTION_MODE"  # graph (default: fastest per step) or pynative (fastest start)
LOG_EVERY_ENV = "MNV2_LOG_EVERY"  # print a step line every N steps (always at an epoch's last step)
DEFAULT_LOG_EVERY = 100
NO_DECAY_SUFFIXES = ("gamma", "beta", "bias")


@dataclass
class TrainResult:
    exit_code: int = ExitCode.SUCCESS
    global_step: int = 0
    losses: list[float] = field(default_factory=list)
    last_checkpoint: Path | None = None
    top1: float | None = None
    top5: float | None = None
    steps_per_epoch: int = 0
    network: Any = None  # the trained network (in-process callers: tests, export after training)


def set_device_context(config: TrainingConfig) -> None:
    """Device target and execution mode; must precede any network or communication setup."""
    import mindspore as ms

    from mnv2.distributed import local_device_id

    mode = os.environ.get(EXECUTION_MODE_ENV, "graph").lower()
    ms.set_context(mode=ms.PYNATIVE_MODE if mode == "pynative" else ms.GRAPH_MODE)
    try:
        ms.set_device(str(config.platform), local_device_id())
    except RuntimeError:
        # MindSpore refuses once its runtime has run a kernel; fine when that runtime is already ours
        # (several trainings in one process, as in the test suite).
        if ms.get_context("device_target") != str(config.platform):
            raise


def seed_everything(seed: int) -> None:
    import mindspore as ms

    ms.set_seed(seed)
    np.random.seed(seed)


class StopFlag:
    """Set by SIGTERM: the loop finishes its step, saves a checkpoint and exits 143."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def install(self) -> StopFlag:
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. some test runners): nothing to install
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def split_decay_groups(params: list[Any], weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on convolution and dense weights only: not BatchNorm gamma/beta, not biases."""
    decay = [p for p in params if not p.name.endswith(NO_DECAY_SUFFIXES)]
    no_decay = [p for p in params if p.name.endswith(NO_DECAY_SUFFIXES)]
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_train_cell(network, loss_fn, params, lr_values: np.ndarray, config: TrainingConfig, amp: bool):
    """Optimizer and one-step cell; AMP and loss scaling per platform (REFERENCE §1)."""
    import mindspore as ms
    from mindspore import Tensor, nn

    fixed_scale = amp and not config.dynamic_loss_scale and config.loss_scale > 1.0
    optimizer = nn.Momentum(
        split_decay_groups(params, config.weight_decay),
        learning_rate=Tensor(lr_values),
        momentum=config.momentum,
        loss_scale=config.loss_scale if fixed_scale else 1.0,
    )
    level = str(config.amp_level) if amp else "O0"
    if not amp or (config.amp_level == AmpLevel.O0 and not fixed_scale and not config.dynamic_loss_scale):
        cell = nn.TrainOneStepCell(nn.WithLossCell(network, loss_fn), optimizer)
    else:
        if config.dynamic_loss_scale:
            manager = ms.amp.DynamicLossScaleManager(init_loss_scale=config.loss_scale, scale_factor=2,
                                                     scale_window=2000)
        else:
            manager = ms.amp.FixedLossScaleManager(config.loss_scale, drop_overflow_update=False)
        kwargs: dict[str, Any] = {"loss_scale_manager": manager}
        if level == "O3":
            kwargs["keep_batchnorm_fp32"] = False
        cell = ms.amp.build_train_network(network, optimizer, loss_fn, level=level, **kwargs)
    cell.set_train()
    return cell, optimizer


def _unpack(output: Any) -> tuple[float, bool, float | None]:
    """(loss, overflow, loss scale) from TrainOneStepCell or TrainOneStepWithLossScaleCell output."""
    if isinstance(output, tuple | list):
        loss = float(output[0].asnumpy())
        overflow = bool(output[1].asnumpy()) if len(output) > 1 else False
        scale = float(output[2].asnumpy()) if len(output) > 2 else None
        return loss, overflow, scale
    return float(output.asnumpy()), False, None


def _make_metrics(config: TrainingConfig, ctx: DistContext):
    from mnv2.trainer_metrics import TrainerMetrics

    port = config.metrics_port + ctx.local_rank if config.metrics_port else 0
    return TrainerMetrics(port=port, rank=max(ctx.rank, 0), job=os.environ.get(launchenv.JOB_NAME, ""))


def scan_datasets(config: TrainingConfig) -> tuple[data.ImageFolderIndex, data.ImageFolderIndex | None]:
    """Find and verify the training (and evaluation) images; InputError names what is wrong."""
    index = data.scan_image_folder(config.dataset_path, on_corrupt=config.on_corrupt_image)
    data.check_num_classes(index, config.num_classes)
    eval_index = None
    if config.eval_dataset_path:
        eval_index = data.scan_image_folder(
            config.eval_dataset_path, on_corrupt=config.on_corrupt_image, what="eval_dataset_path",
            class_names=index.classes,
        )
    return index, eval_index


NAN_FLUSH_SECONDS = 35.0  # a little over Prometheus's default 30 s scrape interval


def use_fast_cpu_kernels(network, config: TrainingConfig) -> None:
    """On CPU, swap MindSpore's slow depthwise and stem convolutions for the project's kernels.

    Parameters move into the new cells, so checkpoint keys and values are unchanged.
    """
    if config.fast_depthwise and config.platform == Platform.CPU:
        from mnv2.ops.depthwise import replace_slow_convolutions

        replace_slow_convolutions(network, dense_input_grad=False)


def train(
    config: TrainingConfig, ctx: DistContext, stop: StopFlag | None = None,
    datasets: tuple[data.ImageFolderIndex, data.ImageFolderIndex | None] | None = None,
) -> TrainResult:
    """Train per `config`; the device context and `ctx` are already set up by the caller.

    `datasets` is `scan_datasets(config)` when the caller already checked the inputs.
    """
    from mnv2.hub import create_network
    from mnv2.loss import LabelSmoothingCrossEntropy
    from mnv2.lr import warmup_cosine_lr

    seed_everything(config.seed)
    stop = stop or StopFlag()
    output_dir = Path(config.output_dir)
    ckpt_dir = output_dir / "checkpoint"
    if ctx.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, output_dir / "config.yaml")

    index, eval_index = datasets or scan_datasets(config)

    network = create_network(
        "mobilenetv2", num_classes=config.num_classes, width_mult=config.width_mult, seed=config.seed
    )
    if config.pretrain_ckpt:
        ckpt.load_pretrained(network, config.pretrain_ckpt, config.num_classes)
        notice(f"pretrain_ckpt: loaded {config.pretrain_ckpt}")
    use_fast_cpu_kernels(network, config)
    loss_fn = LabelSmoothingCrossEntropy(config.num_classes, config.label_smoothing)

    head_only = config.freeze_layer == FreezeLayer.BACKBONE
    if head_only:
        batches, spe = _head_batches(network, index, config, ctx)
        trainable = network.head.trainable_params()
        trained_cell = network.head
    else:
        spe = data.steps_per_epoch(index, batch_size=config.batch_size, world=ctx.world)
        batches = _image_batches(index, config, ctx)
        trainable = network.trainable_params()
        trained_cell = network

    lr_values = warmup_cosine_lr(
        lr_init=config.lr_init, lr_max=config.lr_max, lr_end=config.lr_end,
        warmup_epochs=config.warmup_epochs, epochs=config.epochs, steps_per_epoch=spe,
    )
    train_cell, _ = build_train_cell(trained_cell, loss_fn, trainable, lr_values, config, amp=not head_only)

    start_epoch, start_step, resumed_from = 0, 0, None
    if config.resume:
        start_epoch, start_step, resumed_from = resume_point(ctx, (network, train_cell), spe, ckpt_dir)
    # This run's checkpoint names: a resumed run keeps its own; a new run beside another's takes the next.
    prefix = ckpt.run_prefix(resumed_from) if resumed_from else ckpt.new_run_prefix(ckpt_dir)
    if ctx.is_main and config.save_checkpoint and prefix != ckpt.PREFIX and not resumed_from:
        notice(f"checkpoint: {ckpt_dir} holds another run's checkpoints; this run writes {prefix}-*.ckpt")

    metrics = _make_metrics(config, ctx)
    metrics.set_plan(epochs=config.epochs, steps_per_epoch=spe, batch_size=config.batch_size,
                     world_size=ctx.world)
    result = TrainResult(steps_per_epoch=spe, global_step=start_epoch * spe + start_step,
                         last_checkpoint=resumed_from, network=network)
    try:
        _loop(config, ctx, stop, network, train_cell, batches, spe, lr_values, start_epoch, start_step,
              metrics, result, ckpt_dir, prefix)
        if result.exit_code == ExitCode.SUCCESS and eval_index is not None:
            from mnv2.evaluate import evaluate

            evaluation = evaluate(network, eval_dataset(eval_index, config, ctx), ctx)
            result.top1, result.top5 = evaluation.top1, evaluation.top5
            metrics.on_eval(top1=evaluation.top1, top5=evaluation.top5)
            if ctx.is_main:
                notice(f"evaluation: {evaluation.correct1} of {evaluation.total} images right (top-1), "
                       f"{evaluation.correct5} in the top 5, over {ctx.world} rank(s)")
                last = str(result.last_checkpoint or "")
                emit(result_line(acc=evaluation.top1, top5=evaluation.top5, ckpt=last))
    finally:
        metrics.close()
    return result


RESUME_NONE, RESUME_FROM, RESUME_FAILED = 0, 1, 2


def resume_point(
    ctx: DistContext, cells: tuple[Any, ...], spe: int, ckpt_dir: Path
) -> tuple[int, int, Path | None]:
    """(epoch, step in epoch, checkpoint) to continue from; every rank gets the same, before any step.

    Rank 0 alone decides, from its own checkpoint folder (only rank 0 writes checkpoints; other ranks
    may have node-local outputs, or not see the newest file yet), and loads it. Its decision and
    then its weights and optimizer state reach every rank through a broadcast. When rank 0 cannot
    resume, every rank stops with it instead of waiting in a collective.
    """
    status, position, failure = RESUME_NONE, (0, 0, 0), None
    path: Path | None = None
    if ctx.is_main:
        try:
            state = ckpt.latest_resume_state(ckpt_dir)
            if state is not None:
                if state.steps_per_epoch != spe:
                    raise ckpt.CheckpointError(
                        f"resume: {state.path} was written with {state.steps_per_epoch} steps per epoch, "
                        f"this run has {spe} (dataset, batch_size or device count changed)"
                    )
                ckpt.restore(state.path, *cells)
                status, path = RESUME_FROM, state.path
                position = (state.epoch, state.step_in_epoch, state.global_step)
        except Exception as error:  # any failure: the other ranks must hear of it, not hang
            status, failure = RESUME_FAILED, error
    decision = np.array([status, *position], dtype=np.int32)
    status, epoch, step, global_step = (int(v) for v in broadcast_from_main((decision,), ctx)[0])
    if status == RESUME_FAILED:
        if failure is not None:
            raise failure
        raise ckpt.CheckpointError("resume: rank 0 could not resume from its checkpoint (see its log)")
    if status == RESUME_NONE:
        notice(f"resume: no checkpoint in rank 0's {ckpt_dir}; starting from the beginning")
        return 0, 0, None
    broadcast_parameters([entry["data"] for entry in ckpt.collect_parameters(*cells)], ctx)
    where = str(path) if path else "rank 0's checkpoint"
    notice(f"resume: {where} at epoch {epoch}, step {step}, global step {global_step}"
           + (f" (weights from rank 0, {ctx.world} ranks)" if ctx.distributed else ""))
    return epoch, step, path


def eval_dataset(index: data.ImageFolderIndex, config: TrainingConfig, ctx: DistContext):
    """This rank's evaluation batches, or None when its share is empty (more ranks than images)."""
    if len(data.eval_indices(index, rank=ctx.rank, world=ctx.world)) == 0:
        return None
    return data.create_eval_dataset(
        index, image_size=config.image_size, batch_size=config.batch_size, rank=ctx.rank, world=ctx.world,
        workers=config.num_workers,
    )


Batches = Callable[[int, int], Iterator[tuple[Any, Any]]]


def _image_batches(index: data.ImageFolderIndex, config: TrainingConfig, ctx: DistContext) -> Batches:
    def batches(epoch: int, skip: int) -> Iterator[tuple[Any, Any]]:
        dataset = data.create_train_dataset(
            index, image_size=config.image_size, batch_size=config.batch_size, epoch=epoch, seed=config.seed,
            rank=ctx.rank, world=ctx.world, workers=config.num_workers,
            min_crop_scale=config.min_crop_scale, horizontal_flip=config.horizontal_flip,
        )
        # Skipped batches still pass through the augmentations, so the random draws stay in step.
        for step, (images, labels) in enumerate(dataset.create_tuple_iterator(num_epochs=1)):
            if step >= skip:
                yield images, labels

    return batches


def _head_batches(network, index: data.ImageFolderIndex, config: TrainingConfig, ctx: DistContext):
    from mindspore import Tensor

    from mnv2.features import feature_batches, load_or_extract

    features, labels, _ = load_or_extract(
        network, index, ckpt=config.pretrain_ckpt, output_dir=config.output_dir, image_size=config.image_size,
        width_mult=config.width_mult, batch_size=config.batch_size, workers=config.num_workers, ctx=ctx,
    )
    spe = data.steps_per_epoch(index, batch_size=config.batch_size, world=ctx.world)

    def batches(epoch: int, skip: int) -> Iterator[tuple[Any, Any]]:
        for x, y in feature_batches(features, labels, batch_size=config.batch_size, steps=spe, epoch=epoch,
                                    seed=config.seed, rank=ctx.rank, skip=skip):
            yield Tensor(x), Tensor(y)

    return batches, spe


def _stop_agreed(stop: StopFlag, ctx: DistContext) -> bool:
    """All ranks stop after the same step, or the ones still running would wait in all-reduce forever."""
    if not ctx.distributed:
        return stop.requested
    return bool(all_reduce_sum(np.array([1.0 if stop.requested else 0.0]), ctx)[0] > 0)


def _log_every() -> int:
    try:
        return max(1, int(os.environ.get(LOG_EVERY_ENV, DEFAULT_LOG_EVERY)))
    except ValueError:
        return DEFAULT_LOG_EVERY


def _loop(config, ctx, stop, network, train_cell, batches, spe, lr_values, start_epoch, start_step,
          metrics, result: TrainResult, ckpt_dir: Path, prefix: str = ckpt.PREFIX) -> None:
    log_every = _log_every()
    images_per_step = config.batch_size * ctx.world

    def save(epoch: int, steps_done: int) -> None:
        if not (ctx.is_main and config.save_checkpoint):
            return
        started = time.perf_counter()
        next_epoch, next_step = (epoch + 1, 0) if steps_done == spe else (epoch, steps_done)
        meta = {"epoch": next_epoch, "step_in_epoch": next_step, "global_step": epoch * spe + steps_done,
                "steps_per_epoch": spe}
        path = ckpt.save_atomic(ckpt.collect_parameters(network, train_cell),
                                ckpt_dir / ckpt.checkpoint_name(epoch, steps_done, prefix), meta)
        ckpt.rotate(ckpt_dir, config.keep_checkpoint_max, prefix)
        result.last_checkpoint = path
        metrics.on_checkpoint(seconds=time.perf_counter() - started)

    for epoch in range(start_epoch, config.epochs):
        skip = start_step if epoch == start_epoch else 0
        epoch_started = time.perf_counter()
        epoch_losses: list[float] = []
        step = skip
        train_cell.set_train()
        waited_since = time.perf_counter()
        for inputs, labels in batches(epoch, skip):
            step_started = time.perf_counter()
            output = train_cell(inputs, labels)
            loss, overflow, scale = _unpack(output)
            step_ms = (time.perf_counter() - step_started) * 1000.0
            global_step = epoch * spe + step
            lr = float(lr_values[global_step])
            metrics.on_step(
                epoch=epoch, step=step, global_step=global_step + 1, loss=loss, lr=lr,
                step_seconds=step_ms / 1000.0, data_wait_seconds=step_started - waited_since,
                images=images_per_step, loss_scale=scale, overflow=overflow,
            )
            if not math.isfinite(loss):
                # Let Prometheus scrape the NaN first (one scrape interval), so MNV2LossNaN can fire.
                metrics.flush(timeout=NAN_FLUSH_SECONDS)
                raise DivergedError(
                    f"loss became {loss} at global step {global_step} (epoch {epoch}, step {step})"
                )
            epoch_losses.append(loss)
            result.losses.append(loss)
            if step == spe - 1 or (step + 1) % log_every == 0:
                emit(step_line(epoch=epoch, epochs=config.epochs, step=step, steps=spe, loss=loss,
                               avg_loss=float(np.mean(epoch_losses)), step_ms=step_ms, lr=lr))
            step += 1
            result.global_step = global_step + 1
            if _stop_agreed(stop, ctx):
                save(epoch, step)
                where = str(result.last_checkpoint) if result.last_checkpoint else "nothing (not rank 0)"
                notice(f"SIGTERM: stopped after global step {result.global_step}; saved {where}")
                result.exit_code = ExitCode.INTERRUPTED
                return
            waited_since = time.perf_counter()
        epoch_ms = (time.perf_counter() - epoch_started) * 1000.0
        done = max(1, step - skip)
        avg = float(np.mean(epoch_losses)) if epoch_losses else float("nan")
        emit(epoch_line(epoch_ms=epoch_ms, per_step_ms=epoch_ms / done, avg_loss=avg))
        metrics.on_epoch_end(epoch=epoch, images_per_second=done * images_per_step / (epoch_ms / 1000.0),
                             avg_loss=avg)
        if (epoch + 1) % config.save_checkpoint_epochs == 0 or epoch + 1 == config.epochs:
            save(epoch, spe)
