"""Find or compile the C++ custom-operator libraries, and say plainly when they cannot be used here.

Why at first use rather than at install: the wheel stays pure Python, and the library is built for
the CPU it runs on. Lookup order for ``lib<name>.so``:

1. a prebuilt copy (the CPU image compiles portable ones at build time: ``python -m
   mnv2.ops._build --prebuild``), the best level this CPU runs, so pods do not each compile at start;
2. the build cache: $MNV2_KERNEL_CACHE (the pod's emptyDir: the root filesystem is read-only), else
   $MNV2_OPS_CACHE, else a per-user directory;
3. a fresh compile into that cache, for this CPU (``-march=native``).

Files are named by a hash of the source, the compiler flags and (for ``-march=native``) the
CPU's feature flags, so a cache shared between different machines never hands one a library it
cannot run. The build writes to a temporary file and renames it into place, so concurrent
processes (data-parallel ranks on one node) never load a half-written library.

The kernels are an optimisation, never the reason a job fails: ``kernels_available()`` builds them
all up front and, when any cannot be built (no compiler, a compiler error, a CPU architecture we have
no flags for), prints one warning and returns False so the trainer keeps MindSpore's own kernels.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

from mnv2 import launchenv

CSRC = Path(__file__).resolve().parent.parent / "csrc"

#: Environment variable naming the build cache in a pod (the operator's emptyDir).
KERNEL_CACHE_ENV = launchenv.KERNEL_CACHE_DIR
#: Environment variable overriding the cache directory outside pods (older name, still honoured).
CACHE_ENV = "MNV2_OPS_CACHE"
#: Environment variable naming the directory of prebuilt libraries (default: ``prebuilt/`` here).
PREBUILT_ENV = "MNV2_OPS_PREBUILT"
#: Environment variable overriding ``-march`` (default: ``native`` when the CPU flags are readable).
MARCH_ENV = "MNV2_OPS_MARCH"
#: Environment variable naming the C++ compiler (default ``g++``).
CXX_ENV = "CXX"
#: How the user turns the kernels off, named in every hint (CLI flag, config key, resource field).
OFF_SWITCH = (
    "--no_fast_depthwise (fast_depthwise: false in a config file, training.fastDepthwise: false in a job)"
)

_X86_V3 = frozenset({"avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm", "xsave"})
#: Portable -march levels per architecture, best first, each with the /proc/cpuinfo features it needs.
#: An architecture not listed here gets no build (and the trainer keeps MindSpore's kernels).
#: x86-64-v4 (AVX-512) first: the kernels' 16-lane paths exist only in an AVX-512 build, so an image
#: with AVX2 copies alone would run the slower paths on every AVX-512 node.
PORTABLE_LEVELS: dict[str, tuple[tuple[str, frozenset[str]], ...]] = {
    "x86_64": (
        ("x86-64-v4", _X86_V3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
        ("x86-64-v3", _X86_V3),
        ("x86-64-v2", frozenset({"sse4_2", "popcnt", "ssse3", "cx16"})),
    ),
    "aarch64": (("armv8-a", frozenset()),),
}
_ARCH_NAMES = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}
COMPILE_TIMEOUT_SECONDS = 600


class BuildError(RuntimeError):
    """The custom operator library could not be built (no compiler, or the compiler failed)."""


def cache_dir() -> Path:
    """Where built libraries live: $MNV2_KERNEL_CACHE, $MNV2_OPS_CACHE, $XDG_CACHE_HOME/mnv2/ops, or
    ~/.cache/mnv2/ops.

    Falls back to a per-user directory under the system temp dir when home is not writable
    (read-only container root filesystems).
    """
    for variable in (KERNEL_CACHE_ENV, CACHE_ENV):
        if os.environ.get(variable):
            return Path(os.environ[variable])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    candidate = Path(base) / "mnv2" / "ops"
    try:
        candidate.mkdir(parents=True, exist_ok=True)
        if os.access(candidate, os.W_OK):
            return candidate
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"mnv2-ops-{os.getuid()}"


def prebuilt_dir() -> Path:
    """Where the image's portable libraries are: $MNV2_OPS_PREBUILT, else ``prebuilt/`` beside this file."""
    return Path(os.environ.get(PREBUILT_ENV) or Path(__file__).resolve().parent / "prebuilt")


