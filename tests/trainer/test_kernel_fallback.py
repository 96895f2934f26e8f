"""The C++ kernels are never the reason a job fails (issue 14).

Without a compiler, with a compiler that fails, on a CPU architecture we have no flags for, or with
a cache that cannot be written, `kernels_available()` answers False after exactly one warning that
says why and names the real switch (`--no_fast_depthwise`), and the trainer keeps MindSpore's own
kernels. The build cache follows $MNV2_KERNEL_CACHE (the operator's emptyDir on a read-only root).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mnv2 import launchenv
from mnv2.ops import _build
from mnv2.options import add_config_arguments

WARNING = "[mnv2] warning: the project's C++ CPU kernels cannot be used here"


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache and prebuilt directory, and the per-process memos forgotten before and after."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(launchenv.KERNEL_CACHE_DIR, str(cache))
    monkeypatch.setenv(_build.PREBUILT_ENV, str(tmp_path / "prebuilt"))
    for name in (_build.MARCH_ENV, _build.CXX_ENV, _build.CACHE_ENV):
        monkeypatch.delenv(name, raising=False)

    def forget() -> None:
        _build.build.cache_clear()
        _build.kernels_available.cache_clear()
        _build._fallback_reason = None

    forget()
    yield cache
    forget()


def _check_falls_back(capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    assert _build.kernels_available() is False
    assert _build.kernels_available() is False  # asked again (eval after training): no second warning
    err = capsys.readouterr().err
    assert err.count(WARNING) == 1, err
    assert "MindSpore's own kernels" in err
    for text in expected:
        assert text in err, err
    assert _build.fallback_reason() and _build.fallback_reason() in err
    return err


def test_no_compiler_on_path(fresh: Path, monkeypatch, tmp_path: Path, capsys):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    _check_falls_back(capsys, "'g++' was not found on PATH", "--no_fast_depthwise")
    assert not fresh.exists() or not list(fresh.iterdir()), "nothing half-built is left behind"


def test_compiler_named_by_cxx_does_not_exist(fresh: Path, monkeypatch, capsys):
    monkeypatch.setenv(_build.CXX_ENV, "/nonexistent/g++")
    _check_falls_back(capsys, "'/nonexistent/g++' was not found", "training.fastDepthwise: false")


def test_compiler_error_is_shown_and_falls_back(fresh: Path, monkeypatch, capsys):
    monkeypatch.setenv(_build.MARCH_ENV, "no-such-cpu")
    err = _check_falls_back(capsys, "failed (exit", "-march=no-such-cpu")
    assert "no-such-cpu" in err.split(WARNING, 1)[1].split("\n", 1)[1], "the compiler's own output follows"
    assert not [p for p in fresh.iterdir() if p.suffix in (".so", ".tmp")]


@pytest.mark.parametrize("machine", ["riscv64", "ppc64le", "s390x", ""])
def test_a_cpu_we_have_no_flags_for(fresh: Path, monkeypatch, capsys, machine: str):
    """Before: aarch64 (and everything else) fell back to -march=x86-64-v2 and the build failed."""
    monkeypatch.setattr(_build, "_machine", lambda: machine)
    _check_falls_back(capsys, f"no build flags for this CPU architecture ({machine or 'unknown'}")
    assert not fresh.exists(), "no compile attempted"


def test_unwritable_cache_names_the_variable(tmp_path: Path, fresh: Path, monkeypatch, capsys):
    """A read-only root filesystem: a cache path that cannot be created (here: under a file)."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(launchenv.KERNEL_CACHE_DIR, str(blocker / "cache"))
    _check_falls_back(capsys, f"cannot write the kernel build cache {blocker / 'cache'}", "MNV2_KERNEL_CACHE")


def test_aarch64_gets_arm_flags_not_x86(monkeypatch):
    monkeypatch.delenv(_build.MARCH_ENV, raising=False)
    monkeypatch.setattr(_build, "_machine", lambda: "aarch64")
    arm_cpuinfo = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
    monkeypatch.setattr(_build, "_cpuinfo", lambda: arm_cpuinfo)
    assert "-march=native" in _build.compile_command(Path("a.cc"), Path("a.so"))  # keyed by Features
    assert _build.runnable_levels() == ["armv8-a"]
    monkeypatch.setattr(_build, "_cpuinfo", lambda: "")
    assert "-march=armv8-a" in _build.compile_command(Path("a.cc"), Path("a.so"))


