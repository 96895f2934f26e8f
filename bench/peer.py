"""One benchmark peer in its own process: `python -m bench.peer PEER MODE --batch N --steps S`.

Run in a fresh process per peer so its peak resident memory is its own. Prints one JSON line:
per-step seconds, images/s from the median step, peak RSS (ru_maxrss of this process), and
for the MindSpore peers which model definition was used.

Peers: `ms-fast` (MindSpore with all the project's kernels, as the trainer runs it), `ms-bf16` (the
same with the 1x1 convolutions in bf16, as `--bf16_pointwise` runs it), `ms-dw` (only the depthwise
and stem kernels: the previous step), `ms-ref` (MindSpore's own layers), `torch` (PyTorch eager,
NCHW), `torch-cl` (PyTorch eager, channels_last), `torch-compile` (torch.compile of the
channels_last model), and `torch-cl-bf16` / `torch-compile-bf16`: those two under
`torch.autocast("cpu", dtype=torch.bfloat16)`, PyTorch's CPU mixed precision (bf16 convolutions and
matrix products, float32 parameters and BatchNorm statistics).
Modes: `train` (forward, backward, momentum SGD update) and `forward` (eval-mode inference, the
head-only fine-tuning path's feature extraction).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import numpy as np

NUM_CLASSES = 1000
LR, MOMENTUM, WEIGHT_DECAY, SMOOTHING = 0.03, 0.9, 4e-5, 0.1


#: MindSpore peers: which of the project's kernels they swap in ("" = none, MindSpore's own layers).
MS_KERNELS = {"ms-fast": "all", "ms-bf16": "bf16", "ms-dw": "conv", "ms-ref": ""}
#: PyTorch peers: (channels_last, torch.compile, bf16 autocast).
TORCH_PEERS = {
    "torch": (False, False, False),
    "torch-cl": (True, False, False),
    "torch-compile": (True, True, False),
    "torch-cl-bf16": (True, False, True),
    "torch-compile-bf16": (True, True, True),
}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


SERVE = False  # set by --serve: steps come from stdin (see _serve)


def _timed(step, steps: int, warmup: int) -> list[float]:
    if SERVE:
        return _serve(step, warmup)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def run_mindspore(fast: str, mode: str, batch: int, image: int, steps: int, warmup: int,
                  data_root: str | None = None) -> dict:
    import mindspore as ms
    from mindspore import Tensor, nn

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    from mnv2.loss import LabelSmoothingCrossEntropy
    from mnv2.model import MobileNetV2

    ms.set_seed(0)
    net = MobileNetV2(num_classes=NUM_CLASSES, width_mult=1.0, seed=0)
    if fast:
        # The swap the trainer makes on CPU (mnv2.train.use_fast_cpu_kernels), called directly so the
        # bench needs no TrainingConfig. The stem only ever sees the images.
        from mnv2.ops.depthwise import replace_slow_convolutions

        fuse = fast in ("all", "bf16")
        replaced = replace_slow_convolutions(net, dense_input_grad=False, fuse_batchnorm=fuse)
        fused = {"batchnorm_relu6": 35, "batchnorm": 17, "batchnorm_into_depthwise": 17}
        expected = {"depthwise": 17, "dense": 1, "pool": 1, **(fused if fuse else {})}
        if fast == "bf16":  # what use_fast_cpu_kernels adds with bf16_pointwise
            from mnv2.ops.pointwise import bf16_supported, replace_pointwise

            if not bf16_supported():  # the trainer says so and stays float32; a bf16 peer has no figure
                raise SystemExit("not run: this CPU has no AVX512-BF16 for the bf16 1x1 kernel")

            replaced["pointwise_bf16"] = replace_pointwise(net)
            expected["pointwise_bf16"] = 34
        if replaced != expected:  # never bench the slow kernels by mistake
            raise RuntimeError(f"expected {expected} replaced, got {replaced}")
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((batch, 3, image, image)).astype(np.float32))
    y = Tensor(rng.integers(0, NUM_CLASSES, batch).astype(np.int32))
    if mode == "train":
        loss = LabelSmoothingCrossEntropy(NUM_CLASSES, SMOOTHING)
        optimizer = trainer_optimizer(net, fused=fast in ("all", "bf16"))
        cell = nn.TrainOneStepCell(nn.WithLossCell(net, loss), optimizer)
        cell.set_train(True)

        def step() -> None:
            cell(x, y).asnumpy()

        if data_root is not None:
            return _train_from_data(cell, data_root, batch, image, steps, warmup)
    else:
        net.set_train(False)

        def step() -> None:
            net(x).asnumpy()

    start = time.perf_counter()
    step()  # graph compilation happens here
    compile_s = time.perf_counter() - start
    times = _timed(step, steps, max(0, warmup - 1))
    return {"model": "mnv2.model.MobileNetV2", "compile_s": compile_s, "times": times}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _serve(step, warmup: int) -> list[float]:
    """Interleaved mode: warm up, say READY, then run one step per `step` line on stdin.

    The runner alternates steps between peers that are all loaded at once, so a change in the
    machine's background load hits every peer alike. Each step answers `STEP <wall s> <cpu s>`.
    """
    for _ in range(warmup):
        step()
    print("READY", flush=True)
    times = []
    for line in sys.stdin:
        if line.strip() != "step":
            break
        cpu0, t0 = _cpu_s(), time.perf_counter()
        step()
        wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
        times.append(wall)
        print(f"STEP {wall:.6f} {cpu:.6f}", flush=True)
    return times


def trainer_optimizer(net, fused: bool):
    """The trainer's optimizer (`mnv2.train.make_optimizer`): with its kernels, the one-kernel update."""
    from mnv2.train import make_optimizer

    return make_optimizer(net.trainable_params(), LR, MOMENTUM, WEIGHT_DECAY, fused=fused)


