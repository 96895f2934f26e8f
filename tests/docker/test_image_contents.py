"""Each image's extra is enough for the code that image runs, and the operator image has no MindSpore.

No image can be built here, so this is the next best check: a Python process that may import only
the standard library, the project and the distributions `mnv2[<extra>]` pulls in (the same closure
docker/lock.py pins) imports what the image's entry point imports. An import of anything else
(MindSpore in the operator, kopf in the trainer) fails the test with the module named.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1].parent

# Runs in the child: a meta-path finder refusing site-packages modules outside the allowed set.
GUARD = r"""
import importlib.abc, importlib.machinery, json, sys, sysconfig
allowed = set(json.loads(sys.argv[1]))
modules = json.loads(sys.argv[2])
site = (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])

class Guard(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in allowed or top in sys.stdlib_module_names or top.startswith("_"):
            return None
        spec = importlib.machinery.PathFinder.find_spec(top)
        if spec is not None and spec.origin and spec.origin.startswith(site):
            raise ImportError(f"{top!r} is not in this image (imported for {name!r})")
        return None

sys.meta_path.insert(0, Guard())
for module in modules:
    __import__(module)
print("ok")
"""


def _closure(extra: str) -> set[str]:
    spec = importlib.util.spec_from_file_location("docker_lock", ROOT / "docker" / "lock.py")
    lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock)
    return set(lock.closure(extra))


def _allowed_top_levels(extra: str) -> list[str]:
    import importlib.metadata as metadata

    from packaging.utils import canonicalize_name

    distributions = _closure(extra)
    allowed = {"mnv2", "mnv2_operator"}
    for module, owners in metadata.packages_distributions().items():
        if any(canonicalize_name(owner) in distributions for owner in owners):
            allowed.add(module)
    return sorted(allowed)


def _import_in_image(extra: str, modules: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", GUARD, json.dumps(_allowed_top_levels(extra)), json.dumps(modules)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )


def test_operator_image_runs_the_operator_without_mindspore():
    pytest.importorskip("mnv2_operator.handlers", reason="the operator's handlers are not written yet")
    result = _import_in_image("operator", [
        "mnv2.cli", "mnv2_operator.commands.operator", "mnv2_operator.handlers", "kopf", "kubernetes",
    ])
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


def test_trainer_image_runs_the_launcher_without_kopf():
    result = _import_in_image("trainer", [
        "mnv2.cli", "mnv2.commands.launch", "mnv2.launcher", "mnv2.commands.train", "mnv2.commands.eval",
        "mnv2.train", "mnv2.evaluate", "mnv2.datasets",
    ])
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


def test_the_guard_refuses_what_an_image_lacks():
    result = _import_in_image("operator", ["mindspore"])
    assert result.returncode != 0 and "'mindspore' is not in this image" in result.stderr
