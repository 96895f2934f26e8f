"""Compile the C++ custom-operator sources once per machine, on first use.

Why at first use rather than at install: the wheel stays pure Python, and the library is built for
the CPU it runs on. The result is cached in a per-user directory keyed by a hash of the source, the
compiler command and (for ``-march=native``) the CPU's feature flags, so a cache shared between
different machines never hands one a library it cannot run. The build writes to a temporary file and
renames it into place, so concurrent processes (data-parallel ranks on one node) never load a
half-written library.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

CSRC = Path(__file__).resolve().parent.parent / "csrc"

#: Environment variable overriding the cache directory.
CACHE_ENV = "MNV2_OPS_CACHE"
#: Environment variable overriding ``-march`` (default: ``native`` when the CPU flags are readable).
MARCH_ENV = "MNV2_OPS_MARCH"
#: Environment variable naming the C++ compiler (default ``g++``).
CXX_ENV = "CXX"


class BuildError(RuntimeError):
    """The custom operator library could not be built (no compiler, or the compiler failed)."""


def cache_dir() -> Path:
    """Where built libraries live: $MNV2_OPS_CACHE, else $XDG_CACHE_HOME/mnv2/ops, else ~/.cache/mnv2/ops.

    Falls back to a per-user directory under the system temp dir when home is not writable
    (read-only container root filesystems).
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    candidate = Path(base) / "mnv2" / "ops"
    try:
        candidate.mkdir(parents=True, exist_ok=True)
        if os.access(candidate, os.W_OK):
            return candidate
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"mnv2-ops-{os.getuid()}"


def _cpu_signature() -> str:
    """The CPU's model and feature flags, so a -march=native build is keyed to this CPU."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    keep = [ln for ln in text.splitlines() if ln.startswith(("flags", "model name"))]
    return "\n".join(sorted(set(keep)))


def _march() -> str:
    if os.environ.get(MARCH_ENV):
        return os.environ[MARCH_ENV]
    # native is safe because the cache key includes the CPU flags; without them, stay portable.
    return "native" if _cpu_signature() else "x86-64-v2"


def compile_command(source: Path, output: Path) -> list[str]:
    """The compiler command line (also part of the cache key)."""
    cxx = os.environ.get(CXX_ENV, "g++")
    return [
        cxx, "-O3", f"-march={_march()}", "-fopenmp", "-shared", "-fPIC", "-std=c++17",
        "-fno-math-errno", "-o", str(output), str(source),
    ]


def build_library(name: str) -> Path:
    """Return the path of ``lib<name>.so`` built from ``csrc/<name>.cc``, compiling it if needed.

    Raises BuildError with the compiler's output when the compiler is missing or fails.
    """
    source = CSRC / f"{name}.cc"
    if not source.is_file():
        raise BuildError(f"custom operator source {source} is missing from the installation")
    cmd = compile_command(source, Path("OUT"))
    if shutil.which(cmd[0]) is None:
        raise BuildError(
            f"the C++ compiler {cmd[0]!r} was not found on PATH; it is needed once to build the fast "
            f"depthwise convolution ({source.name}). Install g++ (Debian: apt-get install g++), set "
            f"{CXX_ENV} to a compiler, or turn the fast kernel off (fast depthwise = false)."
        )
    key = hashlib.sha256()
    key.update(source.read_bytes())
    key.update(" ".join(cmd).encode())
    if "-march=native" in cmd:
        key.update(_cpu_signature().encode())
    target_dir = cache_dir()
    target = target_dir / f"lib{name}-{key.hexdigest()[:16]}.so"
    if target.is_file():
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".lib{name}-", suffix=".so.tmp", dir=target_dir)
    os.close(fd)
    try:
        proc = subprocess.run(
            compile_command(source, Path(tmp)), capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise BuildError(
                f"building {source.name} failed (exit {proc.returncode}): "
                f"{' '.join(compile_command(source, Path(tmp)))}\n{proc.stderr.strip()}"
            )
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


#: ``build_library`` memoised per process: the cache lookup hashes the source, which is cheap but not free.
build = cache(build_library)
