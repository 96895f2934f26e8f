"""Kernel sets compared inside one process, steps alternating: `python -m bench.kernels_ab --batch 8`.

A bench-only loop beside `trainer_bench` (which measures `mnv2 train` itself). The MindSpore
networks (the trainer's MobileNetV2 1.0 at 224 px with the depthwise and stem kernels only, with
every kernel including the fused BatchNorm + ReLU6, and with the 1x1 convolutions in bf16 on top
where the CPU has AVX512-BF16, a second time capped to AVX512-BF16 where it has AMX) are compiled in
one process and stepped in rotating order, so a busy neighbour slows them alike: the ratios hold on
a shared machine where absolute figures do not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

SETS = {
    "conv": "depthwise and stem kernels only",
    "all": "every kernel (+ fused BatchNorm/ReLU6)",
    "bf16": "every kernel, 1x1 convolutions in bf16",
    "bf16-avx512": "the same on AVX512-BF16 dot products only",
}


def measure(batch: int, steps: int, mode: str) -> dict:
    import mindspore as ms
    from mindspore import Tensor, nn

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    from mnv2.loss import LabelSmoothingCrossEntropy
    from mnv2.model import MobileNetV2
    from mnv2.ops.depthwise import replace_slow_convolutions

    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((batch, 3, 224, 224)).astype(np.float32))
    y = Tensor(rng.integers(0, 1000, batch).astype(np.int32))
    from mnv2.ops.pointwise import bf16_isa, bf16_supported, replace_pointwise

    best_isa = bf16_isa() if bf16_supported() else 0
    # the bf16 GEMM's instructions are a process-wide setting: each bf16 network sets its own first
    isa_of = {"bf16": best_isa, "bf16-avx512": 1 if best_isa == 2 else 0}
    steps_of = {}
    for name in [n for n in SETS if isa_of.get(n, 1)]:
        net = MobileNetV2(1000, 1.0, seed=0)
        replace_slow_convolutions(net, dense_input_grad=False, fuse_batchnorm=name != "conv")
        if name in isa_of:
            replace_pointwise(net)
        if mode == "train":
            opt = nn.Momentum(net.trainable_params(), 0.03, 0.9, weight_decay=4e-5)
            cell = nn.TrainOneStepCell(nn.WithLossCell(net, LabelSmoothingCrossEntropy(1000)), opt)
            cell.set_train()
            run = lambda cell=cell: cell(x, y).asnumpy()  # noqa: E731
        else:
            net.set_train(False)
            run = lambda net=net: net(x).asnumpy()  # noqa: E731
        steps_of[name] = (lambda run=run, isa=isa_of[name]: (bf16_isa(isa), run())) if name in isa_of else run
        for _ in range(2):  # compile, warm up
            steps_of[name]()
    names = list(steps_of)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(steps):
        for name in names[i % len(names):] + names[:i % len(names)]:
            start = time.perf_counter()
            steps_of[name]()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {"batch": batch, "mode": mode, "steps": steps, "times": times, "median_s": medians,
            "speedup": medians["conv"] / medians["all"],
            "bf16_speedup": medians["all"] / medians["bf16"] if "bf16" in medians else None,
            "amx_speedup": medians["bf16-avx512"] / medians["bf16"] if "bf16-avx512" in medians else None}


def section(report, quick: bool) -> None:
    """The `kernels` section of bench.run_all: what the fused BatchNorm + ReLU6 and bf16 add, load-robust."""
    from bench.run_all import run_child

    rows = ["| mode | batch | depthwise + stem kernels, s | every kernel, s | speedup | + 1x1 in bf16, s "
            "| bf16 speedup | AMX over AVX512-BF16 | background cores |", "|---" * 9 + "|"]
    for mode, batch in ([("train", 8)] if quick else [("train", 8), ("train", 32), ("forward", 32)]):
        argv = ["bench.kernels_ab", "--batch", str(batch), "--mode", mode, "--steps", "6" if quick else "10"]
        try:
            run = run_child(argv, 3600.0)
        except RuntimeError as error:
            rows.append(f"| {mode} | {batch} | failed: {str(error).splitlines()[0]} | | | | | | |")
            continue
        r = run.result
        report.raw[f"kernels-{mode}-{batch}"] = {**r, "background_cores": run.background_cores}
        bf16 = (f"{r['median_s']['bf16']:.3f} | {r['bf16_speedup']:.2f}x" if r.get("bf16_speedup")
                else "not run (no AVX512-BF16) |")
        amx = f"{r['amx_speedup']:.2f}x" if r.get("amx_speedup") else "not run (no AMX)"
        rows.append(f"| {mode} | {batch} | {r['median_s']['conv']:.3f} | {r['median_s']['all']:.3f} "
                    f"| {r['speedup']:.2f}x | {bf16} | {amx} | {run.background_cores:.2f} |")
    report.add(
        "What the fused BatchNorm + ReLU6 kernels and the bf16 1x1 convolutions add (one process, "
        "steps rotating)",
        "\n".join(rows) + "\n\nThe networks (the trainer's MobileNetV2 1.0, 224 px, 1000 classes) are "
        "compiled in one process and stepped in rotating order, so background load slows them alike "
        "and the speedups hold on a shared machine; medians of the timed steps (`bench/kernels_ab.py`, a "
        "bench-only loop).\n",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--mode", choices=["train", "forward"], default="train")
    args = parser.parse_args(argv)
    r = measure(args.batch, args.steps, args.mode)
    sets = ", ".join(f"{SETS[k]} {v:.3f} s" for k, v in r["median_s"].items())
    print(f"{args.mode} batch {args.batch}: {sets}; every kernel is {r['speedup']:.2f}x faster")
    print("BENCH-RESULT " + json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
