"""Fixtures for launcher tests."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from launch_helpers import Output


@pytest.fixture
def launch_process():
    """Start `python -m mnv2 launch ...` with an env; kill leftovers at the end."""
    procs: list[subprocess.Popen] = []

    def start(env: dict[str, str], *args: str) -> tuple[subprocess.Popen, Output]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mnv2", "launch", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        procs.append(proc)
        return proc, Output(proc)

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
