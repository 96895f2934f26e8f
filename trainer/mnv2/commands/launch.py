"""`mnv2 launch`: the trainer container's entry point (one per pod).

Reads the launch environment the operator (or `mnv2 run`) set, waits for what must exist first
(the completed rank table, the scheduler's DNS name), starts one trainer process per local device
and supervises them (mnv2.launcher). Exit code: the first failing rank's, per mnv2.exitcodes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

HELP = "start and supervise this pod's trainer processes (container entry point)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the planned processes (argv and the variables the launcher sets) as JSON and exit",
    )
    parser.add_argument(
        "child",
        nargs=argparse.REMAINDER,
        metavar="-- CMD",
        help="run CMD in each process instead of `python -m mnv2 $MNV2_COMMAND`",
    )


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # the CLI turns it into exit 143 (Interrupted)


def _log(message: str) -> None:
    print(f"[launcher] {message}", flush=True)


def run(args: argparse.Namespace) -> int:
    from mnv2 import launchenv as le
    from mnv2 import launcher

    # PID 1 in a container ignores signals it has no handler for: until the supervisor takes
    # over, a SIGTERM (pod deleted while waiting for the rank table or DNS) ends the launch at once.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupted)
    env = dict(os.environ)
    child = list(args.child)
    if child and child[0] == "--":
        child = child[1:]
    mode = launcher.launch_mode(env)
    table = None
    if mode is le.LaunchMode.RANK_TABLE:
        path = launcher.rank_table_path(env)
        table = launcher.wait_for_rank_table(path, launcher.rank_table_timeout(env), log=_log)
        _log(f"rank table {path} completed: {table.rank_size()} ranks")
    specs = launcher.plan_processes(env, table, argv=child or None)
    if args.dry_run:
        plan = [
            {
                "name": spec.name,
                "argv": spec.argv,
                "env": {k: v for k, v in sorted(spec.env.items()) if env.get(k) != v},
            }
            for spec in specs
        ]
        json.dump(plan, sys.stdout, indent=2)
        print()
        return 0
    host = specs[0].env.get(le.MS_SCHED_HOST)  # None for a one-process job: no cluster to join
    if mode is le.LaunchMode.DYNAMIC and host:
        timeout = launcher.scheduler_dns_timeout(env)
        if not launcher.wait_for_host(host, timeout, log=_log):
            _log(f"scheduler host {host!r} did not resolve within {timeout:g}s; starting anyway "
                 "(MindSpore keeps retrying until MS_TOPO_TIMEOUT)")
    adopted = os.getpid() == 1 or launcher.become_subreaper()
    supervisor = launcher.Supervisor(specs, grace=launcher.stop_grace(env), reap=adopted)
    share = specs[-1].env.get(le.THREADS, "?")
    _log(f"{mode.value} mode: starting {len(specs)} process(es), {share} CPU thread(s) per rank")
    code = supervisor.run()
    _log(f"exiting {code}")
    return code
