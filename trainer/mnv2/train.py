"""The training run: a straight line of factory calls, then a loop with the same hooks on every device.

    config -> device + ranks -> data -> network (+ pretrained) -> LR, loss, optimizer, AMP
           -> resume (rank 0 decides, broadcast) -> loop -> final evaluation -> artifacts

What happens around the steps (the seed's log lines, metrics, live progress, the NaN check, SIGTERM,
checkpoints, periodic evaluation, the best checkpoint, the training report) lives in `RunHooks`.
Two loops drive it: on CPU our own Python loop, one step at a time; on Ascend and GPU the model
zoo's `Model.train(..., dataset_sink_mode=True)`, whose callback calls the same hooks after each
sink (`MNV2_TRAIN_LOOP=python|model` overrides; on CPU `model` runs without sinking, which is how
the tests exercise the callback). Full training feeds images; head-only training
(`freeze_layer=backbone`) feeds cached pooled features to the head alone, always in the Python loop.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mnv2 import checkpoint as ckpt
from mnv2 import data, launchenv
from mnv2.config import AmpLevel, FreezeLayer, Platform, TrainingConfig, save_config
from mnv2.distributed import DistContext, all_reduce_sum, broadcast_from_main, broadcast_parameters
from mnv2.exitcodes import ConfigError, DivergedError, ExitCode
from mnv2.heap import release_free_heap
from mnv2.logs import emit, epoch_line, notice, result_line, step_line
from mnv2.report import EpochRecord, TrainingReport

EXECUTION_MODE_ENV = "MNV2_EXECUTION_MODE"  # graph (default: fastest per step) or pynative (fastest start)
LOG_EVERY_ENV = "MNV2_LOG_EVERY"  # print a step line every N steps (always at an epoch's last step)
TRAIN_LOOP_ENV = "MNV2_TRAIN_LOOP"  # python (CPU default) or model (Model.train; Ascend/GPU default)
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
    best_checkpoint: Path | None = None  # keep_best: the best checkpoint so far, and its top-1
    best_top1: float | None = None


def set_device_context(config: TrainingConfig) -> None:
    """Device target and execution mode; must precede any network or communication setup."""
    import mindspore as ms

    from mnv2.distributed import local_device_id

    mode = os.environ.get(EXECUTION_MODE_ENV, "graph").lower()
    ms.set_context(mode=ms.PYNATIVE_MODE if mode == "pynative" else ms.GRAPH_MODE)
    threads = data.thread_share()
    if threads:
        from mindspore._c_expression import RuntimeConf

        # This process's share of the pod's CPUs (the launcher's plan) for MindSpore's CPU kernel pool,
        # not the host's core count; MindSpore takes the setting once per process.
        if not RuntimeConf.get_instance().is_op_threads_num_configured():
            ms.device_context.cpu.op_tuning.threads_num(threads)
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


def decays_weight(param: Any) -> bool:
    """Weight decay on convolution and dense weights only: not BatchNorm gamma/beta, not biases."""
    return not param.name.endswith(NO_DECAY_SUFFIXES)


def make_optimizer(params, learning_rate, momentum: float, weight_decay: float, fused: bool,
                   loss_scale: float = 1.0):
    """The trainer's Momentum: decay on convolution and dense weights only (`decays_weight`). `fused`
    (CPU, the project's kernels in use) updates every parameter in one kernel, the same values; a
    fixed loss scale keeps nn.Momentum, which divides the gradients by it (the kernel does not)."""
    from mindspore import nn

    params = list(params)
    # The zoo gives Momentum two parameter groups (decay, no decay). One group whose per-parameter
    # decay flags make the same split is the same update bit for bit (tests/trainer/test_recipe.py)
    # and needs less memory: MobileNetV2's grouped optimizer adds 150 MB to the peak at batch 32 (CPU).
    decay_flags = tuple(decays_weight(p) for p in params)
    if fused and loss_scale == 1.0:
        from mnv2.ops.momentum import FusedMomentum

        return FusedMomentum(params, learning_rate, momentum, weight_decay, decay_flags)
    optimizer = nn.Momentum(params, learning_rate=learning_rate, momentum=momentum,
                            weight_decay=weight_decay, loss_scale=loss_scale)
    optimizer.decay_flags = decay_flags
    return optimizer


def build_train_cell(network, loss_fn, params, lr_values: np.ndarray, config: TrainingConfig, amp: bool,
                     fused_update: bool = False):
    """Optimizer and one-step cell; AMP and loss scaling per platform (REFERENCE §1). `fused_update`
    (CPU, the project's kernels in use) updates every parameter in one kernel, the same values."""
    import mindspore as ms
    from mindspore import Tensor, nn

    fixed_scale = amp and not config.dynamic_loss_scale and config.loss_scale > 1.0
    optimizer = make_optimizer(params, Tensor(lr_values), config.momentum, config.weight_decay,
                               fused=fused_update,
                               loss_scale=config.loss_scale if fixed_scale else 1.0)
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


StepValues = tuple[float, bool, float | None]  # loss, overflow, loss scale


def _unpack(output: Any) -> StepValues:
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
    """List the training (and evaluation) images; InputError names a missing or empty folder."""
    index = data.scan_image_folder(config.dataset_path)
    data.check_num_classes(index, config.num_classes)
    eval_index = None
    if config.eval_dataset_path:
        eval_index = data.scan_image_folder(
            config.eval_dataset_path, what="eval_dataset_path", class_names=index.classes,
        )
    return index, eval_index


NAN_FLUSH_SECONDS = 35.0  # a little over Prometheus's default 30 s scrape interval


def use_fast_cpu_kernels(network, config: TrainingConfig) -> bool:
    """On CPU, swap MindSpore's slow layers for the project's kernels; True when they are in use.

    Parameters move into the new cells, so checkpoint keys and values are unchanged. The kernels are
    never why a run fails: when they cannot be built or loaded here, `kernels_available()` says so
    once on stderr and the network keeps MindSpore's own kernels. With `bf16_pointwise` the 1x1
    convolutions go to the bf16 kernel where the CPU has AVX512-BF16 (AMX where it has that too;
    elsewhere: float32, said once).
    """
    if not (config.fast_depthwise and config.platform == Platform.CPU):
        return False
    from mnv2.ops._build import kernels_available

    if not kernels_available():
        return False
    from mnv2.ops.depthwise import replace_slow_convolutions

    replace_slow_convolutions(network, dense_input_grad=False)
    if config.bf16_pointwise:
        from mnv2.ops.pointwise import ISA_NAMES, bf16_isa, bf16_supported, replace_pointwise

        if bf16_supported():
            replace_pointwise(network)
            notice(f"bf16_pointwise: 1x1 convolutions with bf16 products on {ISA_NAMES[bf16_isa()]}")
        else:
            notice("warning: bf16_pointwise asks for bf16 1x1 convolutions, but this CPU has no "
                   "AVX512-BF16: they stay float32")
    return True


def train_loop_kind(config: TrainingConfig, head_only: bool) -> str:
    """`python` (our loop) or `model` (MindSpore's Model.train, sinking on Ascend and GPU)."""
    kind = os.environ.get(TRAIN_LOOP_ENV, "").strip().lower()
    if kind not in ("", "python", "model"):
        raise ConfigError(f"{TRAIN_LOOP_ENV}: {kind!r} is not python or model")
    if head_only:
        return "python"  # a dense layer on cached features: nothing to sink
    return kind or ("python" if config.platform == Platform.CPU else "model")


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
    index, eval_index = datasets or scan_datasets(config)
    if ctx.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, output_dir / "config.yaml")

    network = create_network(
        "mobilenetv2", num_classes=config.num_classes, width_mult=config.width_mult, seed=config.seed
    )
    if config.pretrain_ckpt:
        ckpt.load_pretrained(network, config.pretrain_ckpt, config.num_classes)
        notice(f"pretrain_ckpt: loaded {config.pretrain_ckpt}")
    custom_kernels = use_fast_cpu_kernels(network, config)
    loss_fn = LabelSmoothingCrossEntropy(config.num_classes, config.label_smoothing)

    head_only = config.freeze_layer == FreezeLayer.BACKBONE
    if head_only:
        batches, spe = _head_batches(network, index, config, ctx)
        trainable = network.head.trainable_params()
        trained_cell = network.head
    else:
        spe = data.steps_per_epoch(index, batch_size=config.batch_size, world=ctx.world)
        batches = _image_batches(index, config, ctx, custom_kernels)
        trainable = network.trainable_params()
        trained_cell = network

    lr_values = warmup_cosine_lr(
        lr_init=config.lr_init, lr_max=config.lr_max, lr_end=config.lr_end,
        warmup_epochs=config.warmup_epochs, epochs=config.epochs, steps_per_epoch=spe,
    )
    train_cell, _ = build_train_cell(trained_cell, loss_fn, trainable, lr_values, config, amp=not head_only,
                                     fused_update=custom_kernels)

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
    metrics.on_kernels(custom=custom_kernels)
    result = TrainResult(steps_per_epoch=spe, global_step=start_epoch * spe + start_step,
                         last_checkpoint=resumed_from, network=network)
    hooks = RunHooks(config, ctx, stop, network, train_cell, spe, lr_values, metrics, result, ckpt_dir,
                     prefix, eval_index, resumed=resumed_from is not None)
    try:
        if train_loop_kind(config, head_only) == "model":
            _model_loop(hooks, index, start_epoch, start_step)
        else:
            _python_loop(hooks, batches, start_epoch, start_step)
        if result.exit_code == ExitCode.SUCCESS and eval_index is not None:
            hooks.final_evaluation()
        if ctx.is_main and result.exit_code == ExitCode.SUCCESS:
            _publish_artifacts(config, result, _export_at_end(config, result))
    finally:
        hooks.close()
        metrics.close()
    return result


def _export_at_end(config: TrainingConfig, result: TrainResult) -> list[Path]:
    """`export_formats`: the trained network as `mnv2 export` writes it (logits and softmax graphs, a
    manifest), into the output folder. Exported from a fresh network holding the trained parameters,
    so the graphs carry MindSpore's own kernels, which every inference runtime has."""
    if not config.export_formats:
        return []
    import mindspore as ms

    from mnv2.export import export_network, write_manifest
    from mnv2.hub import create_network

    fresh = create_network("mobilenetv2", num_classes=config.num_classes, width_mult=config.width_mult)
    trained = {p.name: ms.Parameter(ms.Tensor(p.asnumpy()), name=p.name)
               for p in result.network.get_parameters()}
    ms.load_param_into_net(fresh, trained, strict_load=True)
    stem = Path(config.output_dir) / "mobilenetv2"
    written = export_network(fresh, image_size=config.image_size, batch=1, file_stem=stem,
                             formats=list(config.export_formats), outputs=["logits", "softmax"])
    manifest = write_manifest(f"{stem}.json", written, checkpoint=str(result.last_checkpoint or ""),
                              num_classes=config.num_classes, width_mult=config.width_mult,
                              image_size=config.image_size)
    for item in written:
        notice(f"exported {stem.parent / item.file}: {item.format}, output {item.output} ({item.contains})")
    return [stem.parent / item.file for item in written] + [manifest]


def _publish_artifacts(config: TrainingConfig, result: TrainResult, exports: list[Path]) -> None:
    """Where the model went (mnv2.artifacts): the output folder's artifacts.json, termination message."""
    from mnv2 import artifacts

    artifacts.publish(artifacts.summary(
        config.output_dir, checkpoint=result.last_checkpoint, top1=result.top1,
        best_checkpoint=result.best_checkpoint, best_top1=result.best_top1, exports=exports,
    ))


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


def eval_batches(index: data.ImageFolderIndex, config: TrainingConfig, ctx: DistContext):
    """This rank's evaluation batches and how many there are ((None, 0) for an empty share)."""
    total = len(data.eval_files(index, rank=ctx.rank, world=ctx.world))
    if total == 0:
        return None, 0

    def make(start: int):
        dataset = data.create_eval_dataset(
            index, image_size=config.image_size, batch_size=config.batch_size, rank=ctx.rank, world=ctx.world,
            workers=config.num_workers, skip=start,
        )
        return dataset, data.eval_files(index, rank=ctx.rank, world=ctx.world)[start * config.batch_size:]

    batches = data.tolerant_batches(make, index, batch_size=config.batch_size,
                                    on_corrupt=config.on_corrupt_image, what="eval_dataset_path")
    return batches, math.ceil(total / config.batch_size)


Batches = Callable[[int, int], Iterator[tuple[Any, Any]]]


def _train_dataset(index: data.ImageFolderIndex, config: TrainingConfig, ctx: DistContext, epoch: int,
                   skip: int, normalized: bool = True):
    return data.create_train_dataset(
        index, image_size=config.image_size, batch_size=config.batch_size, epoch=epoch, seed=config.seed,
        rank=ctx.rank, world=ctx.world, workers=config.num_workers,
        min_crop_scale=config.min_crop_scale, horizontal_flip=config.horizontal_flip, skip=skip,
        normalized=normalized,
    )


def _image_batches(index: data.ImageFolderIndex, config: TrainingConfig, ctx: DistContext,
                   custom_kernels: bool = False) -> Batches:
    """The training batches; with the project's kernels, normalized by one of them (the same values
    as the pipeline's Normalize, for less pipeline CPU and smaller batches decoded ahead)."""
    if custom_kernels:
        from mnv2.ops.normalize import normalize_images

    def batches(epoch: int, skip: int) -> Iterator[tuple[Any, Any]]:
        def make(start: int):
            files = data.train_files(index, epoch=epoch, seed=config.seed, rank=ctx.rank, world=ctx.world,
                                     batch_size=config.batch_size, skip=skip + start)
            dataset = _train_dataset(index, config, ctx, epoch, skip + start, normalized=not custom_kernels)
            return dataset, files

        pairs = data.tolerant_batches(make, index, batch_size=config.batch_size,
                                      on_corrupt=config.on_corrupt_image, what="dataset_path")
        if not custom_kernels:
            return pairs
        return ((normalize_images(images), labels) for images, labels in pairs)

    return batches


def _head_batches(network, index: data.ImageFolderIndex, config: TrainingConfig, ctx: DistContext):
    from mindspore import Tensor

    from mnv2.features import feature_batches, load_or_extract

    features, labels, _ = load_or_extract(
        network, index, ckpt=config.pretrain_ckpt, output_dir=config.output_dir, image_size=config.image_size,
        width_mult=config.width_mult, batch_size=config.batch_size, workers=config.num_workers, ctx=ctx,
        on_corrupt=config.on_corrupt_image,
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


class RunHooks:
    """Everything around the steps, whichever loop drives them (ours, or Model.train's callback).

    The loop calls `begin_epoch`, then `after_steps` after each step (or each sink of several steps;
    it returns True once all ranks agreed to stop on SIGTERM, after the checkpoint is written), then
    `end_epoch`. Rank 0 alone writes checkpoints, the report and the live line; every rank logs its
    own step lines (as the zoo's ranks do) and takes part in evaluations (counts are all-reduced).
    """

    def __init__(self, config: TrainingConfig, ctx: DistContext, stop: StopFlag, network, train_cell,
                 spe: int, lr_values: np.ndarray, metrics, result: TrainResult, ckpt_dir: Path, prefix: str,
                 eval_index: data.ImageFolderIndex | None, resumed: bool) -> None:
        from mnv2.console import Quiet, live_progress

        self.config, self.ctx, self.stop = config, ctx, stop
        self.network, self.train_cell = network, train_cell
        self.spe, self.lr_values, self.metrics, self.result = spe, lr_values, metrics, result
        self.ckpt_dir, self.prefix, self.eval_index = ckpt_dir, prefix, eval_index
        self.log_every = _log_every()
        self.images_per_step = config.batch_size * ctx.world
        self.report = TrainingReport(config.output_dir, restart=not resumed) if ctx.is_main else None
        self.live = live_progress(config.epochs, spe) if ctx.is_main else Quiet()
        self.last_record: EpochRecord | None = None
        self.evaluated_epoch = -1
        best = ckpt_dir / ckpt.best_name(prefix)
        if ctx.is_main and resumed and config.keep_best and best.is_file():
            result.best_checkpoint, result.best_top1 = best, ckpt.best_top1(best)
        self.epoch = 0

    # ---- the loop's calls ---------------------------------------------------------------------
    def begin_epoch(self, epoch: int, skip: int) -> None:
        self.epoch, self.skip, self.steps_done = epoch, skip, skip
        self.epoch_losses: list[float] = []
        self.epoch_started = time.perf_counter()
        self.train_cell.set_train()

    def after_steps(self, values: StepValues, seconds: float, wait_seconds: float = 0.0,
                    steps: int = 1) -> bool:
        """`steps` steps finished in `seconds` (their last step's `_unpack`ed output); True when the run
        must stop."""
        loss, overflow, scale = values
        epoch, first = self.epoch, self.steps_done
        step = first + steps - 1  # the last of them, 0-based within the epoch
        for k in range(steps):
            global_step = epoch * self.spe + first + k
            self.metrics.on_step(
                epoch=epoch, step=first + k, global_step=global_step + 1, loss=loss,
                lr=float(self.lr_values[global_step]), step_seconds=seconds / steps,
                data_wait_seconds=wait_seconds if k == 0 else 0.0, images=self.images_per_step,
                loss_scale=scale, overflow=overflow and k == steps - 1,
            )
        global_step = epoch * self.spe + step
        if not math.isfinite(loss):
            # Let Prometheus scrape the NaN first (one scrape interval), so MNV2LossNaN can fire.
            self.metrics.flush(timeout=NAN_FLUSH_SECONDS)
            raise DivergedError(
                f"loss became {loss} at global step {global_step} (epoch {epoch}, step {step})"
            )
        self.epoch_losses.append(loss)
        self.result.losses.append(loss)
        if step == self.spe - 1 or (step + 1) // self.log_every > first // self.log_every:
            emit(step_line(epoch=epoch, epochs=self.config.epochs, step=step, steps=self.spe, loss=loss,
                           avg_loss=float(np.mean(self.epoch_losses)), step_ms=seconds / steps * 1000.0,
                           lr=float(self.lr_values[global_step])))
        self.live.step(epoch, step, loss, self.images_per_step * steps / seconds if seconds > 0 else None)
        self.steps_done = step + 1
        self.result.global_step = global_step + 1
        if _stop_agreed(self.stop, self.ctx):
            self.save(epoch, self.steps_done)
            saved = self.result.last_checkpoint
            where = str(saved) if saved else "nothing (not rank 0)"
            notice(f"SIGTERM: stopped after global step {self.result.global_step}; saved {where}")
            self.result.exit_code = ExitCode.INTERRUPTED
            return True
        return False

    def end_epoch(self) -> None:
        epoch, config = self.epoch, self.config
        seconds = time.perf_counter() - self.epoch_started
        done = max(1, self.steps_done - self.skip)
        avg = float(np.mean(self.epoch_losses)) if self.epoch_losses else float("nan")
        emit(epoch_line(epoch_ms=seconds * 1000.0, per_step_ms=seconds * 1000.0 / done, avg_loss=avg))
        images_per_s = done * self.images_per_step / seconds if seconds > 0 else 0.0
        self.metrics.on_epoch_end(epoch=epoch, images_per_second=images_per_s, avg_loss=avg)
        self.live.epoch_done(epoch, avg, seconds)
        if (epoch + 1) % config.save_checkpoint_epochs == 0 or epoch + 1 == config.epochs:
            self.save(epoch, self.spe)
        top1 = None
        if config.eval_interval and (epoch + 1) % config.eval_interval == 0:
            top1 = self.evaluate(epoch)
        lr = float(self.lr_values[(epoch + 1) * self.spe - 1])
        self.last_record = EpochRecord(epoch=epoch, loss=avg, lr=lr, images_per_s=images_per_s,
                                       seconds=seconds, top1=top1)
        if self.report is not None:
            self.report.add(self.last_record)

    # ---- what the hooks do --------------------------------------------------------------------
    def save(self, epoch: int, steps_done: int) -> None:
        if not (self.ctx.is_main and self.config.save_checkpoint):
            return
        started = time.perf_counter()
        spe = self.spe
        next_epoch, next_step = (epoch + 1, 0) if steps_done == spe else (epoch, steps_done)
        meta = {"epoch": next_epoch, "step_in_epoch": next_step, "global_step": epoch * spe + steps_done,
                "steps_per_epoch": spe}
        path = ckpt.save_atomic(ckpt.collect_parameters(self.network, self.train_cell),
                                self.ckpt_dir / ckpt.checkpoint_name(epoch, steps_done, self.prefix), meta)
        ckpt.rotate(self.ckpt_dir, self.config.keep_checkpoint_max, self.prefix)
        self.result.last_checkpoint = path
        self.metrics.on_checkpoint(seconds=time.perf_counter() - started)

    def _evaluate(self):
        """Top-1/top-5 on the evaluation set (every rank takes part: the counts are all-reduced)."""
        from mnv2.evaluate import evaluate

        batches, total = eval_batches(self.eval_index, self.config, self.ctx)
        evaluation = evaluate(self.network, batches, self.ctx, total_batches=total)
        release_free_heap()  # the evaluation graph's compiler garbage, as before the first step
        self.train_cell.set_train()
        self.result.top1, self.result.top5 = evaluation.top1, evaluation.top5
        self.metrics.on_eval(top1=evaluation.top1, top5=evaluation.top5)
        return evaluation

    def evaluate(self, epoch: int) -> float:
        """The periodic evaluation after `epoch` (eval_interval); keeps the best checkpoint when asked."""
        evaluation = self._evaluate()
        self.evaluated_epoch = epoch
        if self.ctx.is_main:
            notice(f"evaluation after epoch {epoch + 1}: top-1 {evaluation.top1:.4f}, "
                   f"top-5 {evaluation.top5:.4f} ({evaluation.correct1} of {evaluation.total} images right, "
                   f"{self.ctx.world} rank(s))")
        self._keep_best(epoch, evaluation.top1)
        return evaluation.top1

    def _keep_best(self, epoch: int, top1: float) -> None:
        best = self.result.best_top1
        if not (self.config.keep_best and self.ctx.is_main) or (best is not None and top1 <= best):
            return
        meta = {"epoch": epoch + 1, "step_in_epoch": 0, "global_step": (epoch + 1) * self.spe,
                "steps_per_epoch": self.spe, "top1": float(top1)}
        path = ckpt.save_atomic(ckpt.collect_parameters(self.network),
                                self.ckpt_dir / ckpt.best_name(self.prefix), meta)
        self.result.best_checkpoint, self.result.best_top1 = path, top1
        notice(f"keep_best: {path} now holds epoch {epoch + 1} (top-1 {top1:.4f})")

    def final_evaluation(self) -> None:
        """The seed's closing `result:` line; the last epoch's periodic evaluation serves if there was one."""
        last = self.config.epochs - 1
        if self.evaluated_epoch != last:
            evaluation = self._evaluate()
            self._keep_best(last, evaluation.top1)
            if self.ctx.is_main:
                notice(f"evaluation: {evaluation.correct1} of {evaluation.total} images right (top-1), "
                       f"{evaluation.correct5} in the top 5, over {self.ctx.world} rank(s)")
            if self.report is not None and self.last_record is not None:
                # The last epoch's row again, now with its top-1 (the report keeps an epoch's last row).
                self.report.add(replace(self.last_record, top1=evaluation.top1))
        if self.ctx.is_main:
            checkpoint = str(self.result.last_checkpoint or "")
            emit(result_line(acc=self.result.top1, top5=self.result.top5, ckpt=checkpoint))

    def close(self) -> None:
        self.live.close()
        if self.report is not None:
            self.report.close()


def _python_loop(hooks: RunHooks, batches: Batches, start_epoch: int, start_step: int) -> None:
    """Our loop (CPU): one step at a time, the loss read back after each."""
    compiled = False
    for epoch in range(start_epoch, hooks.config.epochs):
        hooks.begin_epoch(epoch, start_step if epoch == start_epoch else 0)
        waited_since = time.perf_counter()
        for inputs, labels in batches(epoch, hooks.skip):
            step_started = time.perf_counter()  # the first step's time includes compiling, not its wait
            if not compiled:  # compile apart from the first step, so the compiler's garbage goes first
                hooks.train_cell.compile(inputs, labels)
                release_free_heap()
                compiled = True
            # Reading the loss back means the step has finished before the clock stops. The output goes
            # at once: a graph output held while the next step runs keeps MindSpore from reusing the
            # memory it sits in (860 MB more at batch 32, 224 px, with the depthwise-fused BatchNorms).
            values = _unpack(hooks.train_cell(inputs, labels))
            if hooks.after_steps(values, time.perf_counter() - step_started, step_started - waited_since):
                return
            waited_since = time.perf_counter()
        hooks.end_epoch()


def _sink_size(remaining: int, log_every: int) -> int:
    """Steps per sink: the largest divisor of the epoch's remaining steps up to `log_every`, so step
    lines and SIGTERM checks come at least that often, unless that would mean tiny sinks (a prime
    remainder after a resume): then the whole remainder in one sink, as the zoo does."""
    size = max(d for d in range(1, min(remaining, log_every) + 1) if remaining % d == 0)
    return size if size * 4 >= min(remaining, log_every) else remaining


def _model_loop(hooks: RunHooks, index: data.ImageFolderIndex, start_epoch: int, start_step: int) -> None:
    """The model zoo's loop: `Model.train` with dataset sinking on Ascend/GPU, the hooks as a callback.

    One `Model.train` call per epoch, so each epoch's pipeline is seeded like the Python loop's (and a
    resumed epoch starts after its trained batches). On CPU it runs without sinking (MindSpore sinks
    only to devices), step by step through the same callback.
    """
    import mindspore.dataset as ds
    from mindspore.train import Callback, Model

    config, ctx = hooks.config, hooks.ctx
    sink = config.platform != Platform.CPU

    class Hooks(Callback):
        def __init__(self, steps_per_call: int) -> None:
            self.steps_per_call = steps_per_call
            self.last = time.perf_counter()

        def on_train_step_end(self, run_context) -> None:
            now = time.perf_counter()
            values = _unpack(run_context.original_args().net_outputs)
            if hooks.after_steps(values, now - self.last, steps=self.steps_per_call):
                run_context.request_stop()
            self.last = time.perf_counter()

    model = Model(hooks.train_cell)
    previous_mode = ds.config.get_error_samples_mode()
    # Inside a sink no Python sees a failing batch: with `skip`, MindSpore replaces a sample it cannot
    # decode by a healthy one and logs the file (upstream ErrorSamplesMode.REPLACE), for training only.
    mode = ds.config.ErrorSamplesMode.REPLACE if config.on_corrupt_image == "skip" else previous_mode
    for epoch in range(start_epoch, config.epochs):
        skip = start_step if epoch == start_epoch else 0
        hooks.begin_epoch(epoch, skip)
        remaining = hooks.spe - skip
        size = _sink_size(remaining, hooks.log_every) if sink else 1
        dataset = _train_dataset(index, config, ctx, epoch, skip)
        ds.config.set_error_samples_mode(mode)
        try:
            model.train(remaining // size if sink else 1, dataset, callbacks=[Hooks(size)],
                        dataset_sink_mode=sink, sink_size=size if sink else -1)
        except RuntimeError as error:
            files = data.train_files(index, epoch=epoch, seed=config.seed, rank=ctx.rank, world=ctx.world,
                                     batch_size=config.batch_size, skip=skip)
            culprit, reason = data.find_corrupt(error, [index.files[int(i)] for i in files], check=0)
            if culprit is None:
                raise
            raise data.InputError(f"dataset_path: {culprit}: corrupt or unreadable image: {reason}") from None
        finally:
            ds.config.set_error_samples_mode(previous_mode)
        if hooks.result.exit_code != ExitCode.SUCCESS:
            return
        hooks.end_epoch()
