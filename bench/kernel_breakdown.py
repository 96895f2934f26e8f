"""Per-kernel time of our custom ops at MobileNetV2's real shapes: `python -m bench.kernel_breakdown`.

The MindSpore profiler lumps every custom op into one "Custom" row. This calls each entry point
of the built libraries directly (ctypes, MindSpore's aot calling convention, no MindSpore in the
loop) for every layer instance of MobileNetV2 1.0 at 224 px, and prints per kind of kernel the
milliseconds per training step, the bytes it must move at least (each input read once, each
output written once) and the rate that makes, against the machine's copy bandwidth measured here.

Inputs rotate over enough copies (>= 96 MiB together) that a call does not find its operands in
cache from the previous call, as in training, where each layer's tensors were last touched a whole
forward pass earlier.

``--rev REV`` also builds the kernels from the sources at git revision REV (same flags) and times
them beside the working tree's, call by call in turn, each with its own operands, so background
load falls on both alike (``--rev HEAD`` for the effect of uncommitted changes).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from mnv2.model import FIRST_CHANNELS, INVERTED_RESIDUAL_SETTINGS, LAST_CHANNELS, make_divisible

ROTATE_BYTES = 96 << 20
F32 = 4


def layers(width: float = 1.0, image: int = 224) -> list[tuple]:
    """Every custom-kernel call site of one MobileNetV2 training step, in network order.

    ("bn", C, size, relu6) | ("dw", C, in_size, stride) | ("stem", 3, image, 32), where the
    BatchNorm + ReLU6 before a depthwise convolution is ("bn", C, size, "act") and that convolution
    ("dw", C, in_size, "act<stride>"): the depthwise kernel applies it (mnv2.ops.act_depthwise); the
    BatchNorm + ReLU6 after that convolution is ("bn", C, out_size, "after_dw").
    """
    def out(size: int, stride: int) -> int:
        return (size - 1) // stride + 1

    first = make_divisible(FIRST_CHANNELS * width)
    size = out(image, 2)
    found: list[tuple] = [("stem", 3, image, first), ("bn", first, size, "act")]
    channels = first
    for t, c, n, s in INVERTED_RESIDUAL_SETTINGS:
        oc = make_divisible(c * width)
        for i in range(n):
            hidden = round(channels * t)
            stride = s if i == 0 else 1
            if t != 1:
                found.append(("bn", hidden, size, "act"))
            found.append(("dw", hidden, size, f"act{stride}"))
            size = out(size, stride)
            found += [("bn", hidden, size, "after_dw"), ("bn", oc, size, False)]
            channels = oc
    found.append(("bn", make_divisible(LAST_CHANNELS * max(1.0, width)), size, True))
    return found


_SIG = [ctypes.c_int, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int),
        ctypes.POINTER(ctypes.POINTER(ctypes.c_int64)), ctypes.POINTER(ctypes.c_char_p),
        ctypes.c_void_p, ctypes.c_void_p]


class Call:
    """One aot entry point bound to fixed arrays (inputs then outputs), callable with no Python work."""

    def __init__(self, fn, arrays: list[np.ndarray]) -> None:
        n = len(arrays)
        self.arrays = arrays
        self.params = (ctypes.c_void_p * n)(*[a.ctypes.data for a in arrays])
        self.ndims = (ctypes.c_int * n)(*[a.ndim for a in arrays])
        self._shape_store = [(ctypes.c_int64 * a.ndim)(*a.shape) for a in arrays]
        self.shapes = (ctypes.POINTER(ctypes.c_int64) * n)(
            *[ctypes.cast(s, ctypes.POINTER(ctypes.c_int64)) for s in self._shape_store])
        self.dtypes = (ctypes.c_char_p * n)(*[b"float32"] * n)
        self.fn, self.n = fn, n

    def __call__(self) -> None:
        rc = self.fn(self.n, self.params, self.ndims, self.shapes, self.dtypes, None, None)
        if rc != 0:
            raise RuntimeError(f"kernel returned {rc}")


def load(lib: Path) -> ctypes.CDLL:
    dll = ctypes.CDLL(str(lib))
    return dll


def entry(dll: ctypes.CDLL, name: str):
    fn = getattr(dll, name)
    fn.argtypes, fn.restype = _SIG, ctypes.c_int
    return fn


def _has_sums(dll_bn: ctypes.CDLL) -> bool:
    """Whether these kernels (of some revision) have the depthwise backward's BatchNorm sums."""
    return hasattr(dll_bn, "mnv2_bn_train_bwd_apply_r1")


