"""A stand-in for the trainer, started by the launcher in tests (no MindSpore, no accelerator).

    child.py env OUT_DIR          write this process's environment to OUT_DIR/<rank or scheduler>.json
    child.py exit CODE_SPEC       exit at once; CODE_SPEC "rank1=67,default=wait" (wait: like serve)
    child.py serve                print "ready", then wait for SIGTERM: print "terminated", exit 143
    child.py stubborn             print "ready", ignore SIGTERM (the launcher must SIGKILL it)
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path


def _name() -> str:
    return "scheduler" if os.environ.get("MS_ROLE") == "MS_SCHED" else f"rank{os.environ.get('MNV2_RANK')}"


def _serve() -> int:
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
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
        if action == "wait":
            return _serve()
        print(f"exiting {action}", flush=True)
        return int(action)
    if mode == "serve":
        return _serve()
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(f"ready {_name()}", flush=True)
        threading.Event().wait(120)
        return 1
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
