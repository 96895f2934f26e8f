"""The trainer's own path against PyTorch: `mnv2 train` as users run it, peers interleaved.

`python -m bench.trainer_bench [--batches 8,32,150] [--steps 20] [--rounds 2]` (also the `trainer`
section of `bench.run_all`). For each batch size, every round runs, each in its own process and in
an order that rotates between rounds:

- `mnv2 train` (CPU, MobileNetV2 1.0, 224 px, its own data pipeline and default kernels) for two
  epochs over a generated ImageFolder of exactly `steps` batches; its figure is the seed's
  "per step time" of the last epoch (the first epoch compiles and warms up), so data loading, the
  loop and logging are in it;
- the PyTorch peers of `bench.peer` (eager NCHW, eager channels_last, torch.compile), `steps`
  timed steps on one random batch after warm-up. Their input costs them nothing, so the
  comparison favours PyTorch.

Per run the machine's background load (CPU used by other processes, in cores) is recorded. The
figure of a peer is the median over rounds. Achieved GFLOP/s counts 3x the forward pass's
multiply-adds x 2 per image (forward, input gradient, weight gradient), against the peak of
`peak_gflops()`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.run_all import PEER_LABELS, against_best_torch, failure_tail, run_child, run_measured

ROOT = Path(__file__).resolve().parent.parent
IMAGE = 224
CLASSES = 10
TRAINERS = ("trainer", "trainer-bf16")
TORCH_PEERS = ("torch", "torch-cl", "torch-compile", "torch-cl-bf16", "torch-compile-bf16")
LABELS = {
    "trainer": "`mnv2 train` (MindSpore 2.10, the project's kernels, its data pipeline)",
    "trainer-bf16": "`mnv2 train --bf16_pointwise` (the same, 1x1 convolutions in bf16)",
    **{peer: PEER_LABELS[peer] for peer in TORCH_PEERS},
}
#: Background load (cores used by other processes) above which a table is marked indicative only ...
QUIET_CORES = 0.3
#: ... and above which it is not even indicative.
BUSY_CORES = 1.0
_EPOCH = re.compile(r"epoch time: ([0-9.]+), per step time: ([0-9.]+)")
#: A step line (mnv2.logs.step_line): its epoch and the step's own milliseconds (no data wait).
_STEP = re.compile(r"epoch: \[\s*(\d+)/\s*\d+\], step:\[\s*\d+/\s*\d+\], loss:\[[^\]]*\], time:\[([0-9.]+)\]")


def forward_macs(width: float = 1.0, image: int = IMAGE, classes: int = 1000) -> int:
    """Multiply-adds of one image's forward pass through the trainer's MobileNetV2 (convs and dense)."""
    from mnv2.model import FIRST_CHANNELS, INVERTED_RESIDUAL_SETTINGS, LAST_CHANNELS, make_divisible

    size = (image - 1) // 2 + 1
    cin = make_divisible(FIRST_CHANNELS * width)
    macs = size * size * cin * 3 * 9  # stem
    for t, c, n, s in INVERTED_RESIDUAL_SETTINGS:
        cout = make_divisible(c * width)
        for i in range(n):
            hidden = round(cin * t)
            if t != 1:
                macs += size * size * cin * hidden
            size = (size - 1) // (s if i == 0 else 1) + 1
            macs += size * size * hidden * 9 + size * size * hidden * cout
            cin = cout
    last = make_divisible(LAST_CHANNELS * max(1.0, width))
    return macs + size * size * cin * last + last * classes


def gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """What a tuned float32 GEMM (NumPy's BLAS, all cores) reaches on this machine now (best of a few)."""
    import time

    import numpy as np

    a, b = (np.random.default_rng(0).standard_normal((n, n), dtype=np.float32) for _ in range(2))
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def peak_gflops() -> tuple[float, str]:
    """FP32 peak of this machine and how it was derived.

    Cores x clock x FLOP per cycle, from /proc/cpuinfo; but a VM's "cpu MHz" is the nominal clock,
    and a boosting CPU runs faster, so when a BLAS GEMM measured now beats that figure, it is the peak.
    """
    text = Path("/proc/cpuinfo").read_text()
    mhz = [float(v) for v in re.findall(r"^cpu MHz\s*:\s*([0-9.]+)", text, re.M)]
    found = re.search(r"^flags\s*:(.*)$", text, re.M)
    flags = set(found.group(1).split()) if found else set()
    cores = os.cpu_count() or 1
    ghz = (max(mhz) if mhz else 2000.0) / 1000.0
    # Two FMA pipes of 8 fp32 lanes (AVX2, and AVX-512 on Zen 4's 256-bit datapath), 2 FLOP per FMA.
    per_cycle = 32 if "avx2" in flags else 16
    nominal = cores * ghz * per_cycle
    how = f"{cores} cores x {ghz:.2f} GHz x {per_cycle} FLOP/cycle"
    gemm = gemm_gflops()
    if gemm > nominal:
        return gemm, (f"NumPy's float32 GEMM (2048 x 2048) measured in this run, above the nominal "
                      f"{nominal:.0f} ({how}, the clock /proc/cpuinfo reports): the cores run faster")
    return nominal, f"{how} (a float32 GEMM reached {gemm:.0f} here)"


def image_folder(cache: Path, images: int) -> Path:
    """A generated ImageFolder of exactly `images` JPEGs (500x375) over CLASSES classes, built once."""
    from bench.images import generate_image_folder

    root = cache / f"images-{images}"
    if (root / ".complete").is_file():
        return root
    if images < CLASSES:
        raise ValueError(f"image_folder: {images} images cannot fill {CLASSES} classes")
    per_class = -(-images // CLASSES)
    generate_image_folder(root, classes=CLASSES, per_class=per_class)
    for c in range(per_class * CLASSES - images):  # one image fewer in the first classes
        (root / f"class_{c:03d}" / f"{per_class - 1:04d}.jpg").unlink()
    (root / ".complete").touch()
    return root


def run_trainer(
    batch: int, steps: int, data: Path, out: Path, timeout: float, peer: str = "trainer"
) -> dict[str, Any]:
    """`mnv2 train` for 2 epochs of `steps` steps: the last epoch's per step time, memory and load."""
    cmd = [
        str(Path(sys.executable).parent / "mnv2"), "train", "--platform", "CPU", "--dataset_path", str(data),
        "--num_classes", str(CLASSES), "--image_size", str(IMAGE), "--width_mult", "1.0",
        "--batch_size", str(batch), "--epochs", "2", "--warmup_epochs", "0", "--no_save_checkpoint",
        "--output_dir", str(out), *(["--bf16_pointwise"] if peer == "trainer-bf16" else []),
    ]
    # A step line every step: the last epoch's lines give the steps' own time beside the epoch's.
    done = run_measured(cmd, timeout, f"mnv2 train batch {batch}", env={"MNV2_LOG_EVERY": "1"})
    epochs = _EPOCH.findall(done.text)
    if done.code != 0 or len(epochs) < 2:
        raise RuntimeError(f"mnv2 train batch {batch} failed (exit {done.code}):\n{failure_tail(done.text)}")
    last = str(len(epochs) - 1)
    steps_ms = [float(ms) for epoch, ms in _STEP.findall(done.text) if epoch == last]
    # cpu_s counts the trainer and its reaped data workers
    return {"peer": peer, "batch": batch, "per_step_s": float(epochs[-1][1]) / 1000.0,
            "step_alone_s": statistics.median(steps_ms) / 1000.0 if steps_ms else None,
            "epoch_s": [float(e[0]) / 1000.0 for e in epochs], "wall_s": done.wall_s,
            "background_cores": done.background_cores, "peak_rss_mb": done.peak_rss_mb}


def run_torch(peer: str, batch: int, steps: int, timeout: float) -> dict[str, Any]:
    argv = ["bench.peer", peer, "train", "--batch", str(batch), "--steps", str(steps), "--warmup", "3"]
    r = run_child(argv, timeout)
    return {"peer": peer, "batch": batch, "per_step_s": r.result["median_s"], "times": r.result["times"],
            "background_cores": r.background_cores, "peak_rss_mb": r.peak_rss_mb, "wall_s": r.wall_s}


def measure(batches: list[int], steps: int, rounds: int, cache: Path, timeout: float,
            peers: tuple[str, ...] = (*TRAINERS, *TORCH_PEERS)) -> dict[str, Any]:
    """Every peer at every batch size, `rounds` rounds in rotating order; raw runs per (batch, peer)."""
    import tempfile

    out: dict[str, Any] = {}
    for batch in batches:
        data = image_folder(cache, batch * steps)
        for round_ in range(rounds):
            order = list(peers[round_ % len(peers):] + peers[:round_ % len(peers)])
            for peer in order:
                key = f"{batch}-{peer}"
                try:
                    if peer in TRAINERS:
                        with tempfile.TemporaryDirectory(prefix="mnv2-bench-out-") as tmp:
                            r = run_trainer(batch, steps, data, Path(tmp), timeout, peer)
                    else:
                        r = run_torch(peer, batch, steps, timeout)
                except RuntimeError as error:
                    lines = str(error).splitlines()
                    out.setdefault(key, []).append({"error": " ".join(lines[:1] + lines[-1:])})
                    print(f"  batch {batch} {peer}: {error}", flush=True)
                    continue
                out.setdefault(key, []).append(r)
                print(f"  round {round_ + 1}/{rounds} batch {batch} {peer}: {r['per_step_s']:.3f} s/step "
                      f"(background {r['background_cores']:.2f} cores)", flush=True)
    return out


def summarise(raw: dict[str, Any], batches: list[int], peers: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Median per-step time, images/s, GFLOP/s and background load per (batch, peer)."""
    flop_per_image = 3 * 2 * forward_macs()
    summary: dict[str, dict[str, Any]] = {}
    for batch in batches:
        for peer in peers:
            runs = [r for r in raw.get(f"{batch}-{peer}", []) if "error" not in r]
            if not runs:
                errors = [r["error"] for r in raw.get(f"{batch}-{peer}", [])]
                summary[f"{batch}-{peer}"] = {"error": errors[0] if errors else "not run"}
                continue
            step = statistics.median(r["per_step_s"] for r in runs)
            alone = [r["step_alone_s"] for r in runs if r.get("step_alone_s")]
            summary[f"{batch}-{peer}"] = {
                "per_step_s": step, "images_per_s": batch / step,
                **({"step_alone_s": statistics.median(alone)} if alone else {}),
                "gflops": batch * flop_per_image / step / 1e9,
                "background_cores": statistics.median(r["background_cores"] for r in runs),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "runs": len(runs),
            }
    return summary


def headlines(summary: dict[str, dict[str, Any]], batches: list[int], peers: tuple[str, ...]) -> list[str]:
    """Each trainer against the best PyTorch of its own precision and against the best of any."""
    lines = []
    for batch in batches:
        ran = {p: summary.get(f"{batch}-{p}", {"error": "not run"}) for p in peers}
        speed = {p: s["images_per_s"] for p, s in ran.items() if "error" not in s}
        lines += against_best_torch(speed, TRAINERS, batch, LABELS)
    return lines


def table(summary: dict[str, dict[str, Any]], batches: list[int], peers: tuple[str, ...]) -> str:
    """Markdown: each trainer against the best PyTorch configuration first, then against each."""
    peak, how = peak_gflops()
    trainers = [t for t in TRAINERS if t in peers]
    rows = ["| batch | peer | s/step (median) | images/s | GFLOP/s | % of peak | "
            + " | ".join(f"{t} vs this" for t in trainers) + " | peak RSS MB | background cores |",
            "|---|---|---|---|---|---|" + "---|" * len(trainers) + "---|---|"]
    for batch in batches:
        for peer in peers:
            s = summary.get(f"{batch}-{peer}", {"error": "not run"})
            if "error" in s:
                empty = " |" * (5 + len(trainers))
                rows.append(f"| {batch} | {LABELS[peer]} | failed: {s['error']} |{empty}")
                continue
            versus = []
            for t in trainers:
                mine = summary.get(f"{batch}-{t}", {"error": 1})
                same = peer == t or "error" in mine
                versus.append("" if same else f"{mine['images_per_s'] / s['images_per_s']:.2f}x")
            rows.append(f"| {batch} | {LABELS[peer]} | {s['per_step_s']:.3f} | {s['images_per_s']:.2f} "
                        f"| {s['gflops']:.1f} | {100 * s['gflops'] / peak:.1f}% | " + " | ".join(versus)
                        + f" | {s['peak_rss_mb']:.0f} | {s['background_cores']:.2f} |")
    headline = headlines(summary, batches, peers)
    alone = [f"batch {b}, {t}: {summary[f'{b}-{t}']['step_alone_s'] * 1000:.0f} ms "
             f"({b / summary[f'{b}-{t}']['step_alone_s']:.1f} images/s)"
             for b in batches for t in trainers if "step_alone_s" in summary.get(f"{b}-{t}", {})]
    gf = 3 * 2 * forward_macs() / 1e9
    loads = [s["background_cores"] for s in summary.values() if "error" not in s]
    warning = ""
    if loads and max(loads) > BUSY_CORES:
        warning = (
            f"\n**Not a result:** other processes used up to {max(loads):.2f} of the {os.cpu_count()} cores "
            f"during these runs. PyTorch's OpenMP threads and MindSpore's thread pool both spin-wait, so a "
            "busy neighbour moves each figure by up to 10x, in either direction; these rows only show that "
            "the bench runs. Rerun on an idle machine.\n"
        )
    elif loads and max(loads) > QUIET_CORES:
        warning = (
            f"\n**Indicative only:** other processes used up to {max(loads):.2f} of the {os.cpu_count()} "
            f"cores during these runs (quiet means below {QUIET_CORES}); rerun on an idle machine for the "
            "record.\n"
        )
    notes = warning + (
        "\nThe trainers vs the best PyTorch configuration measured in the same run: "
        f"{'; '.join(headline) or 'n/a'}. \"trainer vs this\" is that trainer's images/s divided by the "
        "row's. The float32 peers are compared with the float32 trainer; `--bf16_pointwise` and PyTorch's "
        "bf16 autocast are both mixed precision (bf16 products, float32 sums and parameters). "
        f"GFLOP/s counts {gf:.2f} GFLOP per image (3 x the forward pass's "
        f"{forward_macs() / 1e6:.0f} M multiply-adds x 2); peak {peak:.0f} GFLOP/s = {how}. The trainer's "
        "figure is `mnv2 train`'s own \"per step time\" of its last epoch (2 epochs over a generated "
        "ImageFolder of exactly that many steps; data pipeline, loop and logging included); PyTorch's is the "
        "median of its timed steps on one in-memory batch (no input cost). Medians over rounds, peers "
        "interleaved in rotating order, each in its own process.\n"
    )
    if alone:
        notes += ("\nThe trainer's steps alone (median of its last epoch's step lines: the step and the loss "
                  "read back, without waiting for data or the epoch's start): " + "; ".join(alone) + ". The "
                  "rest of its per step time is its data pipeline decoding on the same 2 cores and each "
                  "epoch's new pipeline starting, which a 20-step epoch weighs far more than a real one.\n")
    return "\n".join(rows) + "\n" + notes


def section(report, quick: bool, rounds: int | None = None, batches: str | None = None,
            peers: str | None = None) -> None:
    """The `trainer` section of bench.run_all (`rounds` overrides 1 when quick, else 2; `batches` and
    `peers`, comma-separated, override every batch size and peer)."""
    default_batches, steps, default_rounds = ([8], 20, 1) if quick else ([8, 32, 150], 20, 2)
    sizes = [int(b) for b in batches.split(",")] if batches else default_batches
    chosen = tuple(peers.split(",")) if peers else (*TRAINERS, *TORCH_PEERS)
    rounds = rounds or default_rounds
    cache = Path(os.environ.get("MNV2_BENCH_CACHE", "/tmp/mnv2-bench-cache"))
    raw = measure(sizes, steps, rounds, cache, 7200.0, chosen)
    summary = summarise(raw, sizes, chosen)
    report.raw["trainer"] = {"raw": raw, "summary": summary, "steps": steps, "rounds": rounds}
    report.add("The trainer's own path: `mnv2 train` against PyTorch (MobileNetV2 1.0, 224 px, 10 classes)",
               table(summary, sizes, chosen), first=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="8,32,150")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run (>= 20 for the record)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--peers", default=",".join((*TRAINERS, *TORCH_PEERS)))
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("MNV2_BENCH_CACHE",
                                                                          "/tmp/mnv2-bench-cache")))
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    peers = tuple(args.peers.split(","))
    raw = measure(batches, args.steps, args.rounds, args.cache, 7200.0, peers)
    summary = summarise(raw, batches, peers)
    print(table(summary, batches, peers))
    print("BENCH-RESULT " + json.dumps({"raw": raw, "summary": summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