def _train_from_data(cell, root: str, batch: int, image: int, steps: int, warmup: int) -> dict:
    """Train from the trainer's real input pipeline and time how long each step waits for its batch."""
    from mnv2.data import create_train_dataset, scan_image_folder

    index = scan_image_folder(root)
    data = create_train_dataset(index, image_size=image, batch_size=batch, epoch=0, seed=0, workers=2)
    batches = data.repeat().create_tuple_iterator(num_epochs=1)
    start = time.perf_counter()
    x, y = next(batches)
    cell(x, y).asnumpy()
    compile_s = time.perf_counter() - start
    waits, times = [], []
    for i in range(max(0, warmup - 1) + steps):
        t0 = time.perf_counter()
        x, y = next(batches)
        t1 = time.perf_counter()
        cell(x, y).asnumpy()
        if i >= max(0, warmup - 1):
            waits.append(t1 - t0)
            times.append(time.perf_counter() - t0)
    return {
        "model": "mnv2.model.MobileNetV2", "compile_s": compile_s, "times": times, "data_wait_s": waits,
        "data_wait_fraction": sum(waits) / sum(times), "input": "mnv2.data.create_train_dataset(workers=2)",
    }


def run_torch(channels_last: bool, mode: str, batch: int, image: int, steps: int, warmup: int,
              compiled: bool = False, bf16: bool = False) -> dict:
    import contextlib

    import torch

    from bench.torch_mobilenetv2 import MobileNetV2

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    net = MobileNetV2(NUM_CLASSES)
    x = torch.randn(batch, 3, image, image)
    y = torch.randint(0, NUM_CLASSES, (batch,))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if compiled:  # inductor's C++ backend; the first (warm-up) step compiles
        net = torch.compile(net)
    # PyTorch's CPU mixed precision: the forward (and the loss) under autocast, backward outside it
    precision = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    if mode == "train":
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=SMOOTHING)
        opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        net.train()

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with precision():
                loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
    else:
        net.eval()

        def step() -> None:
            with torch.inference_mode(), precision():
                net(x)

    times = _timed(step, steps, warmup)
    return {"model": "bench.torch_mobilenetv2.MobileNetV2", "threads": torch.get_num_threads(),
            "times": times}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("peer", choices=[*MS_KERNELS, *TORCH_PEERS])
    parser.add_argument("mode", choices=["train", "forward"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image", type=int, default=224)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--data", help="image-folder root: train MindSpore from the real input pipeline")
    parser.add_argument("--serve", action="store_true", help="interleaved mode for bench.run_all (stdin)")
    args = parser.parse_args(argv)
    global SERVE
    SERVE = args.serve
    if args.serve and args.data:
        parser.error("--serve and --data do not combine")
    shape = (args.mode, args.batch, args.image, args.steps, args.warmup)
    if args.peer.startswith("ms-"):
        result = run_mindspore(MS_KERNELS[args.peer], *shape, data_root=args.data)
    else:
        if args.data:
            parser.error("--data is for the MindSpore peers")
        channels_last, compiled, bf16 = TORCH_PEERS[args.peer]
        result = run_torch(channels_last, *shape, compiled=compiled, bf16=bf16)
    median = statistics.median(result["times"])
    result.update(
        peer=args.peer, mode=args.mode, batch=args.batch, image=args.image, median_s=median,
        images_per_s=args.batch / median, peak_rss_mb=_peak_rss_mb(),
    )
    print("BENCH-RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
