"""Where MindSpore's training step spends its time, by operator type: `python -m bench.profile_ms`.

Runs the MindSpore profiler (CPU) over a few training steps of `mnv2.model.MobileNetV2` with our
kernels swapped in (`--reference` for nn.Conv2d) and prints one BENCH-RESULT line with the
per-step milliseconds and share of each operator type, read from the profiler's
cpu_op_type_info CSV.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import numpy as np


def profile(batch: int, steps: int, fast: bool) -> dict:
    import mindspore as ms
    from mindspore import Tensor, nn

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    from mnv2.loss import LabelSmoothingCrossEntropy
    from mnv2.model import MobileNetV2
    from mnv2.ops.depthwise import replace_slow_convolutions

    from bench.peer import trainer_optimizer

    net = MobileNetV2(1000, 1.0, seed=0)
    if fast:
        replace_slow_convolutions(net, dense_input_grad=False)
    cell = nn.TrainOneStepCell(nn.WithLossCell(net, LabelSmoothingCrossEntropy(1000)),
                               trainer_optimizer(net, fused=fast))
    cell.set_train()
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((batch, 3, 224, 224)).astype(np.float32))
    y = Tensor(rng.integers(0, 1000, batch).astype(np.int32))
    cell(x, y).asnumpy()  # compile outside the profile
    with tempfile.TemporaryDirectory(prefix="mnv2-prof-") as out:
        profiler = ms.Profiler(output_path=out)
        for _ in range(steps):
            cell(x, y).asnumpy()
        profiler.analyse()
        found = list(Path(out).rglob("cpu_op_type_info_*.csv"))
        if not found:
            raise RuntimeError(f"the profiler wrote no cpu_op_type_info CSV under {out}")
        with found[0].open() as f:
            rows = list(csv.DictReader(f))
    per_type = {r["op_type"]: float(r["total_compute_time"]) / steps for r in rows}
    total = sum(per_type.values())
    ranked = sorted(per_type.items(), key=lambda kv: -kv[1])
    return {"batch": batch, "steps": steps, "fast": fast, "total_ms_per_step": total,
            "ops": [{"type": t, "ms_per_step": v, "share": v / total} for t, v in ranked]}


def section(report, quick: bool) -> None:
    from bench.run_all import run_child

    batch = 32
    try:
        r = run_child(["bench.profile_ms", "--batch", str(batch), "--steps", "2"], 3600.0).result
    except RuntimeError as error:
        report.add("Where MindSpore's time goes (ours, profiled)", f"Failed: {error}")
        return
    report.raw["profile"] = r
    rows = ["| operator type | ms per step | share |", "|---|---|---|"]
    for op in r["ops"]:
        if op["share"] < 0.005:
            continue
        rows.append(f"| {op['type']} | {op['ms_per_step']:.0f} | {100 * op['share']:.1f}% |")
    groups = {
        "MindSpore's BatchNorm (forward + backward)": ("BatchNorm", "BatchNormGrad"),
        "custom kernels (depthwise, stem, BatchNorm + ReLU6; forward + backward; the optimizer's update)":
            ("Custom",),
        "pointwise convolutions (forward + both gradients)": ("Conv2D", "Conv2DBackpropFilter",
                                                              "Conv2DBackpropInput"),
        "MindSpore's ReLU6 (forward + backward)": ("ReLU6", "ReLU6Grad"),
        "MindSpore's optimizer kernels (ApplyMomentum; AddN for weight decay and residual gradients)":
            ("ApplyMomentum", "AddN"),
    }
    by_type = {op["type"]: op["share"] for op in r["ops"]}
    summary = "; ".join(f"{name} {100 * sum(by_type.get(t, 0.0) for t in types):.0f}%"
                        for name, types in groups.items())
    report.add(
        "Where MindSpore's time goes (ours, profiled)",
        "\n".join(rows) + f"\n\nMindSpore profiler, training at batch {batch}, {r['steps']} steps, our "
        f"kernels in: {r['total_ms_per_step']:.0f} ms of operator time per step (under this run's "
        "background load). "
        f"By group: {summary}.\n",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--reference", action="store_true", help="profile nn.Conv2d instead of our kernels")
    args = parser.parse_args(argv)
    print("BENCH-RESULT " + json.dumps(profile(args.batch, args.steps, not args.reference)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
