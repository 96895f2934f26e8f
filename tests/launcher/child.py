"""A stand-in for the trainer, started by the launcher in tests (no MindSpore, no accelerator).

    child.py env OUT_DIR          write this process's environment to OUT_DIR/<rank or scheduler>.json
    child.py exit CODE_SPEC [BARRIER_DIR COUNT]
                                  CODE_SPEC "rank1=67,default=wait" (wait: like serve); with a
                                  barrier, exit only once COUNT processes are up (signal handlers
                                  installed), so the stop that follows reaches handled processes
    child.py serve                print "ready", then wait for SIGTERM: print "terminated", exit 143
    child.py orphan RELEASE_FILE  leave a grandchild running until RELEASE_FILE exists, then serve
    child.py stubborn             print "ready", ignore SIGTERM (the launcher must SIGKILL it)
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path


def _name() -> str:
    return "scheduler" if os.environ.get("MS_ROLE") == "MS_SCHED" else f"rank{os.environ.get('MNV2_RANK')}"


def _arrive(barrier: Path | None) -> None:
    if barrier is not None:
        (barrier / _name()).touch()


def _await_all(barrier: Path | None, count: int) -> None:
    deadline = time.monotonic() + 30
    while barrier is not None and len(list(barrier.iterdir())) < count:
        if time.monotonic() > deadline:
            raise SystemExit("barrier: the other processes never came up")
        time.sleep(0.01)


def _serve(barrier: Path | None = None) -> int:
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    _arrive(barrier)
    print(f"ready {_name()}", flush=True)
    done.wait(120)
    print(f"terminated {_name()}", flush=True)
    return 143 if done.is_set() else 1


def main(argv: list[str]) -> int:
    mode = argv[0]
    if mode == "env":
        Path(argv[1], f"{_name()}.json").write_text(json.dumps(dict(os.environ)))
        print(f"hello from {_name()}\nsecond line", flush=True)
        return 0
    if mode == "exit":
        spec = dict(item.split("=") for item in argv[1].split(","))
        action = spec.get(_name(), spec.get("default", "0"))
        barrier, count = (Path(argv[2]), int(argv[3])) if len(argv) > 3 else (None, 0)
        if action == "wait":
            return _serve(barrier)
        _arrive(barrier)
        _await_all(barrier, count)
        print(f"exiting {action}", flush=True)
        return int(action)
    if mode == "serve":
        return _serve()
    if mode == "orphan":  # leave a grandchild behind (as a dying data loader would), then serve
        release = Path(argv[1])
        middle = os.fork()
        if middle == 0:
            grandchild = os.fork()
            if grandchild == 0:  # lives until the test creates the release file
                deadline = time.monotonic() + 60
                while not release.exists() and time.monotonic() < deadline:
                    time.sleep(0.01)
                os._exit(0)
            print(f"orphan {grandchild}", flush=True)
            os._exit(0)  # its parent is gone: the grandchild is adopted by the nearest subreaper
        os.waitpid(middle, 0)
        return _serve()
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(f"ready {_name()}", flush=True)
        threading.Event().wait(120)
        return 1
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