def source_names() -> list[str]:
    """Every kernel library the installation ships (``csrc/<name>.cc``)."""
    return sorted(path.stem for path in CSRC.glob("*.cc"))


def _machine() -> str:
    return platform.machine()


def _arch() -> str | None:
    """This CPU's architecture as PORTABLE_LEVELS names it, None when we have no flags for it."""
    return _ARCH_NAMES.get(_machine().lower())


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpu_signature() -> str:
    """The CPU's model and feature flags, so a -march=native build is keyed to this CPU."""
    keep = [
        ln for ln in _cpuinfo().splitlines()
        if ln.startswith(("flags", "model name", "Features", "CPU implementer", "CPU part"))
    ]  # fmt: skip
    return "\n".join(sorted(set(keep)))


def _cpu_features() -> set[str] | None:
    """The CPU's feature names (x86 ``flags``, Arm ``Features``), None when /proc/cpuinfo says nothing."""
    for line in _cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def runnable_levels() -> list[str]:
    """The portable levels of this architecture this CPU runs, best first (all, when flags are unknown)."""
    arch = _arch()
    if arch is None:
        return []
    features = _cpu_features()
    return [level for level, needs in PORTABLE_LEVELS[arch] if features is None or needs <= features]


def _unsupported_arch() -> BuildError:
    return BuildError(
        f"no build flags for this CPU architecture ({_machine() or 'unknown'}; the kernels are built "
        f"for {', '.join(PORTABLE_LEVELS)}); set {MARCH_ENV} to a -march value to try anyway, or turn "
        f"the kernels off: {OFF_SWITCH}"
    )


def _march() -> str:
    if os.environ.get(MARCH_ENV):
        return os.environ[MARCH_ENV]
    if _arch() is None:
        raise _unsupported_arch()
    # native is safe because the cache key includes the CPU flags; without them, stay portable.
    if _cpu_signature():
        return "native"
    levels = runnable_levels()
    return levels[-1] if levels else PORTABLE_LEVELS[_arch()][-1][0]


def compile_command(source: Path, output: Path, *, march: str | None = None) -> list[str]:
    """The compiler command line (its flags are part of the cache key); ``march`` defaults to this CPU's."""
    cxx = os.environ.get(CXX_ENV) or "g++"
    return [
        cxx, "-O3", f"-march={march or _march()}", "-fopenmp", "-shared", "-fPIC", "-std=c++17",
        "-fno-math-errno", "-o", str(output), str(source),
    ]


def _library_name(name: str, source: Path, march: str | None = None) -> str:
    # The compiler's path is left out: a pod with CXX set, or with none, still finds the image's copies.
    flags = compile_command(source, Path("OUT"), march=march)[1:]
    key = hashlib.sha256()
    key.update(source.read_bytes())
    for header in sorted(source.parent.glob("*.h")):  # what the sources include (the thread pool)
        key.update(header.read_bytes())
    key.update(" ".join(flags).encode())
    if "-march=native" in flags:
        key.update(_cpu_signature().encode())
    return f"lib{name}-{key.hexdigest()[:16]}.so"


def _source(name: str) -> Path:
    source = CSRC / f"{name}.cc"
    if not source.is_file():
        raise BuildError(f"custom operator source {source} is missing from the installation")
    return source


