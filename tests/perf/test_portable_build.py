"""The portable builds the CPU image ships agree with MindSpore too, not only this machine's build.

The image compiles its kernels for portable -march levels (`python -m mnv2.ops._build --prebuild`).
An x86-64-v3 (AVX2) build has no AVX-512, so it takes the depthwise kernels' 8-lane AVX2 paths and
elsewhere the generic (compiler-vectorised) ones instead of the 16-lane ones, which an AVX-512
machine's native build never runs; an x86-64-v2 build (SSE4.2, for CPUs without AVX2) takes the
generic per-plane paths everywhere, which no native build of an AVX2 or AVX-512 machine runs;
an x86-64-v4 build must compile with AVX-512F/BW/CD/DQ/VL alone (no intrinsic of a later extension).
The bf16 pointwise kernel is compiled for AVX512-BF16 under a target pragma at every level and chosen
at run time, so the portable builds must still run it where the CPU has it.
The library loads once per process, so the value checks run again in a process of their own, built
for that level.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mindspore")
from mnv2.ops import _build

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("level", ["x86-64-v2", "x86-64-v3", "x86-64-v4"])
def test_portable_build_matches_mindspore(level, tmp_path):
    if level not in _build.runnable_levels():
        pytest.skip(f"this CPU cannot run {level} code")
    env = {k: v for k, v in os.environ.items() if k != _build.KERNEL_CACHE_ENV}
    env.update({_build.MARCH_ENV: level, _build.CACHE_ENV: str(tmp_path)})
    checks = [
        f"{HERE / 'test_depthwise.py'}::test_matches_nn_conv2d",
        f"{HERE / 'test_depthwise.py'}::test_dense_stem_kernel_matches_nn_conv2d",
        f"{HERE / 'test_act_depthwise.py'}::test_odd_geometries",
        f"{HERE / 'test_act_depthwise.py'}::test_backward_through_batchnorm_after_is_bit_exact",
        f"{HERE / 'test_batchnorm.py'}::test_every_mobilenetv2_shape",
        f"{HERE / 'test_batchnorm.py'}::test_graph_mode_and_edge_shapes",
        f"{HERE / 'test_pointwise.py'}::test_odd_channels_and_planes",
    ]
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *checks],
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    from mnv2.ops.pointwise import bf16_supported

    if bf16_supported():  # then the bf16 checks ran in that build too, not skipped
        assert "skipped" not in run.stdout, run.stdout[-3000:]
    built = sorted(p.name for p in tmp_path.rglob("*.so"))
    assert any(n.startswith("libdepthwise") for n in built), built
    assert any(n.startswith("libbatchnorm") for n in built), built
    assert any(n.startswith("libpointwise") for n in built), built