def test_x86_levels_follow_the_cpu_flags(monkeypatch):
    """The levels of the x86-64 psABI ("Micro-architecture levels", also GCC's -march=x86-64-vN):
    v3 adds AVX, AVX2, BMI1/2, F16C, FMA, LZCNT (abm), MOVBE, XSAVE; v4 AVX512F/BW/CD/DQ/VL."""
    monkeypatch.setattr(_build, "_machine", lambda: "x86_64")
    v2 = "flags\t\t: fpu sse4_2 popcnt ssse3 cx16\n"
    monkeypatch.setattr(_build, "_cpuinfo", lambda: v2)
    assert _build.runnable_levels() == ["x86-64-v2"]
    v3 = v2.rstrip() + " avx2 fma bmi1 bmi2 f16c movbe abm xsave\n"
    monkeypatch.setattr(_build, "_cpuinfo", lambda: v3)
    assert _build.runnable_levels() == ["x86-64-v3", "x86-64-v2"]
    v4 = v3.rstrip() + " avx512f avx512bw avx512cd avx512dq avx512vl\n"
    monkeypatch.setattr(_build, "_cpuinfo", lambda: v4)
    assert _build.runnable_levels() == ["x86-64-v4", "x86-64-v3", "x86-64-v2"]


def test_the_pod_cache_variable_wins(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(_build.CACHE_ENV, str(tmp_path / "old"))
    monkeypatch.setenv(launchenv.KERNEL_CACHE_DIR, str(tmp_path / "pod"))
    assert _build.cache_dir() == tmp_path / "pod"
    monkeypatch.delenv(launchenv.KERNEL_CACHE_DIR)
    assert _build.cache_dir() == tmp_path / "old"


def test_a_build_lands_in_the_pod_cache(fresh: Path, capsys):
    assert _build.kernels_available() is True
    assert WARNING not in capsys.readouterr().err
    built = sorted(p.name.split("-")[0] for p in fresh.glob("lib*.so"))
    assert built == [f"lib{name}" for name in _build.source_names()]
    assert _build.fallback_reason() is None


@pytest.mark.slow
def test_the_trainer_falls_back_and_trains(tmp_path: Path):
    """`mnv2 train` with no compiler: exit 0, the step's log line, one warning."""
    from mnv2.datasets import make_synthetic_tree

    data = make_synthetic_tree(tmp_path / "data", classes=2, per_class=8, size=32, seed=0)
    env = {  # PATH stays: MindSpore itself shells out to cat, grep and sed
        **{k: v for k, v in os.environ.items() if not k.startswith(("MNV2_", "MS_", "OMP_"))},
        "CXX": "/nonexistent/g++",
        launchenv.KERNEL_CACHE_DIR: str(tmp_path / "cache"), _build.PREBUILT_ENV: str(tmp_path / "prebuilt"),
        "MNV2_EXECUTION_MODE": "pynative", "MNV2_LOG_EVERY": "1",
    }  # fmt: skip
    argv = [
        sys.executable, "-m", "mnv2", "train", "--platform", "CPU", "--dataset_path", str(data),
        "--num_classes", "2", "--image_size", "32", "--width_mult", "0.25", "--batch_size", "16",
        "--epochs", "1", "--warmup_epochs", "0", "--num_workers", "1", "--output_dir", str(tmp_path / "out"),
        "--metrics_port", "0", "--fast_depthwise",
    ]  # fmt: skip
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count(WARNING) == 1, proc.stderr[-3000:]
    assert "epoch: [  0/  1], step:[    0/    1]" in proc.stdout, proc.stdout[-2000:]


def test_the_hint_names_switches_that_exist():
    """The flag parses in `mnv2 train`, the key in a config file, the field in the job's CRD schema."""
    import argparse

    import yaml
    from mnv2.options import add_config_arguments

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    assert "--no_fast_depthwise" in _build.OFF_SWITCH
    assert parser.parse_args(["--no_fast_depthwise"]).fast_depthwise is False
    assert "fast_depthwise: false" in _build.OFF_SWITCH
    crd = Path(__file__).resolve().parents[2] / "charts/mobilenetv2-operator/crds/mobilenetv2trainjobs.yaml"
    spec = yaml.safe_load(crd.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert "fastDepthwise" in spec["properties"]["spec"]["properties"]["training"]["properties"]
    assert "training.fastDepthwise: false" in _build.OFF_SWITCH


def test_an_avx512_node_takes_the_images_avx512_copies(tmp_path: Path, fresh: Path, monkeypatch):
    """`--prebuild` compiles every level; a node with AVX-512 loads the x86-64-v4 copy (the only one
    with the 16-lane kernels), an AVX2 node the v3 one. Compiles are recorded, not run."""
    monkeypatch.setattr(_build, "_machine", lambda: "x86_64")
    compiled: list[str] = []

    def record(source: Path, target: Path, march: str | None = None) -> Path:
        compiled.append(march or "native")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")
        return target

    monkeypatch.setattr(_build, "_compile", record)
    built = _build.prebuild(tmp_path / "prebuilt")
    assert sorted(set(compiled)) == ["x86-64-v2", "x86-64-v3", "x86-64-v4"]
    assert len(built) == 3 * len(_build.source_names())
    name = _build.source_names()[0]
    v3 = "flags\t\t: sse4_2 popcnt ssse3 cx16 avx2 fma bmi1 bmi2 f16c movbe abm xsave\n"
    for flags, level in ((v3.rstrip() + " avx512f avx512bw avx512cd avx512dq avx512vl\n", "x86-64-v4"),
                         (v3, "x86-64-v3")):
        monkeypatch.setattr(_build, "_cpuinfo", lambda flags=flags: flags)
        expected = _build._library_name(name, _build.CSRC / f"{name}.cc", level)
        assert _build.build_library(name) == tmp_path / "prebuilt" / expected


def test_a_broken_prebuilt_copy_is_preferred_then_refused(tmp_path: Path, fresh: Path, monkeypatch, capsys):
    """The loader takes the prebuilt copy over compiling (so this one is chosen), and a file that does
    not load (truncated, another architecture's) makes the trainer fall back instead of crashing later."""
    prebuilt = tmp_path / "prebuilt"
    prebuilt.mkdir()
    level = _build.runnable_levels()[0]
    name = _build.source_names()[0]
    broken = prebuilt / _build._library_name(name, _build.CSRC / f"{name}.cc", level)
    broken.write_bytes(b"\x7fELF truncated")
    assert _build.build_library(name) == broken
    _check_falls_back(capsys, f"cannot load {broken}")


@pytest.mark.parametrize("cpu_has_bf16", [True, False])
def test_bf16_pointwise_swaps_the_1x1_convolutions_or_says_why_not(monkeypatch, capsys, cpu_has_bf16):
    """`--bf16_pointwise` puts all 34 of MobileNetV2's 1x1 convolutions on the bf16 kernel and says once
    which instructions run them; on a CPU without AVX512-BF16 the run goes on in float32 and says so once
    (the kernels never fail a job)."""
    pytest.importorskip("mindspore")
    from mnv2.model import MobileNetV2
    from mnv2.ops import pointwise
    from mnv2.options import resolve
    from mnv2.train import use_fast_cpu_kernels

    if cpu_has_bf16 and not pointwise.bf16_supported():
        pytest.skip("this CPU has no AVX512-BF16")
    monkeypatch.setattr(pointwise, "bf16_supported", lambda: cpu_has_bf16)
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    config = resolve(parser.parse_args(["--bf16_pointwise"]))
    net = MobileNetV2(num_classes=10, width_mult=0.35)
    assert use_fast_cpu_kernels(net, config) is True
    swapped = sum(isinstance(c, pointwise.BF16Pointwise) for _, c in net.cells_and_names())
    err = capsys.readouterr().err
    if cpu_has_bf16:
        used = pointwise.ISA_NAMES[pointwise.bf16_isa()]
        assert swapped == 34 and "stay float32" not in err
        assert err.count(f"1x1 convolutions with bf16 products on {used}") == 1
    else:
        assert swapped == 0 and err.count("this CPU has no AVX512-BF16: they stay float32") == 1
