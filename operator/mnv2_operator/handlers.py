"""The kopf handlers: `kopf run -m mnv2_operator.handlers` (or `mnv2 operator`) loads this module.

One daemon per MobileNetV2TrainJob runs the reconciliation loop (`reconcile.Reconciler`) for that
job only, so two passes over one job never overlap, and it restarts for every existing job when the
operator starts (nothing is lost by a restart: the loop reads everything from the cluster). Events on
the job or on its pods only wake the daemon; deadlines (activeDeadlineSeconds, pendingTimeoutSeconds,
ttlSecondsAfterFinished) wake it when they come due, and a resync every `resync_seconds` catches
anything missed. With several operator replicas, kopf peering keeps all but one paused.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import random
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from mnv2_operator import api, k8s, names
from mnv2_operator import settings as operator_settings
from mnv2_operator.metrics import METRICS
from mnv2_operator.reconcile import Fenced, Reconciler
from mnv2_operator.status import at_rest

log = logging.getLogger(__name__)

# (namespace, job) -> the event its daemon sleeps on; created in the daemon's own loop.
_WAKE: dict[tuple[str, str], asyncio.Event] = {}
# (namespace, job) -> monotonic time it was woken and its pass has not started yet (the work queue).
_WOKEN: dict[tuple[str, str], float] = {}


def error_backoff(failures: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds before retrying after `failures` consecutive failed passes (1, 2, ...): exponential,
    capped, with +-50% jitter so that jobs failing together (an API outage) do not retry in step."""
    delay = min(cap, base * 2 ** max(0, min(failures - 1, 30)))
    return min(cap, delay * (0.5 + rand()))


def _poke(namespace: str | None, job: str | None) -> None:
    if namespace and job and (namespace, job) in _WAKE:
        _WOKEN.setdefault((namespace, job), time.monotonic())
        METRICS.queue_depth.set(len(_WOKEN))
        _WAKE[(namespace, job)].set()


def _pass(
    reconciler: Reconciler,
    namespace: str,
    name: str,
    job: dict | None,
    pods: list[dict] | None,
    fence: Callable[[], bool] | None = None,
) -> Any:
    """One reconciliation in a worker thread, timed; the wait since the wake-up is the queue wait."""
    started = time.monotonic()
    woken = _WOKEN.pop((namespace, name), None)
    METRICS.queue_depth.set(len(_WOKEN))
    try:
        return reconciler.reconcile(namespace, name, job=job, pods=pods, fence=fence)
    finally:
        METRICS.observe_pass(time.monotonic() - started, None if woken is None else started - woken)
        METRICS.set_cache_sizes(reconciler.cache_sizes())


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Apply our settings to kopf, open the client, load the platform profiles, serve metrics."""
    from mnv2_operator.profiles import load_operator_config

    ours = operator_settings.current()
    ours.apply(settings)
    _WAKE.clear()
    # Passes run in threads (the client is synchronous): enough of them for many jobs at once.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=max(1, ours.workers), thread_name_prefix="pass")
    )
    memo.reconciler = Reconciler(
        k8s.shared(ours.kubeconfig, ours.api_qps, ours.api_burst),
        load_operator_config(ours.config_path),
        ours.progress_seconds,
        (ours.restart_backoff_seconds, ours.restart_backoff_max_seconds),
        ours.create_concurrency,
    )
    memo.resync_seconds = ours.resync_seconds
    memo.error_backoff = (ours.error_backoff_seconds, ours.error_backoff_max_seconds)
    if ours.metrics_port:
        try:
            METRICS.serve(ours.metrics_port)
        except OSError as error:  # already served by an earlier start in this process
            log.warning("metrics port %s: %s", ours.metrics_port, error)


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    """Kopf's credentials from the same configuration as our client (see k8s.configuration)."""
    config = k8s.configuration(operator_settings.current().kubeconfig)
    header = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix("authorization")
    scheme, _, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        username=config.username or None,
        password=config.password or None,
        scheme=scheme or None,
        token=token or None,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
        trust_env=settings.networking.trust_env,
    )


@kopf.on.probe(id="jobs")
def jobs_probe(**_: Any) -> int:
    """Readiness/liveness: the operator's loop answers (kopf serves it at the --liveness URL)."""
    return len(_WAKE)


def _needs_daemon(body: kopf.Body, **_: Any) -> bool:
    """A finished job with no TTL and its pods cleaned up costs nothing: no daemon, no timer (kopf
    stops a daemon whose filter stops matching and starts it again when it matches)."""
    return not at_rest({"spec": dict(body.get("spec") or {}), "status": dict(body.get("status") or {})})


