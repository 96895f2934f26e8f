"""Helpers for launcher tests: the substitute child, a launch environment builder, a line waiter."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

CHILD = Path(__file__).with_name("child.py")


def child_argv(*args: str) -> list[str]:
    return [sys.executable, str(CHILD), *args]


def launch_env(**values: str | int) -> dict[str, str]:
    """The current environment without launch variables, plus `values` (names from mnv2.launchenv)."""
    launch_vars = ("MNV2_", "MS_", "RANK_", "DEVICE_ID", "ASCEND_DEVICE_ID", "OMP_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(launch_vars)}
    env.update({k: str(v) for k, v in values.items()})
    return env


class Output:
    """Collects a process's output lines in a thread so tests can wait for a line with a deadline."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, predicate, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.lines):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("timed out waiting; output so far:\n" + "\n".join(self.lines))
                self._changed.wait(remaining)

    def text(self) -> str:
        self._thread.join(timeout=10)
        return "\n".join(self.lines)