def _compile(source: Path, target: Path, march: str | None = None) -> Path:
    """Compile ``source`` into ``target`` atomically; BuildError names what went wrong."""
    cxx = compile_command(source, target, march=march)[0]
    if shutil.which(cxx) is None:
        raise BuildError(
            f"the C++ compiler {cxx!r} was not found on PATH; it is needed once to build the fast CPU "
            f"kernels ({source.name}). Install g++ (Debian: apt-get install g++), set {CXX_ENV} to a "
            f"compiler, or turn the kernels off: {OFF_SWITCH}"
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=".so.tmp", dir=target.parent)
        os.close(fd)
    except OSError as error:
        raise BuildError(
            f"cannot write the kernel build cache {target.parent}: {error.strerror or error}; set "
            f"{KERNEL_CACHE_ENV} to a writable directory"
        ) from None
    try:
        cmd = compile_command(source, Path(tmp), march=march)
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, check=False, timeout=COMPILE_TIMEOUT_SECONDS
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise BuildError(f"building {source.name} failed: {' '.join(cmd)}: {error}") from None
        if proc.returncode != 0:
            raise BuildError(
                f"building {source.name} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                + proc.stderr.strip()
            )
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def kernel_threads() -> int:
    """The kernels' thread count: OMP_NUM_THREADS as this process saw it at start (the launcher's
    share per rank, or the user's choice), else the CPUs this process may run on."""
    value = os.environ.get(launchenv.OMP_NUM_THREADS, "").split(",")[0].strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def build_library(name: str) -> Path:
    """Return the path of ``lib<name>.so`` built from ``csrc/<name>.cc``: prebuilt, cached or compiled now.

    Raises BuildError when the compiler is missing or fails, or the CPU architecture has no flags.
    """
    source = _source(name)
    if not os.environ.get(MARCH_ENV):  # an explicit -march asks for exactly that build
        for level in runnable_levels():
            prebuilt = prebuilt_dir() / _library_name(name, source, level)
            if prebuilt.is_file():
                return prebuilt
    target = cache_dir() / _library_name(name, source)
    if target.is_file():
        return target
    return _compile(source, target)


def load_library(name: str) -> Path:
    """``build_library``, then load it as MindSpore's Custom op will (the same file is loaded once per
    process) and size its thread pool with ``kernel_threads()`` before any kernel runs.

    The pool cannot read OMP_NUM_THREADS itself: MindSpore's runtime sets it to 1 when it is unset
    (in C, unseen by os.environ), and until this was done every kernel of `mnv2 train` ran on one
    thread. Raises BuildError when the library cannot be built or loaded.
    """
    path = build_library(name)
    try:
        library = ctypes.CDLL(str(path))
    except OSError as error:  # a broken file fails here rather than in MindSpore
        raise BuildError(f"cannot load {path}: {error}") from None
    library.mnv2_set_kernel_threads(kernel_threads())
    return path


#: ``load_library`` memoised per process: the cache lookup hashes the source, which is cheap but not free.
build = cache(load_library)

_fallback_reason: str | None = None


def fallback_reason() -> str | None:
    """Why this process runs MindSpore's kernels instead of ours (None: ours, or not checked yet)."""
    return _fallback_reason


@cache
def kernels_available() -> bool:
    """Find or build, and load, every kernel library; False, after one warning on stderr, when any cannot be.

    Call it before swapping layers: a network is then either fully on our kernels or untouched.
    Memoised, so the warning appears once per process however often it is asked.
    """
    global _fallback_reason
    try:
        for name in source_names():
            build(name)
    except BuildError as error:
        _fallback_reason = str(error).splitlines()[0]
        detail = "\n".join(f"    {line}" for line in str(error).splitlines()[1:21])
        print(
            f"[mnv2] warning: the project's C++ CPU kernels cannot be used here, so this run uses "
            f"MindSpore's own kernels (same results, slower steps): {_fallback_reason}"
            + (f"\n{detail}" if detail else ""),
            file=sys.stderr,
            flush=True,
        )
        return False
    return True


def prebuild(dest: Path | None = None) -> list[Path]:
    """Compile every library at every portable level of this architecture into ``dest`` (an image build).

    The files carry the names ``build_library`` looks for, so a pod on any CPU of that architecture
    finds the best copy it can run and compiles nothing.
    """
    arch = _arch()
    if arch is None:
        raise _unsupported_arch()
    dest = dest or prebuilt_dir()
    built = []
    for name in source_names():
        source = _source(name)
        for level, _ in PORTABLE_LEVELS[arch]:
            built.append(_compile(source, dest / _library_name(name, source, level), march=level))
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mnv2.ops._build", description=prebuild.__doc__)
    parser.add_argument("--prebuild", action="store_true", help="compile the portable libraries")
    parser.add_argument("--dest", type=Path, default=None, help=f"directory (default: {prebuilt_dir()})")
    args = parser.parse_args(argv)
    if not args.prebuild:
        parser.error("nothing to do: pass --prebuild")
    try:
        for path in prebuild(args.dest):
            print(path)
    except BuildError as error:
        print(f"mnv2.ops._build: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