async def _to_the_end(work: Awaitable[Any]) -> Any:
    """Await a pass running in a thread; if the daemon is cancelled meanwhile (kopf cancels a daemon
    whose filter stops matching), let the thread finish before the cancellation goes on. A thread
    cannot be interrupted, so otherwise a cancelled daemon's pass would still be running after the
    daemon ended, and overlap with the pass of a daemon started again for the same job. The pass is
    short by then: `stopped` is set, so its fence abandons it before its next write."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            log.debug(f"the cancelled daemon's pass failed: {task.exception()!r}")
        raise


@kopf.daemon(
    api.GROUP, api.VERSION, api.PLURAL, id="reconcile", cancellation_timeout=10.0, when=_needs_daemon
)
async def job_daemon(
    name: str,
    namespace: str,
    memo: kopf.Memo,
    stopped: Any,
    logger: logging.Logger,
    body: kopf.Body,
    pods_by_job: kopf.Index,
    **_: Any,
) -> None:
    """The job's reconciliation loop (see the module docstring).

    Each pass reads the job and its pods from kopf's watch streams: `body` is kopf's live view of
    the job, `pods_by_job` the index of our pods. A snapshot is taken here, in the event loop that
    updates them, and handed to the pass's thread."""
    key = (namespace, name)
    wake = _WAKE[key] = asyncio.Event()
    failures = 0
    try:
        while not stopped:
            wake.clear()
            try:
                job = copy.deepcopy(dict(body))
                pods = [copy.deepcopy(dict(p)) for p in pods_by_job.get(key, [])]
                fence = lambda: bool(stopped)  # noqa: E731  (kopf stops the daemon of a paused replica)
                outcome = await _to_the_end(
                    asyncio.to_thread(_pass, memo.reconciler, namespace, name, job, pods, fence)
                )
            except Fenced as error:
                logger.info(f"pass abandoned before writing: {error}")
                return
            except Exception as error:
                METRICS.reconcile_error("reconcile")
                failures += 1
                timeout = error_backoff(failures, *memo.error_backoff)
                logger.warning(f"reconciliation failed, retrying in {timeout:.1f}s: {error!r}")
                await stopped.wait(timeout)  # events do not shorten an error backoff
                continue
            else:
                failures = 0
                if outcome.created or outcome.deleted:
                    logger.info(
                        f"state {outcome.state}; created {outcome.created}; deleted {outcome.deleted}"
                    )
                if outcome.state is None:
                    return  # the job is gone or being deleted
                timeout = memo.resync_seconds
                if outcome.wake_in is not None:
                    timeout = min(timeout, outcome.wake_in)
            logger.debug(f"next pass in at most {timeout:.2f}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=timeout)
    finally:
        if _WAKE.get(key) is wake:
            del _WAKE[key]
            _WOKEN.pop(key, None)


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def job_event(type: str, name: str, namespace: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Any change of the job (spec, suspend, deletion) wakes its loop."""
    if type == "DELETED":
        METRICS.job_deleted(namespace, str(body.get("spec", {}).get("platform", "")))
        reconciler = getattr(memo, "reconciler", None)
        if reconciler is not None:  # a finished job has no daemon whose last pass would forget it
            reconciler.forget(namespace, name)
            reconciler.publish_states()
    _poke(namespace, name)


@kopf.index("", "v1", "pods", labels={names.LABEL_MANAGED_BY: names.MANAGED_BY})
def pods_by_job(
    namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], dict]:
    """Our pods by job, from the pod watch (kopf keeps the index current): passes read pods here."""
    job = labels.get(names.LABEL_JOB_NAME)
    return {(namespace, job): copy.deepcopy(dict(body))} if job else {}


@kopf.on.event("", "v1", "pods", labels={names.LABEL_MANAGED_BY: names.MANAGED_BY})
async def pod_event(labels: kopf.Labels, namespace: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A pod of a job changed phase, IP, annotations, or went away: wake the job's loop (and note
    a disruption, which the pod's own deletion may erase before the pass reads it)."""
    reconciler = getattr(memo, "reconciler", None)
    if reconciler is not None:
        reconciler.note_pod(dict(body))
    _poke(namespace, labels.get(names.LABEL_JOB_NAME))


@kopf.on.event("", "v1", "services", labels={names.LABEL_MANAGED_BY: names.MANAGED_BY})
@kopf.on.event("", "v1", "configmaps", labels={names.LABEL_MANAGED_BY: names.MANAGED_BY})
async def child_event(
    type: str,
    resource: kopf.Resource,
    name: str,
    labels: kopf.Labels,
    namespace: str,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """A job's Service or rank-table ConfigMap deleted by hand: forget that it exists and wake the
    job, whose next pass creates it again (passes otherwise trust that children stay)."""
    job = labels.get(names.LABEL_JOB_NAME)
    reconciler = getattr(memo, "reconciler", None)
    if type != "DELETED" or not job or reconciler is None:
        return
    kind = {"services": "Service", "configmaps": "ConfigMap"}[resource.plural]
    reconciler.child_deleted(namespace, job, f"{kind}/{name}")
    _poke(namespace, job)
