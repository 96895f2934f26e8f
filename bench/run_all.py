"""Run every benchmark side by side and write bench/RESULTS.md: `python -m bench.run_all [--quick]`.

Each training/inference peer runs in its own subprocess (`bench.peer`), so its peak resident memory
(ru_maxrss from wait4) is its own and no framework's thread pools or allocator state leak into
another's. Around every subprocess the whole machine's busy CPU time is read from /proc/stat; the
part not used by the child is reported as background load, because this machine is shared and a
busy neighbour changes the figures (PyTorch's OpenMP barriers suffer more from it than MindSpore's
thread pool). Medians are of per-step times after warm-up.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTIONS = ("trainer", "kernels", "train", "forward", "data", "ranktable", "operator", "profile")
PEER_LABELS = {
    "ms-fast": "MindSpore 2.10, all the project's kernels (ours)",
    "ms-bf16": "MindSpore 2.10, all the project's kernels, 1x1 convolutions in bf16 (ours, --bf16_pointwise)",
    "ms-dw": "MindSpore 2.10, depthwise and stem kernels only (previous step)",
    "ms-ref": "MindSpore 2.10, nn.Conv2d(group=c)",
    "torch": "PyTorch 2.13 eager, NCHW",
    "torch-cl": "PyTorch 2.13 eager, channels_last",
    "torch-compile": "PyTorch 2.13 torch.compile, channels_last",
    "torch-cl-bf16": "PyTorch 2.13 eager, channels_last, bf16 autocast",
    "torch-compile-bf16": "PyTorch 2.13 torch.compile, channels_last, bf16 autocast",
}


@dataclass
class Run:
    """One subprocess: its parsed BENCH-RESULT, peak RSS, CPU use and the machine's background load."""

    result: dict[str, Any]
    peak_rss_mb: float
    wall_s: float
    child_cpu_s: float
    background_cores: float
    argv: list[str] = field(default_factory=list)


def _busy_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Finished:
    """A child process's exit code, output and resources (from its rusage and /proc/stat)."""

    code: int
    text: str
    peak_rss_mb: float
    wall_s: float
    cpu_s: float  # the child and its reaped children
    background_cores: float  # what other processes used meanwhile


def run_measured(cmd: list[str], timeout: float, what: str, env: dict[str, str] | None = None) -> Finished:
    """Run `cmd` from the repository root (`env` added to ours), killed after `timeout`; its output
    and resources."""
    env = {**os.environ, "GLOG_v": "3", "PYTHONWARNINGS": "ignore", **(env or {})}
    busy0, wall0 = _busy_seconds(), time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env, text=True)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                raise RuntimeError(f"{what}: timed out after {timeout:.0f}s")
            time.sleep(0.2)
        wall = time.perf_counter() - wall0
        busy = _busy_seconds() - busy0
        out.seek(0)
        text = out.read()
    cpu = usage.ru_utime + usage.ru_stime
    return Finished(code=os.waitstatus_to_exitcode(status), text=text, peak_rss_mb=usage.ru_maxrss / 1024.0,
                    wall_s=wall, cpu_s=cpu, background_cores=max(0.0, (busy - cpu) / wall))


def failure_tail(text: str) -> str:
    return "\n".join(text.splitlines()[-15:])


def run_child(argv: list[str], timeout: float) -> Run:
    """Run `python -m <argv>` and return its result line with resource figures."""
    done = run_measured([sys.executable, "-m", *argv], timeout, " ".join(argv))
    lines = [ln for ln in done.text.splitlines() if ln.startswith("BENCH-RESULT ")]
    if done.code != 0 or not lines:
        raise RuntimeError(f"{' '.join(argv)} failed (exit {done.code}):\n{failure_tail(done.text)}")
    return Run(
        result=json.loads(lines[-1][len("BENCH-RESULT "):]),
        peak_rss_mb=done.peak_rss_mb,
        wall_s=done.wall_s,
        child_cpu_s=done.cpu_s,
        background_cores=done.background_cores,
        argv=argv,
    )


