"""The custom kernels give bit-identical results on 1, 2 and 3 threads.

Every reduction (BatchNorm statistics and gradient sums, depthwise and stem weight gradients) keeps
per-plane or per-sample partial sums and adds them up in a fixed order, so a data-parallel rank's
result does not depend on how many threads its pool has (sized once per process from
OMP_NUM_THREADS: hence one subprocess per thread count). The shapes take every path: channel-wise
and plane-wise BatchNorm, streaming stores (outputs of 32 MiB and more; 16 with AVX-512), flat and
row-wise depthwise loops (also reading through the BatchNorm + ReLU6 they apply, giving the next
BatchNorm's batch statistics, and taking the gradient through it), and the bf16 pointwise weight
gradient's sample groups (with AMX tiles where the CPU has them, and with AVX512-BF16 dot products).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("mindspore")  # the kernels are built and used only where MindSpore runs

_CHILD = r"""
import ctypes, hashlib
import numpy as np
import os
from mnv2.ops._build import load_library

libs = {name: ctypes.CDLL(str(load_library(name))) for name in ("batchnorm", "depthwise", "pointwise")}
for lib in libs.values():  # the pools really have the thread count under test
    assert lib.mnv2_kernel_threads() == int(os.environ["OMP_NUM_THREADS"]), lib.mnv2_kernel_threads()


def call(lib, name, *arrays):
    fn = getattr(libs[lib], name)
    n = len(arrays)
    i64p = ctypes.POINTER(ctypes.c_int64)
    shapes = [(ctypes.c_int64 * a.ndim)(*a.shape) for a in arrays]
    rc = fn(n, (ctypes.c_void_p * n)(*[a.ctypes.data for a in arrays]),
            (ctypes.c_int * n)(*[a.ndim for a in arrays]),
            (i64p * n)(*[ctypes.cast(s, i64p) for s in shapes]),
            (ctypes.c_char_p * n)(*[b"float32"] * n), None, None)
    assert rc == 0, (name, rc)


