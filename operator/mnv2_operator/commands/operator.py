"""`mnv2 operator`: run the kopf operator that makes MobileNetV2TrainJobs real on a cluster.

Equivalent to `kopf run -m mnv2_operator.handlers` with the project's settings; the Helm chart's
Deployment passes these flags. Kopf is imported only in `run` so `mnv2 --help` stays fast.
"""

from __future__ import annotations

import argparse

HELP = "run the Kubernetes operator (kopf) for MobileNetV2TrainJob resources"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeat for several; glob patterns allowed)",
    )
    where.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="operator configuration (platform profiles); default: built-in profiles",
    )
    peers = parser.add_mutually_exclusive_group()
    peers.add_argument(
        "--peering",
        metavar="NAME",
        help="coordinate replicas through this KopfPeering (only one acts at a time)",
    )
    peers.add_argument("--standalone", action="store_true", help="run without peering (one replica)")
    parser.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority of this replica (default: random, so that of identical replicas exactly "
        "one is active; kopf pauses every peer that sees another of the same priority)",
    )
    parser.add_argument(
        "--liveness",
        metavar="URL",
        default="http://0.0.0.0:8081/healthz",
        help="serve liveness/readiness probes here (default: %(default)s; empty: off)",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port"
    )
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    parser.add_argument(
        "--log-format",
        choices=["full", "json"],
        default="full",
        help="text lines, or one JSON object per line for log collectors (default: %(default)s)",
    )
    parser.add_argument(
        "--watch-server-timeout",
        type=int,
        default=300,
        help="seconds the API server keeps a watch open (default: %(default)s)",
    )
    parser.add_argument(
        "--watch-client-timeout",
        type=float,
        default=330.0,
        help="seconds before the client abandons a watch (default: %(default)s)",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=300.0,
        help="re-check every job at least this often, a safety net: passes follow watch events and "
        "deadlines (default: %(default)s)",
    )
    parser.add_argument(
        "--api-qps",
        type=float,
        default=100.0,
        help="the operator's requests per second to the API server, on average; 0: unlimited "
        "(default: %(default)s; client-go's default is 5)",
    )
    parser.add_argument(
        "--api-burst",
        type=int,
        default=200,
        help="requests allowed at once above --api-qps (default: %(default)s; client-go's is 10)",
    )
    parser.add_argument(
        "--create-concurrency",
        type=int,
        default=32,
        help="a job's pods are created this many at a time (default: %(default)s)",
    )
    parser.add_argument(
        "--restart-backoff-seconds",
        type=float,
        default=10.0,
        help="a whole-job restart waits this long, doubled per restart (default: %(default)s)",
    )
    parser.add_argument(
        "--restart-backoff-max-seconds",
        type=float,
        default=360.0,
        help="the longest wait before a restart (default: %(default)s)",
    )
    parser.add_argument(
        "--kubeconfig", metavar="FILE", help="kubeconfig (default: in-cluster, then KUBECONFIG)"
    )


def settings_from_args(args: argparse.Namespace):
    """The OperatorSettings these flags describe (kept separate so tests check the mapping)."""
    import random

    from mnv2_operator.settings import OperatorSettings

    if not args.namespace and not args.all_namespaces:
        args.all_namespaces = True
    return OperatorSettings(
        namespaces=list(args.namespace),
        clusterwide=bool(args.all_namespaces),
        peering=None if args.standalone else args.peering,
        priority=args.priority if args.priority is not None else random.randint(1, 2**30),
        config_path=args.config,
        liveness_url=args.liveness or None,
        metrics_port=args.metrics_port,
        watch_server_timeout=args.watch_server_timeout,
        watch_client_timeout=args.watch_client_timeout,
        resync_seconds=args.resync_seconds,
        restart_backoff_seconds=args.restart_backoff_seconds,
        restart_backoff_max_seconds=args.restart_backoff_max_seconds,
        api_qps=args.api_qps,
        api_burst=args.api_burst,
        create_concurrency=args.create_concurrency,
        kubeconfig=args.kubeconfig,
    )


def run(args: argparse.Namespace) -> int:
    import asyncio

    import kopf
    from mnv2.exitcodes import ConfigError

    from mnv2_operator import handlers  # noqa: F401  (registers the handlers)
    from mnv2_operator import settings as operator_settings
    from mnv2_operator.profiles import load_operator_config

    settings = settings_from_args(args)
    try:
        load_operator_config(settings.config_path)  # fail here, with the file named, not in a handler
    except (OSError, ValueError) as error:
        raise ConfigError(f"--config {settings.config_path}: {error}") from None
    operator_settings.use(settings)
    # Kopf's own logging: timestamps, logger names and per-object prefixes (enough structure for log
    # collectors); --log-level maps onto its quiet/verbose/debug switches.
    kopf.configure(
        debug=args.log_level == "debug",
        verbose=args.log_level in ("debug", "info"),
        quiet=args.log_level == "error",
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
        log_prefix=True,
    )
    asyncio.run(
        kopf.operator(
            clusterwide=settings.clusterwide,
            namespaces=settings.namespaces,
            standalone=settings.peering is None,
            peering_name=settings.peering,
            priority=settings.priority,
            liveness_endpoint=settings.liveness_url,
        )
    )
    return 0
