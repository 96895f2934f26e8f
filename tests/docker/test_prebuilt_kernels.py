"""The CPU image's prebuilt kernels: the Dockerfile's own command, then a pod that cannot compile.

`python -m mnv2.ops._build --prebuild` (the RUN line of docker/trainer-cpu.Dockerfile) compiles every
kernel at every portable level of the architecture, never -march=native; a process with no compiler
and an empty cache then loads the best copy its CPU runs, and compiles nothing (issue 14).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mnv2.ops import _build

POD = r"""
import ctypes, json
from mnv2.ops import _build
paths = {name: str(_build.build_library(name)) for name in _build.source_names()}
for path in paths.values():
    ctypes.CDLL(path)  # this CPU runs the portable copy
result = {"paths": paths, "available": _build.kernels_available(), "levels": _build.runnable_levels()}
print(json.dumps(result))
"""


def test_prebuilt_copies_are_portable_and_preferred(tmp_path: Path):
    prebuilt, cache = tmp_path / "prebuilt", tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MNV2_", "CXX"))}
    built = subprocess.run(
        [sys.executable, "-m", "mnv2.ops._build", "--prebuild", "--dest", str(prebuilt)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    levels = [level for level, _ in _build.PORTABLE_LEVELS[_build._arch()]]
    assert len(built.stdout.split()) == len(_build.source_names()) * len(levels)
    for name in _build.source_names():
        source = _build.CSRC / f"{name}.cc"
        for level in levels:
            assert (prebuilt / _build._library_name(name, source, level)).is_file()
            assert f"-march={level}" in _build.compile_command(source, Path("x"), march=level)

    pod_env = env | {
        "CXX": "/nonexistent/g++",  # a pod that could not compile if it tried
        _build.PREBUILT_ENV: str(prebuilt),
        _build.KERNEL_CACHE_ENV: str(cache),
    }
    pod = subprocess.run(
        [sys.executable, "-c", POD], env=pod_env, capture_output=True, text=True, timeout=300
    )
    assert pod.returncode == 0, pod.stderr
    result = json.loads(pod.stdout)
    assert result["available"] is True and "warning" not in pod.stderr
    best = result["levels"][0]
    for name, path in result["paths"].items():
        assert Path(path).parent == prebuilt
        assert Path(path).name == _build._library_name(name, _build.CSRC / f"{name}.cc", best)
    assert not cache.exists(), "nothing compiled, nothing cached"
