"""Locating the Prometheus binaries (Debian package `prometheus`); missing ones fail loudly."""

from __future__ import annotations

import shutil

import pytest

INSTALL_HINT = "install the Debian package: sudo apt-get install -y prometheus (CI installs it)"


def require(tool: str) -> str:
    """Path of `tool`, or fail the test (not skip: a missing binary must not look like a pass)."""
    path = shutil.which(tool) or (f"/usr/bin/{tool}" if shutil.which(f"/usr/bin/{tool}") else None)
    if path is None:
        pytest.fail(f"`{tool}` not found on PATH or in /usr/bin: {INSTALL_HINT}", pytrace=False)
    return path