def _has_outbn(dll_bn: ctypes.CDLL) -> bool:
    """Whether the depthwise backward computes the gradient through the BatchNorm after it (from that
    BatchNorm's backward reduction) in these kernels."""
    return hasattr(dll_bn, "mnv2_bn_train_bwd_reduce_r1")


def _rand(rng, shape) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def kernel_calls(dll_bn, dll_dw, layer: tuple, batch: int, rng) -> list[tuple]:
    """[(kind, maker of the operand sets, entry point, bytes moved)] for one layer's forward and backward."""
    kind, c, size, extra = layer
    out: list = []

    def copies(make, nbytes: int):
        """The operand sets, made when called (only for the kernels being timed)."""
        k = max(1, min(8, -(-ROTATE_BYTES // max(1, nbytes))))
        return lambda: [make() for _ in range(k)]

    if kind == "bn" and extra == "act":  # statistics only (the depthwise kernel applies them) + backward
        shape = (batch, c, size, size)
        act = batch * c * size * size * F32

        def coef():
            return [_rand(rng, shape), 1 + 0.1 * _rand(rng, c), 0.1 * _rand(rng, c), np.zeros(c, np.float32),
                    np.ones(c, np.float32), np.array([1e-5, 0.9], np.float32),
                    *[np.empty(c, np.float32) for _ in range(4)]]

        sums = _has_sums(dll_bn)

        def grad():
            x = _rand(rng, shape)
            mean = x.mean(axis=(0, 2, 3)).astype(np.float32)
            invstd = (1 / np.sqrt(x.var(axis=(0, 2, 3)) + 1e-5)).astype(np.float32)
            given = [_rand(rng, c * 4) / size] if sums else []  # the depthwise backward's sums
            return [_rand(rng, shape), x, 1 + 0.1 * _rand(rng, c), 0.1 * _rand(rng, c), mean, invstd, *given,
                    np.empty_like(x), np.empty(c, np.float32), np.empty(c, np.float32)]

        label = "bn_bwd_apply_r1" if sums else "bn_bwd_r1"
        fn = "mnv2_bn_train_bwd_apply_r1" if sums else "mnv2_bn_train_bwd_r1"
        out.append(("bn_coef", copies(coef, act), entry(dll_bn, "mnv2_bn_train_coef"), act))
        out.append((label, copies(grad, 3 * act), entry(dll_bn, fn), 3 * act))
    elif kind == "bn":
        after_dw = extra == "after_dw"
        r = 1 if after_dw else int(extra)
        shape = (batch, c, size, size)
        act = batch * c * size * size * F32

        def vecs():
            return [1 + 0.1 * _rand(rng, c), 0.1 * _rand(rng, c), np.zeros(c, np.float32),
                    np.ones(c, np.float32)]

        def fwd():
            x = _rand(rng, shape)
            return [x, *vecs(), np.array([1e-5, 0.9], np.float32), np.empty_like(x),
                    *[np.empty(c, np.float32) for _ in range(2)]]

        def bwd():
            x = _rand(rng, shape)
            g, b, _, _ = vecs()
            mean = x.mean(axis=(0, 2, 3)).astype(np.float32)
            invstd = (1 / np.sqrt(x.var(axis=(0, 2, 3)) + 1e-5)).astype(np.float32)
            return [_rand(rng, shape), x, g, b, mean, invstd, np.empty_like(x), np.empty(c, np.float32),
                    np.empty(c, np.float32)]

        out.append((f"bn_fwd_r{r}", copies(fwd, 2 * act), entry(dll_bn, f"mnv2_bn_train_fwd_r{r}"), 2 * act))
        if after_dw and _has_outbn(dll_bn):  # the reduction; the depthwise backward computes dx

            def reduce():
                dy, x, g, b, mean, invstd = bwd()[:6]
                return [dy, x, g, b, mean, invstd, *[np.empty(k * c, np.float32) for k in (1, 1, 2)]]

            fn = entry(dll_bn, "mnv2_bn_train_bwd_reduce_r1")
            out.append(("bn_bwd_reduce_r1", copies(reduce, 2 * act), fn, 2 * act))
        else:
            fn = entry(dll_bn, f"mnv2_bn_train_bwd_r{r}")
            out.append((f"bn_bwd_r{r}", copies(bwd, 3 * act), fn, 3 * act))
    elif kind == "dw":
        act = str(extra).startswith("act")
        s = int(str(extra).removeprefix("act"))
        o = (size - 1) // s + 1
        xs, ys = (batch, c, size, size), (batch, c, o, o)
        xb, yb = np.prod(xs) * F32, np.prod(ys) * F32
        coef = (lambda: [1 + 0.1 * _rand(rng, c), 0.1 * _rand(rng, c)]) if act else list
        name = "act" if act else ""

        def fwd():
            return [_rand(rng, xs), _rand(rng, (c, 1, 3, 3)), *coef(), np.empty(ys, np.float32)]

        sums = act and _has_sums(dll_bn)
        outbn = act and _has_outbn(dll_bn)  # then dy is the gradient of the BatchNorm after it

        def statistics(x) -> list[np.ndarray]:
            """A BatchNorm's gamma, beta, mean and invstd over x."""
            mean, invstd = x.mean(axis=(0, 2, 3)), 1 / np.sqrt(x.var(axis=(0, 2, 3)) + 1e-5)
            gamma, beta = 1 + 0.1 * _rand(rng, c), 0.1 * _rand(rng, c)
            return [v.astype(np.float32) for v in (gamma, beta, mean, invstd)]

        def bwd():
            w = _rand(rng, (c, 1, 3, 3))
            x = _rand(rng, xs)
            bn = statistics(x) if sums else []
            if outbn:
                conv = _rand(rng, ys)
                bn += [conv, *statistics(conv), _rand(rng, 2 * c) / o]
            outputs = [np.empty(xs, np.float32), np.empty_like(w)]
            if sums:
                outputs.append(np.empty(4 * c, np.float32))
            return [_rand(rng, ys), x, w, *coef(), *bn, *outputs]

        variant = "_outbn" if outbn else "_sums" if sums else ""
        fn = f"mnv2_dw3x3_{name}fwd_s{s}_p1", f"mnv2_dw3x3_{name}bwd{variant}_s{s}_p1"
        moved = 2 * xb + (2 if outbn else 1) * yb
        out.append((f"dw_{name}fwd_s{s}", copies(fwd, xb + yb), entry(dll_dw, fn[0]), xb + yb))
        out.append((f"dw_{name}bwd_s{s}", copies(bwd, moved), entry(dll_dw, fn[1]), moved))
    else:  # stem: 3 -> extra channels, stride 2
        o = (size - 1) // 2 + 1
        xs, ys = (batch, c, size, size), (batch, extra, o, o)
        xb, yb = np.prod(xs) * F32, np.prod(ys) * F32

        def fwd():
            return [_rand(rng, xs), _rand(rng, (extra, c, 3, 3)), np.empty(ys, np.float32)]

        def wgrad():
            return [_rand(rng, ys), _rand(rng, xs), _rand(rng, (extra, c, 3, 3)),
                    np.empty((extra, c, 3, 3), np.float32)]

        out.append(("stem_fwd", copies(fwd, xb + yb), entry(dll_dw, "mnv2_conv3x3_fwd_s2_p1"), xb + yb))
        out.append(("stem_wgrad", copies(wgrad, xb + yb), entry(dll_dw, "mnv2_conv3x3_wgrad_s2_p1"), xb + yb))
    return out


def copy_bandwidth(threads: int = 2, mib: int = 256, reps: int = 5) -> float:
    """GB/s of a large numpy copy on `threads` threads, counting read + write bytes."""
    n = mib * (1 << 20) // F32 // threads
    src = [np.ones(n, np.float32) for _ in range(threads)]
    dst = [np.empty(n, np.float32) for _ in range(threads)]
    best = float("inf")
    for _ in range(reps):
        ts = [threading.Thread(target=np.copyto, args=(dst[i], src[i])) for i in range(threads)]
        start = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        best = min(best, time.perf_counter() - start)
    return 2 * n * threads * F32 / best / 1e9


def build_from_rev(rev: str, dest: Path) -> dict[str, Path]:
    """Compile csrc/*.cc and headers as of git revision `rev` with the current flags."""
    from mnv2.ops import _build

    csrc = dest / "csrc"
    csrc.mkdir(parents=True)
    top = Path(subprocess.check_output(["git", "rev-parse", "--show-toplevel"], cwd=_build.CSRC,
                                       text=True).strip())
    rel = _build.CSRC.relative_to(top)
    # From the top: ls-tree filters by the working directory even for a revision:path tree.
    names = subprocess.check_output(["git", "ls-tree", "--name-only", f"{rev}:{rel}"], cwd=top,
                                    text=True).split()
    for name in names:
        (csrc / name).write_bytes(subprocess.check_output(["git", "show", f"{rev}:{rel}/{name}"], cwd=top))
    libs = {}
    for name in ("batchnorm", "depthwise"):
        target = dest / f"lib{name}.so"
        subprocess.run(_build.compile_command(csrc / f"{name}.cc", target), check=True)
        libs[name] = target
    return libs


def measure(batch: int, reps: int, variants: dict[str, dict[str, Path]], only: str | None = None) -> dict:
    """Per variant: ms and GB/s per kind of kernel, plus per-layer detail.

    Variants take turns call by call, so background load falls on all of them alike; each has its
    own operand copies, so none finds its operands in cache because another variant just read them.
    """
    dlls = {name: (load(libs["batchnorm"]), load(libs["depthwise"])) for name, libs in variants.items()}
    rng = np.random.default_rng(0)
    per_kind = {name: defaultdict(float) for name in dlls}
    bytes_kind: dict[str, float] = defaultdict(float)
    detail = []
    for layer in layers():
        per_variant = {name: kernel_calls(*pair, layer, batch, rng) for name, pair in dlls.items()}
        for j, (kind, _, _, nbytes) in enumerate(next(iter(per_variant.values()))):
            if only and not kind.startswith(only):
                continue
            calls = {name: [Call(found[j][2], arrays) for arrays in found[j][1]()]
                     for name, found in per_variant.items()}
            times: dict[str, list[float]] = {name: [] for name in calls}
            for cs in calls.values():  # warm up: pages touched, pool threads awake once
                for call in cs:
                    call()
            copies = min(len(cs) for cs in calls.values())
            for i in range(reps * copies):
                for name, cs in calls.items():
                    call = cs[i % copies]
                    start = time.perf_counter()
                    call()
                    times[name].append(time.perf_counter() - start)
            bytes_kind[kind] += nbytes
            row = {"kind": kind, "layer": list(layer)}
            for name, t in times.items():
                med = statistics.median(t)
                per_kind[name][kind] += med
                row[name] = 1e3 * med
            detail.append(row)
        del per_variant
    return {name: {"per_kind_ms": {k: 1e3 * v for k, v in pk.items()},
                   "per_kind_gbps": {k: bytes_kind[k] / v / 1e9 for k, v in pk.items()},
                   "total_ms": 1e3 * sum(pk.values())} for name, pk in per_kind.items()} | {"detail": detail}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--reps", type=int, default=5, help="timed calls per operand copy")
    parser.add_argument("--rev", action="append", default=[],
                        help="also time the kernels of this git revision (repeatable)")
    parser.add_argument("--only", default=None, help="kernel kinds starting with this (bn, dw_bwd, ...)")
    parser.add_argument("--detail", action="store_true", help="print every layer")
    args = parser.parse_args(argv)
    from mnv2.ops._build import build_library

    variants = {"work": {n: build_library(n) for n in ("batchnorm", "depthwise")}}
    with tempfile.TemporaryDirectory(prefix="mnv2-kb-") as tmp:
        for rev in args.rev:
            variants[rev] = build_from_rev(rev, Path(tmp) / rev.replace("/", "_"))
        bw = copy_bandwidth()
        load_avg = os.getloadavg()
        measured = measure(args.batch, args.reps, variants, args.only)
    detail = measured.pop("detail")
    results = measured
    print(f"batch {args.batch}; numpy copy bandwidth (2 threads, read+write) {bw:.1f} GB/s; "
          f"load average {load_avg[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    kinds = sorted({k for r in results.values() for k in r["per_kind_ms"]},
                   key=lambda k: -results["work"]["per_kind_ms"].get(k, 0))
    head = "".join(f"{name:>22}" for name in results)
    print(f"{'kernel':<14}{head}   (ms per step, GB/s of the minimum traffic)")
    for k in kinds:
        cells = "".join(f"{r['per_kind_ms'].get(k, 0):>12.1f} {r['per_kind_gbps'].get(k, 0):>6.1f}GB/s"
                        for r in results.values())
        print(f"{k:<14}{cells}")
    print(f"{'total':<14}" + "".join(f"{r['total_ms']:>12.1f}          " for r in results.values()))
    if args.detail:
        print(f"{'kernel':<12} {'layer':<28}" + "".join(f"{name:>12}" for name in results) + "  (ms)")
        for d in detail:
            print(f"{d['kind']:<12} {d['layer']!s:<28}" + "".join(f"{d[name]:12.2f}" for name in results))
    print("BENCH-RESULT " + json.dumps({"batch": args.batch, "bandwidth_gbps": bw, "load": load_avg[0],
                                        "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
