"""How the operator runs: what it watches, its timeouts, peering, probes; applied to kopf at startup.

`mnv2 operator` (or the tests) fill `OperatorSettings` and call `use()`; `kopf run -m
mnv2_operator.handlers` gets the defaults, overridable by `MNV2_OPERATOR_*` environment variables.
The watch timeouts matter: without a server-side timeout and a client-side one a silently dropped
watch connection stalls an operator forever (REFERENCE §4), so both are always set.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Any

ENV_PREFIX = "MNV2_OPERATOR_"


@dataclass
class OperatorSettings:
    namespaces: list[str] = field(default_factory=list)  # empty + clusterwide: every namespace
    clusterwide: bool = False
    peering: str | None = None  # kopf peering name; None: standalone (one replica)
    priority: int = 0
    config_path: str | None = None  # the operator configuration (platform profiles), see profiles.py
    kubeconfig: str | None = None  # None: in-cluster service account, else $KUBECONFIG
    liveness_url: str | None = None  # e.g. http://0.0.0.0:8081/healthz
    metrics_port: int | None = None
    # A silent watch must end: the server closes it after server_timeout, the client gives up after
    # client_timeout, and a stream with no event for inactivity_timeout is reopened.
    watch_server_timeout: int = 300
    watch_client_timeout: float = 330.0
    watch_connect_timeout: float = 10.0
    watch_inactivity_timeout: float = 600.0
    reconnect_backoff: float = 1.0
    request_timeout: float = 30.0
    # Each job is re-checked at least this often, events or not: a safety net only (passes follow
    # watch events and due deadlines), so minutes.
    resync_seconds: float = 300.0
    progress_seconds: float = 30.0  # how often rank 0's /metrics is read into status.progress
    # Whole-job restarts wait restart_backoff_seconds, doubled per restart, at most the max (the Job
    # controller's 10 s and 6 min).
    restart_backoff_seconds: float = 10.0
    restart_backoff_max_seconds: float = 360.0
    # A failed reconciliation is retried after this, doubled per consecutive failure (with jitter),
    # at most the max.
    error_backoff_seconds: float = 1.0
    error_backoff_max_seconds: float = 120.0
    # The operator's own client (not kopf's watches): client-go style QPS/burst rate limit shared by
    # all passes (client-go's default is 5/10), and at most create_concurrency pod creations of one
    # job at once; passes run in `workers` threads.
    api_qps: float = 100.0
    api_burst: int = 200
    create_concurrency: int = 32
    workers: int = 32
    post_kopf_events: bool = True
    kopf_event_level: int = logging.WARNING
    finalizer: str = "training.mindspore.io/operator"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> OperatorSettings:
        """Defaults overridden by MNV2_OPERATOR_<FIELD> (namespaces comma-separated)."""
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for item in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + item.name.upper())
            if raw is None:
                continue
            if item.name == "namespaces":
                values[item.name] = [n.strip() for n in raw.split(",") if n.strip()]
            elif str(item.type).startswith("bool"):
                values[item.name] = raw.lower() in ("1", "true", "yes")
            elif str(item.type).startswith("int"):
                values[item.name] = int(raw)
            elif str(item.type).startswith("float"):
                values[item.name] = float(raw)
            else:
                values[item.name] = raw
        return cls(**values)

    def apply(self, kopf_settings: Any) -> None:
        """Copy what kopf needs into its settings object (called from the startup handler)."""
        kopf_settings.watching.server_timeout = self.watch_server_timeout
        kopf_settings.watching.client_timeout = self.watch_client_timeout
        kopf_settings.watching.connect_timeout = self.watch_connect_timeout
        kopf_settings.watching.inactivity_timeout = self.watch_inactivity_timeout
        kopf_settings.watching.reconnect_backoff = self.reconnect_backoff
        # Only our pods reach the operator: filtered by the API server, not after streaming every pod
        # of every watched namespace (kopf 1.45: settings.watching.label_selectors).
        from mnv2_operator import names

        for plural in ("pods", "services", "configmaps"):
            kopf_settings.watching.label_selectors["", "v1", plural] = (
                f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"
            )
        kopf_settings.networking.request_timeout = self.request_timeout
        kopf_settings.posting.enabled = self.post_kopf_events
        kopf_settings.posting.level = self.kopf_event_level
        kopf_settings.persistence.finalizer = self.finalizer
        kopf_settings.peering.standalone = self.peering is None
        if self.peering is not None:
            kopf_settings.peering.name = self.peering
            kopf_settings.peering.priority = self.priority
            kopf_settings.peering.mandatory = True
            kopf_settings.peering.clusterwide = self.clusterwide


_current: OperatorSettings | None = None


def use(settings: OperatorSettings) -> None:
    global _current
    _current = settings


def current() -> OperatorSettings:
    global _current
    if _current is None:
        _current = OperatorSettings.from_env()
    return _current