rng = np.random.default_rng(0)
digest = hashlib.sha256()
SHAPES = [(14, 48, 112, 2), (19, 144, 56, 1), (8, 576, 14, 2), (3, 960, 7, 1), (2, 17, 50, 1)]
for n, c, size, stride in SHAPES:
    out = (size - 1) // stride + 1
    x = rng.standard_normal((n, c, size, size)).astype(np.float32)
    w = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    g = rng.standard_normal((n, c, out, out)).astype(np.float32)
    y, dx, dw = np.empty_like(g), np.empty_like(x), np.empty_like(w)
    call("depthwise", f"mnv2_dw3x3_fwd_s{stride}_p1", x, w, y)
    call("depthwise", f"mnv2_dw3x3_bwd_s{stride}_p1", g, x, w, dx, dw)
    results = [y, dx, dw]
    for r in (0, 1):
        gamma, beta = rng.uniform(0.5, 1.5, c).astype(np.float32), rng.normal(1, 1, c).astype(np.float32)
        mm, mv, hp = np.zeros(c, np.float32), np.ones(c, np.float32), np.array([1e-5, 0.9], np.float32)
        yb, stats = np.empty_like(x), [np.empty(c, np.float32) for _ in range(2)]
        call("batchnorm", f"mnv2_bn_train_fwd_r{r}", x, gamma, beta, mm, mv, hp, yb, *stats)  # mm, mv written
        gy = rng.standard_normal(x.shape).astype(np.float32)
        db, dg, dbeta = np.empty_like(x), np.empty(c, np.float32), np.empty(c, np.float32)
        call("batchnorm", f"mnv2_bn_train_bwd_r{r}", gy, x, gamma, beta, stats[0], stats[1], db, dg, dbeta)
        results += [yb, *stats, mm, mv, db, dg, dbeta]
    # The BatchNorm + ReLU6 applied by the depthwise kernels as they read (mnv2.ops.act_depthwise).
    coef = [np.empty(c, np.float32) for _ in range(4)]
    mm, mv = np.zeros(c, np.float32), np.ones(c, np.float32)
    call("batchnorm", "mnv2_bn_train_coef", x, gamma, beta, mm, mv, hp, *coef)
    ya, dxa, dwa = np.empty_like(g), np.empty_like(x), np.empty_like(w)
    call("depthwise", f"mnv2_dw3x3_actfwd_s{stride}_p1", x, w, coef[0], coef[1], ya)
    call("depthwise", f"mnv2_dw3x3_actbwd_s{stride}_p1", g, x, w, coef[0], coef[1], dxa, dwa)
    results += [*coef, mm, mv, ya, dxa, dwa]
    # The same forward with its batch statistics, and the BatchNorm + ReLU6 after it taking them.
    ym, moments = np.empty_like(g), np.empty(2 * c, np.float32)
    call("depthwise", f"mnv2_dw3x3_actfwd_moments_s{stride}_p1", x, w, coef[0], coef[1], ym, moments)
    yn, stats = np.empty_like(g), [np.empty(c, np.float32) for _ in range(2)]
    mm, mv = np.zeros(c, np.float32), np.ones(c, np.float32)
    call("batchnorm", "mnv2_bn_train_fwd_moments_r1", ym, moments, gamma, beta, mm, mv, hp, yn, *stats)
    results += [ym, moments, yn, *stats, mm, mv]
    # Its backward: that BatchNorm's reduction, then the depthwise backward computing the gradient
    # through it as it reads dy, with the sums of the BatchNorm before.
    gn = rng.standard_normal(g.shape).astype(np.float32)
    dg2, db2, means2 = np.empty(c, np.float32), np.empty(c, np.float32), np.empty(2 * c, np.float32)
    call("batchnorm", "mnv2_bn_train_bwd_reduce_r1", gn, ym, gamma, beta, *stats, dg2, db2, means2)
    dxo, dwo, sums = np.empty_like(x), np.empty_like(w), np.empty(4 * c, np.float32)
    call("depthwise", f"mnv2_dw3x3_actbwd_outbn_s{stride}_p1", gn, x, w, *coef[:2], gamma, beta, *coef[2:],
         ym, gamma, beta, *stats, means2, dxo, dwo, sums)
    results += [dg2, db2, means2, dxo, dwo, sums]
    for a in results:
        digest.update(a.tobytes())
x = rng.standard_normal((5, 3, 224, 224)).astype(np.float32)
w = rng.standard_normal((32, 3, 3, 3)).astype(np.float32)
y = np.empty((5, 32, 112, 112), np.float32)
g = rng.standard_normal(y.shape).astype(np.float32)
dw = np.empty_like(w)
call("depthwise", "mnv2_conv3x3_fwd_s2_p1", x, w, y)
call("depthwise", "mnv2_conv3x3_wgrad_s2_p1", g, x, w, dw)
digest.update(y.tobytes())
digest.update(dw.tobytes())
if libs["pointwise"].mnv2_pw_supported():
    x = rng.standard_normal((7, 96, 28, 28)).astype(np.float32)
    w = rng.standard_normal((24, 96, 1, 1)).astype(np.float32)
    for isa in range(libs["pointwise"].mnv2_pw_isa(0), 0, -1):  # AMX where there is AMX, AVX512-BF16
        assert libs["pointwise"].mnv2_pw_isa(isa) == isa
        y = np.empty((7, 24, 28, 28), np.float32)
        dx, dw = np.empty_like(x), np.empty_like(w)
        call("pointwise", "mnv2_pw_fwd", x, w, y)
        call("pointwise", "mnv2_pw_bwd", y, x, w, dx, dw)
        for a in (y, dx, dw):
            digest.update(a.tobytes())
print(digest.hexdigest())
"""


def _digest(threads: int) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_results_do_not_depend_on_the_thread_count():
    digests = {threads: _digest(threads) for threads in (1, 2, 3)}
    assert len(set(digests.values())) == 1, digests
