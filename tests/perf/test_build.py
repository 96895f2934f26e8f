"""The build helper compiles once into a keyed cache and fails clearly without a compiler."""

from __future__ import annotations

import os

import pytest
from mnv2.ops import BuildError, build_library, cache_dir


def test_builds_once_and_reuses_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MNV2_OPS_CACHE", str(tmp_path))
    first = build_library("depthwise")
    assert first.parent == tmp_path and first.is_file()
    mtime = first.stat().st_mtime_ns
    again = build_library("depthwise")
    assert again == first and again.stat().st_mtime_ns == mtime  # not rebuilt
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # no temporary left behind


def test_key_changes_with_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("MNV2_OPS_CACHE", str(tmp_path))
    monkeypatch.setenv("MNV2_OPS_MARCH", "x86-64-v2")
    portable = build_library("depthwise")
    monkeypatch.setenv("MNV2_OPS_MARCH", "x86-64")
    assert build_library("depthwise") != portable


def test_missing_compiler_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MNV2_OPS_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler-mnv2")
    with pytest.raises(BuildError, match=r"no-such-compiler-mnv2.*not found"):
        build_library("depthwise")
    assert list(tmp_path.iterdir()) == []


def test_compiler_failure_reports_output(tmp_path, monkeypatch):
    monkeypatch.setenv("MNV2_OPS_CACHE", str(tmp_path))
    monkeypatch.setenv("MNV2_OPS_MARCH", "no-such-cpu")
    with pytest.raises(BuildError, match=r"failed.*no-such-cpu"):
        build_library("depthwise")
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".so", ".tmp")]


def test_unknown_source_is_an_error():
    with pytest.raises(BuildError, match="missing"):
        build_library("no_such_kernel")


def test_cache_dir_override(tmp_path, monkeypatch):
    monkeypatch.setenv("MNV2_OPS_CACHE", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x"


def test_every_source_builds():
    """Each kernel source (and the thread pool header it includes) compiles with the project's flags."""
    from mnv2.ops._build import CSRC

    for source in sorted(CSRC.glob("*.cc")):
        assert build_library(source.stem).is_file()


def test_wheel_ships_the_headers_the_sources_include():
    import tomllib
    from fnmatch import fnmatch
    from pathlib import Path

    from mnv2.ops._build import CSRC

    root = Path(__file__).resolve().parents[2]
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = setuptools["package-data"]["mnv2"]
    for header in CSRC.glob("*.h"):
        assert any(fnmatch(f"csrc/{header.name}", p) for p in patterns), header.name


def test_cache_key_follows_included_headers(tmp_path, monkeypatch):
    import shutil

    from mnv2.ops import _build

    csrc = tmp_path / "csrc"
    shutil.copytree(_build.CSRC, csrc)
    monkeypatch.setattr(_build, "CSRC", csrc)
    monkeypatch.setenv("MNV2_OPS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", "true")  # a "compiler" that succeeds at once: only the cache key matters here
    before = build_library("batchnorm")
    (csrc / "parallel.h").write_text((csrc / "parallel.h").read_text() + "\n// changed\n")
    assert build_library("batchnorm") != before