def _fmt(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


class Report:
    """Collects Markdown sections, prints each as it completes and rewrites RESULTS.md each time."""

    def __init__(self, path: Path, quick: bool, keep: bool = False) -> None:
        self.path = path
        self.quick = quick
        self.sections: dict[str, str] = {}
        self.raw: dict[str, Any] = {}
        self.rerun: list[str] = []
        self.legacy = ""  # the whole file's "Generated by" line, for sections older than per-section dates
        if keep and path.is_file():  # --only: sections not rerun keep their last figures
            text = path.read_text()
            lines = text.splitlines()
            self.legacy = next((ln for ln in lines if ln.startswith("Generated by")), "")
            body, _, raw = text.partition("\n<!-- raw: ")
            with contextlib.suppress(json.JSONDecodeError):
                self.raw = json.loads(raw.rsplit(" -->", 1)[0]) if raw else {}
            for chunk in body.split("\n## ")[1:]:
                title = chunk.split("\n", 1)[0]
                self.sections[title.split(" (")[0]] = "## " + chunk.rstrip() + "\n"

    def add(self, title: str, body: str, first: bool = False) -> None:
        """Add or replace a section; `first` puts it at the top (the headline comparison)."""
        text = f"## {title}\n\n{body.rstrip()}\n"
        print("\n" + text, flush=True)
        key = title.split(" (")[0]
        self.rerun.append(key)
        self.raw.setdefault("provenance", {})[key] = self._generated()
        self.sections.pop(key, None)
        self.sections = {key: text, **self.sections} if first else {**self.sections, key: text}
        self.write()

    def _generated(self) -> str:
        """Which command wrote a section, when and on what machine."""
        return (f"`python -m bench.run_all {' '.join(sys.argv[1:])}`".replace(" `", "`") + " on "
                f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}, {_cpu_model()}")

    def write(self) -> None:
        load = os.getloadavg()
        header = [
            "# Benchmark results",
            "",
            f"Generated by `python -m bench.run_all{' --quick' if self.quick else ''}` on "
            f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; "
            f"{platform.processor() or platform.machine()}, {_cpu_model()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}; load average at write time {load[0]:.1f}/{load[1]:.1f}/"
            f"{load[2]:.1f}.",
            "",
            "**Caveat:** this machine's 2 cores are shared with other jobs that ran during this session. "
            "The `background` column is the CPU (in cores) used by other processes while each peer ran; "
            "figures taken with background load near 1 core or more are depressed, and PyTorch (OpenMP "
            "barriers between its 2 threads) loses more to a busy neighbour than MindSpore does. Compare "
            "rows with similar background load; rerun on an idle machine for publishable numbers.",
            "",
        ]
        kept: dict[str, list[str]] = {}
        for key in self.sections:
            if key not in self.rerun:
                origin = self.raw.get("provenance", {}).get(key) or self.legacy or "an earlier run"
                kept.setdefault(origin, []).append(key)
        header += [f"Kept from an earlier run ({'; '.join(keys)}): {origin}" for origin, keys in kept.items()]
        header += [""] if kept else []
        self.path.write_text("\n".join(header) + "\n" + "\n".join(self.sections.values())
                             + "\n<!-- raw: " + json.dumps(self.raw) + " -->\n")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


class Peer:
    """A `bench.peer --serve` subprocess: loaded once, then stepped on command."""

    def __init__(self, peer: str, mode: str, batch: int, warmup: int, timeout: float) -> None:
        self.peer, self.timeout = peer, timeout
        cmd = [sys.executable, "-m", "bench.peer", peer, mode, "--batch", str(batch), "--warmup", str(warmup),
               "--serve"]
        env = {**os.environ, "GLOG_v": "3", "PYTHONWARNINGS": "ignore"}
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - lives as long as the peer; closed in finish
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, env=env, text=True, bufsize=1)
        self.walls: list[float] = []
        self.cpus: list[float] = []
        self.backgrounds: list[float] = []
        self._expect("READY")

    def _readline(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.log.seek(0)
            tail = "\n".join(self.log.read().splitlines()[-15:])
            raise RuntimeError(f"{self.peer} exited (code {self.proc.returncode}):\n{tail}")
        return line.strip()

    def _expect(self, prefix: str) -> str:
        while True:  # skip anything a library printed to stdout
            line = self._readline()
            if line.startswith(prefix):
                return line

    def step(self) -> None:
        busy0 = _busy_seconds()
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        _, wall, cpu = self._expect("STEP ").split()
        busy = _busy_seconds() - busy0
        self.walls.append(float(wall))
        self.cpus.append(float(cpu))
        self.backgrounds.append(max(0.0, (busy - float(cpu)) / float(wall)))

    def finish(self) -> Run:
        self.proc.stdin.write("done\n")
        self.proc.stdin.flush()
        result = json.loads(self._expect("BENCH-RESULT ")[len("BENCH-RESULT "):])
        self.proc.stdin.close()
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.log.close()
        result["cpu_s_median"] = statistics.median(self.cpus)
        return Run(result=result, peak_rss_mb=usage.ru_maxrss / 1024.0, wall_s=sum(self.walls),
                   child_cpu_s=sum(self.cpus), background_cores=statistics.median(self.backgrounds))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_interleaved(peers: list[str], mode: str, batch: int, steps: int, warmup: int,
                    timeout: float, max_steps: dict[str, int] | None = None) -> dict[str, Run | str]:
    """Load every peer (one at a time, so compilations do not overlap), then step them in turn.

    The order rotates each round so no peer always runs right after another one's step.
    `max_steps` caps a slow peer (it sits out the later rounds).
    """
    max_steps = max_steps or {}
    loaded: dict[str, Peer] = {}
    out: dict[str, Run | str] = {}
    try:
        for peer in peers:
            try:
                loaded[peer] = Peer(peer, mode, batch, warmup, timeout)
                print(f"  {peer} {mode} batch {batch}: loaded", flush=True)
            except RuntimeError as error:
                out[peer] = str(error)
                print(f"  {peer} {mode} batch {batch}: {error}", flush=True)
        order = list(loaded)
        for round_ in range(steps):
            rotated = order[round_ % len(order):] + order[:round_ % len(order)] if order else []
            for peer in rotated:
                if round_ >= max_steps.get(peer, steps):
                    continue
                loaded[peer].step()
                print(f"    round {round_ + 1}/{steps} {peer}: {loaded[peer].walls[-1]:.2f} s "
                      f"(background {loaded[peer].backgrounds[-1]:.2f} cores)", flush=True)
        for peer, p in loaded.items():
            out[peer] = p.finish()
    finally:
        for p in loaded.values():
            p.kill()
    return out


def against_best_torch(speed: dict[str, float], ours, batch: int, labels: dict[str, str]) -> list[str]:
    """Each of `ours` that ran (`speed`: images/s by peer) against the fastest PyTorch of its own
    precision, and against the fastest of any precision where that is another peer. Mixed-precision
    peers say so in their names (`bf16`)."""
    torch_peers = [p for p in speed if p.startswith("torch")]
    lines = []
    for mine in ours:
        if mine not in speed:
            continue
        same = [p for p in torch_peers if ("bf16" in p) == ("bf16" in mine)]
        shown = set()
        for label, candidates in (("same precision", same), ("any precision", torch_peers)):
            best = max(candidates, key=speed.__getitem__, default=None)
            if best is None or best in shown:
                continue  # no peer, or the line above again
            shown.add(best)
            lines.append(f"batch {batch}, {mine}: **{_fmt(speed[mine] / speed[best])}x** the best PyTorch "
                         f"of {label} ({labels[best]})")
    return lines


def versus_best_torch(runs: dict[str, Any], batch: int) -> list[str]:
    """Our MindSpore peers among `runs` (the peers that failed are strings) against the best PyTorch."""
    speed = {p: r.result["images_per_s"] for p, r in runs.items() if isinstance(r, Run)}
    return against_best_torch(speed, ("ms-fast", "ms-bf16"), batch, PEER_LABELS)


def throughput_section(report: Report, mode: str, batches: list[int], peers: list[str], steps: int,
                       warmup: int, timeout: float, max_steps: dict[str, int] | None = None) -> None:
    """One table per mode (a bench-only loop beside `trainer`): every peer at every batch size, ratios
    against PyTorch NCHW."""
    rows = [
        "| batch | peer | images/s | vs PyTorch NCHW | median step s | min-max s | CPU s/step | peak RSS MB "
        "| RSS vs PyTorch NCHW | background cores |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    against_best: list[str] = []
    for batch in batches:
        runs = run_interleaved(peers, mode, batch, steps, warmup, timeout, max_steps)
        against_best += versus_best_torch(runs, batch)
        base = runs.get("torch")
        base = base if isinstance(base, Run) else None
        for peer in peers:
            r = runs.get(peer)
            if not isinstance(r, Run):
                lines = str(r).splitlines() or [""]
                why = lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"  # what failed, and why
                rows.append(f"| {batch} | {PEER_LABELS[peer]} | failed: {why} | | | | | | | |")
                continue
            report.raw[f"{mode}-{batch}-{peer}"] = {**r.result, "peak_rss_mb": r.peak_rss_mb,
                                                   "background_cores": r.background_cores}
            ratio = r.result["images_per_s"] / base.result["images_per_s"] if base else float("nan")
            rss_ratio = r.peak_rss_mb / base.peak_rss_mb if base else float("nan")
            times = r.result["times"]
            rows.append(
                f"| {batch} | {PEER_LABELS[peer]} | {_fmt(r.result['images_per_s'])} | {_fmt(ratio)}x "
                f"| {_fmt(r.result['median_s'], 3)} | {_fmt(min(times), 3)}-{_fmt(max(times), 3)} "
                f"| {_fmt(r.result['cpu_s_median'], 2)} | {r.peak_rss_mb:.0f} | {_fmt(rss_ratio)}x "
                f"| {_fmt(r.background_cores)} |"
            )
    title = ("Training step throughput (forward, backward, momentum SGD; MobileNetV2 1.0, 224 px, "
             "1000 classes)" if mode == "train" else
             "Forward-only throughput (eval mode; the head-only fine-tuning path's feature extraction)")
    capped = ", ".join(f"{PEER_LABELS[p]} {n}" for p, n in (max_steps or {}).items())
    notes = (f"\nAll peers of a batch size are loaded at once, each in its own process, and stepped in turn "
             f"(rotating order), {steps} timed steps each after {warmup} warm-up step(s)"
             f"{f' (fewer for the slow reference: {capped})' if capped else ''}; images/s is from "
             "the median step. CPU s/step is the peer's own CPU time per step (user + system, all its "
             "threads). MindSpore peers use the trainer's `mnv2.model.MobileNetV2` and "
             "`mnv2.loss.LabelSmoothingCrossEntropy` in GRAPH_MODE (ours: the 17 depthwise convolutions, "
             "the stem and the 52 BatchNorms with their ReLU6 swapped by "
             "`mnv2.ops.depthwise.replace_slow_convolutions`, as the trainer does); PyTorch runs "
             "`bench/torch_mobilenetv2.py` (same table, layer order and init) with "
             "CrossEntropyLoss(label_smoothing=0.1) and SGD(momentum 0.9, weight decay 4e-5), 2 threads.")
    best_line = f"\nOurs vs the best PyTorch configuration of the same run: {'; '.join(against_best)}.\n"
    report.add(title, "\n".join(rows) + "\n" + (best_line if against_best else "") + notes)


def data_section(report: Report, images: int, train_steps: int, timeout: float) -> None:
    from bench.images import generate_image_folder

    with tempfile.TemporaryDirectory(prefix="mnv2-bench-") as tmp:
        root = generate_image_folder(Path(tmp) / "images", classes=4, per_class=16)
        rows = ["| pipeline | images/s (1 worker, wall) | images per CPU-second (per core) | peak RSS MB "
                "| background cores |", "|---|---|---|---|---|"]
        per_cpu: dict[str, float] = {}
        for impl in ("mindspore", "pillow"):
            argv = ["bench.data_pipeline", impl, "--root", str(root), "--images", str(images)]
            r = run_child(argv, timeout)
            per_cpu[impl] = r.result["images_per_cpu_s"]
            report.raw[f"data-{impl}"] = {**r.result, "peak_rss_mb": r.peak_rss_mb}
            label = ("mindspore.dataset: `mnv2.data.create_train_dataset`" if impl == "mindspore"
                     else "Pillow + numpy, one thread")
            rows.append(f"| {label} | {_fmt(r.result['images_per_s'], 1)} "
                        f"| {_fmt(r.result['images_per_cpu_s'], 1)} "
                        f"| {r.peak_rss_mb:.0f} | {_fmt(r.background_cores)} |")
        ratio = per_cpu["mindspore"] / per_cpu["pillow"]
        body = "\n".join(rows) + (
            f"\n\nmindspore.dataset vs Pillow per CPU-second: {ratio:.2f}x. Decode + random crop/resize to "
            "224 + flip + colour jitter 0.4/0.4/0.4 + normalise + HWC to CHW, batches of 32, on 64 generated "
            "500x375 JPEGs (quality 90). The per-CPU-second figure counts all the process's threads, so it "
            "is the fair per-core rate on a shared machine.\n"
        )
        wait = run_child(["bench.peer", "ms-fast", "train", "--batch", "32", "--steps", str(train_steps),
                          "--warmup", "1", "--data", str(root)], timeout)
        frac = wait.result["data_wait_fraction"]
        report.raw["data-wait"] = {**wait.result, "peak_rss_mb": wait.peak_rss_mb}
        body += (
            f"\n**Does the pipeline starve training?** MindSpore (ours) trained at batch 32 from the "
            f"trainer's real pipeline (`create_train_dataset`, 2 workers) for {train_steps} steps: "
            f"{wait.result['images_per_s']:.2f} images/s, time blocked waiting for the next batch "
            f"{100 * frac:.2f}% of step time (target < 5%): "
            f"{'met' if frac < 0.05 else 'NOT met'}. One core decodes about "
            f"{per_cpu['mindspore']:.0f} images per CPU-second, "
            f"{per_cpu['mindspore'] / max(wait.result['images_per_s'], 1e-9):.0f}x what training consumes.\n"
        )
        report.add("Data pipeline", body)


def ranktable_section(report: Report) -> None:
    from bench.ranktable import bench_rank_table

    try:
        r = bench_rank_table(512, 8)
    except ImportError as error:
        report.add("Rank-table rendering", f"Not run: {error}.")
        return
    report.raw["ranktable"] = r
    report.add(
        "Rank-table rendering (512 servers x 8 devices = 4096 ranks)",
        f"`mnv2.ranktable.render_rank_table` from 512 annotated pods (given in reverse order): median "
        f"{1000 * r['render_median_s']:.1f} ms over {r['repeats']} runs; `json.dumps` of the result "
        f"{1000 * r['json_median_s']:.1f} ms, {r['json_bytes'] / 1024:.0f} KiB.",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a loaded or slow machine)")
    parser.add_argument("--only", help="comma-separated sections to run (others keep their figures in the "
                        f"results file): {','.join(SECTIONS)}")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--trainer-rounds", type=int, help="trainer section rounds (default 2; 1 quick)")
    parser.add_argument("--trainer-batches", help="trainer section batch sizes (default 8,32,150; 8 quick)")
    parser.add_argument("--trainer-peers", help="trainer section peers (default: all of them)")
    args = parser.parse_args(argv)
    sections = set(args.only.split(",")) if args.only else set(SECTIONS)
    unknown = sections - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown section(s) {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    from bench.trainer_bench import TORCH_PEERS, TRAINERS

    known = (*TRAINERS, *TORCH_PEERS)
    odd = set((args.trainer_peers or "").split(",")) - {"", *known}
    if odd:
        parser.error(f"--trainer-peers: unknown {sorted(odd)}; choose from {', '.join(known)}")
    steps, warmup = (3, 1) if args.quick else (8, 2)
    timeout = 3600.0
    report = Report(args.output, args.quick, keep=bool(args.only))
    if "trainer" in sections:  # the figure that counts: `mnv2 train` itself against PyTorch
        from bench import trainer_bench

        trainer_bench.section(report, quick=args.quick, rounds=args.trainer_rounds,
                              batches=args.trainer_batches, peers=args.trainer_peers)
    if "kernels" in sections:
        from bench import kernels_ab

        kernels_ab.section(report, quick=args.quick)
    if "train" in sections:
        peers = ["torch", "torch-cl", "ms-fast", "ms-dw", "ms-ref"]
        # The reference kernel takes minutes per step at batch 32: in quick mode it runs 2 steps.
        cap = {"ms-ref": 2} if args.quick else None
        throughput_section(report, "train", [8, 32], peers, steps, warmup, timeout, cap)
    if "forward" in sections:
        throughput_section(report, "forward", [32] if args.quick else [8, 32],
                           ["torch", "torch-cl", "torch-compile", "torch-compile-bf16", "ms-fast", "ms-bf16",
                            "ms-ref"],
                           steps, warmup, timeout, {"ms-ref": 2} if args.quick else None)
    if "data" in sections:
        data_section(report, 128 if args.quick else 512, 3 if args.quick else 6, timeout)
    if "ranktable" in sections:
        ranktable_section(report)
    if "operator" in sections:
        from bench import operator_bench

        operator_bench.section(report, quick=args.quick)
    if "profile" in sections:
        from bench import profile_ms

        profile_ms.section(report, quick=args.quick)
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
