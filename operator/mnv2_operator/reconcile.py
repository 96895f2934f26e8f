"""One reconciliation of one job: observe -> compute status (pure) -> write it if changed -> act.

Called by the job's kopf daemon whenever the job or one of its pods changes, when a time-based rule
comes due, and every `resync_seconds` otherwise. Every effect is idempotent, so running it twice, or
after the operator was killed at any point, creates nothing twice:
- children are created only when absent, and 409 AlreadyExists counts as "exists";
- the status is the record of decisions and is written before acting on them (a raised restartCount
  means "delete this attempt's pods" until they are gone; then the next attempt is created);
- pods are deleted with a uid precondition, so a pod recreated under the same name survives.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mnv2 import launchenv

from mnv2_operator import events, k8s, names
from mnv2_operator.api import GROUP, SpecError, parse_job
from mnv2_operator.crd import stored_status
from mnv2_operator.metrics import METRICS
from mnv2_operator.status import (
    ATTEMPT_LABEL,
    RESTART_BACKOFF,
    SPEC_REJECTED,
    TERMINAL_STATES,
    compute_status,
    condition,
    disruption,
    is_true,
    next_deadline,
    parse_time,
    pod_attempt,
    pod_index,
    pod_phase,
    terminating,
    with_failure,
    with_name_conflicts,
    with_rejected_changes,
)

LEGACY_ACCEPTED_SPEC_ANNOTATION = f"{GROUP}/accepted-spec"  # read for jobs of older operators
SETTLE_SECONDS = 30.0  # a status change that only counts starting pods waits this long after a write
WARNING_STATES = ("Failed", "Restarting")
# Scheduling directives that may change while the job is suspended (batch/v1 Job's mutable
# scheduling directives, what Kueue sets at admission); the new values apply from the resume.
MUTABLE_WHILE_SUSPENDED = (
    ("template", "nodeSelector"),
    ("template", "tolerations"),
    ("scheduling", "queue"),
    ("scheduling", "priorityClassName"),
)
NODE_LOST_TAINTS = ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")
log = logging.getLogger(__name__)

# (namespace, name) -> (platform, state): the jobs this process has seen, for the jobs-by-state gauge.
_STATES: dict[tuple[str, str], tuple[str, str]] = {}


class Stale(Exception):
    """A write was refused because the job changed since it was read (409): read afresh."""


class Fenced(Exception):
    """The pass must not write: this replica lost its peering (kopf is stopping its daemons)."""


@dataclass
class Outcome:
    """What a reconciliation did and when the job needs looking at again (None: on events only)."""

    state: str | None
    wake_in: float | None
    created: list[str]
    deleted: list[str]


def _owner_reference(job: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": job["apiVersion"],
        "kind": job["kind"],
        "name": job["metadata"]["name"],
        "uid": job["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def adopt(obj: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """The rendered child with the job as its controlling owner, in the job's namespace."""
    obj = copy.deepcopy(obj)
    meta = obj.setdefault("metadata", {})
    meta["namespace"] = job["metadata"]["namespace"]
    refs = [
        r for r in meta.get("ownerReferences") or [] if r.get("uid") not in (None, "", job["metadata"]["uid"])
    ]
    refs = [r for r in refs if not r.get("controller")]
    meta["ownerReferences"] = [*refs, _owner_reference(job)]
    return obj


def for_attempt(pod: dict[str, Any], attempt: int, resume: bool) -> dict[str, Any]:
    """Mark the pod with its attempt; on a restart or after a suspension the trainer resumes."""
    pod = copy.deepcopy(pod)
    pod["metadata"].setdefault("labels", {})[ATTEMPT_LABEL] = str(attempt)
    if resume:
        for container in pod["spec"].get("containers", []):
            for env in container.get("env") or []:
                if env.get("name") == launchenv.TRAINING_CONFIG and env.get("value"):
                    config = json.loads(env["value"])
                    config["resume"] = True
                    env["value"] = json.dumps(config, sort_keys=True)
    return pod


def owned_by(obj: dict[str, Any], job: dict[str, Any]) -> bool:
    """Whether `job` is the controlling owner of `obj`: the operator acts only on what it owns."""
    uid = job["metadata"].get("uid")
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


def foreign_message(kind: str, name: str) -> str:
    return f"{kind} {name} already exists and is not owned by this job; delete or rename it"


def is_suspended(job: dict[str, Any]) -> bool:
    """Suspended in the spec, or still recorded Suspended (a resume that also changes scheduling
    directives, as Kueue's admission does, comes in one update)."""
    policy = (job.get("spec") or {}).get("runPolicy") or {}
    return bool(policy.get("suspend")) or (job.get("status") or {}).get("state") == "Suspended"


def accepted_spec(job: dict[str, Any]) -> dict[str, Any] | None:
    """The spec the job's pods run (status.acceptedSpec, recorded with the job's first status; jobs
    of earlier operator builds kept it in an annotation), with the current scheduling directives while
    the job is suspended. None for a job that has not been accepted yet."""
    recorded = (job.get("status") or {}).get("acceptedSpec")
    if isinstance(recorded, dict):
        accepted = copy.deepcopy(recorded)
    else:
        raw = ((job.get("metadata") or {}).get("annotations") or {}).get(LEGACY_ACCEPTED_SPEC_ANNOTATION)
        if not raw:
            return None
        accepted = json.loads(raw)
    if is_suspended(job):
        spec = job.get("spec") or {}
        for parent, field in MUTABLE_WHILE_SUSPENDED:
            current = spec.get(parent) or {}
            if field in current:
                accepted.setdefault(parent, {})[field] = copy.deepcopy(current[field])
            elif isinstance(accepted.get(parent), dict):
                accepted[parent].pop(field, None)
    return accepted


def spec_to_accept(job: dict[str, Any]) -> dict[str, Any] | None:
    """What status.acceptedSpec should say: the accepted spec (with any rescheduling while
    suspended), or for a new job its spec once it parses (a spec that does not parse runs nothing)."""
    accepted = accepted_spec(job)
    if accepted is not None:
        return accepted
    try:
        parse_job(job)
    except SpecError:
        return None
    return copy.deepcopy(job.get("spec") or {})


def effective_job(job: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The job as the operator runs it: the accepted spec plus the fields that may change later.

    Returns it and the refused changes (field paths). Without an accepted spec (a new job) the
    current spec is the accepted one.
    """
    from mnv2_operator.validation import MUTABLE_RUN_POLICY_FIELDS, immutable_changes

    accepted = accepted_spec(job)
    if accepted is None:
        return job, []
    changes = immutable_changes(accepted, job.get("spec") or {})
    if not changes:
        return job, []
    spec = copy.deepcopy(accepted)
    current_policy = (job.get("spec") or {}).get("runPolicy") or {}
    policy = spec.setdefault("runPolicy", {})
    for field in MUTABLE_RUN_POLICY_FIELDS:
        if field in current_policy:
            policy[field] = current_policy[field]
        else:
            policy.pop(field, None)
    return {**job, "spec": spec}, changes


class Reconciler:
    """Holds the client and the operator configuration; `reconcile` is the whole loop body."""

    def __init__(
        self,
        kube: k8s.Kube,
        config: Any,
        progress_seconds: float = 30.0,
        restart_backoff: tuple[float, float] = RESTART_BACKOFF,
        create_concurrency: int = 32,
    ):
        self.kube = kube
        # A job's pods are created concurrently, at most this many requests at once.
        self._creator = ThreadPoolExecutor(
            max_workers=max(1, create_concurrency), thread_name_prefix="create"
        )
        self.config = config
        self.progress_seconds = progress_seconds
        self.restart_backoff = restart_backoff
        self._progress_read: dict[tuple[str, str], float] = {}  # job -> monotonic time of the last read
        self._last_create_error: dict[tuple[str, str], str] = {}  # job -> last creation error posted
        # Children's names taken by objects the job does not own: confirmed (in the status) and suspected.
        self._conflicts: dict[tuple[str, str], list[str]] = {}
        self._suspected: dict[tuple[str, str], set[str]] = {}
        # Jobs (by uid) whose PodGroup this process has seen gone while suspended or finished.
        self._podgroup_gone: dict[tuple[str, str], str] = {}
        self._nodes_forbidden = False  # no permission to read nodes: lost-node pods are not forced
        # job -> pod uid -> the pod as last seen with DisruptionTarget=True (from the pod watch): a
        # disrupted pod whose kubelet confirms its deletion at once is gone before a pass reads it.
        self._disrupted: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        # Passes may read the job and its pods from watch caches (issue 16), which lag behind our own
        # writes: job -> {resourceVersion written over: the job our write returned}, and job -> pod
        # name -> (the pod we created, monotonic time), until the cache shows them.
        self._written: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self._created: dict[tuple[str, str], dict[str, tuple[dict[str, Any], float]]] = {}
        self._rank_tables: dict[tuple[str, str], dict[str, str]] = {}  # the rank-table data last seen
        # job -> (uid, "Kind/name" of children other than pods known to exist and be the job's): read
        # once, not on every pass (the garbage collector removes them with the job).
        self._children: dict[tuple[str, str], tuple[str, set[str]]] = {}
        self._last_write: dict[tuple[str, str], float] = {}  # job -> monotonic time of its last status write
        self._local = threading.local()  # the running pass's fence (passes run in several threads)

    def note_pod(self, pod: dict[str, Any]) -> None:
        """Remember a pod of ours seen with DisruptionTarget=True (called from the pod watch)."""
        meta = pod.get("metadata") or {}
        job = (meta.get("labels") or {}).get(names.LABEL_JOB_NAME)
        if job and meta.get("uid") and disruption(pod):
            self._disrupted.setdefault((meta.get("namespace", ""), job), {})[meta["uid"]] = copy.deepcopy(pod)

    def child_deleted(self, namespace: str, job: str, child: str) -> None:
        """A child ("Kind/name") of the job was deleted (from the Service/ConfigMap watches): the next
        pass creates it again instead of trusting it is there."""
        known = self._children.get((namespace, job))
        if known is not None:
            known[1].discard(child)

    def _with_departed(self, key: tuple[str, str], job: dict[str, Any], pods: list[dict]) -> list[dict]:
        """The observed pods plus disrupted pods of the current attempt already gone (as last seen,
        Terminating), so the attempt's end is a disruption, not a failure; older ones are dropped."""
        seen = self._disrupted.get(key)
        if not seen:
            return pods
        attempt = int((job.get("status") or {}).get("restartCount") or 0)
        present = {p["metadata"].get("uid") for p in pods}
        for uid, pod in list(seen.items()):
            if pod_attempt(pod) < attempt or not owned_by(pod, job):
                del seen[uid]
        if not seen:
            self._disrupted.pop(key, None)
            return pods
        gone = [p for uid, p in seen.items() if uid not in present]
        for pod in gone:
            pod["metadata"].setdefault("deletionTimestamp", pod["metadata"].get("creationTimestamp"))
        return pods + gone

    def forget(self, namespace: str, name: str) -> None:
        """Drop everything this process keeps about a job (it was deleted)."""
        key = (namespace, name)
        for cache in (
            self._progress_read,
            self._last_create_error,
            self._conflicts,
            self._suspected,
            self._podgroup_gone,
            self._disrupted,
            self._written,
            self._created,
            self._rank_tables,
            self._children,
            self._last_write,
            _STATES,
        ):
            cache.pop(key, None)

    def cache_sizes(self) -> dict[str, int]:
        return {
            "progress_read": len(self._progress_read),
            "last_create_error": len(self._last_create_error),
            "conflicts": len(self._conflicts),
            "suspected": len(self._suspected),
            "podgroup_gone": len(self._podgroup_gone),
            "disrupted": sum(len(v) for v in self._disrupted.values()),
            "written": len(self._written),
            "created": sum(len(v) for v in self._created.values()),
            "rank_tables": len(self._rank_tables),
            "children": sum(len(v[1]) for v in self._children.values()),
            "last_write": len(self._last_write),
            "states": len(_STATES),
        }

    # -- the loop body ---------------------------------------------------------------------------

    def reconcile(
        self,
        namespace: str,
        name: str,
        now: datetime | None = None,
        job: dict[str, Any] | None = None,
        pods: list[dict[str, Any]] | None = None,
        fence: Callable[[], bool] | None = None,
    ) -> Outcome:
        """One pass. With `job` and `pods` (from the watch caches) it makes no read request; every
        status write carries the resourceVersion it was computed from, and a conflict means the
        cache was stale: read afresh and compute again. When `fence()` turns true (the replica
        lost its peering) the pass raises Fenced before its next write."""
        now = now or datetime.now(tz=UTC)
        self._local.fence = fence
        if job is not None:
            try:
                return self._reconcile(namespace, name, now, self._newest((namespace, name), job), pods)
            except Stale as error:
                log.info("stale cache for %s/%s (%s): reading afresh", namespace, name, error)
        return self._reconcile(namespace, name, now, self.kube.get(k8s.JOBS, namespace, name), None)

    def _check_fence(self) -> None:
        fence = getattr(self._local, "fence", None)
        if fence is not None and fence():
            raise Fenced("this replica is stopping (peering lost or shutdown): no more writes")

    def _newest(self, key: tuple[str, str], job: dict[str, Any]) -> dict[str, Any]:
        """The cached job, or what our own later write returned when the cache has not caught up."""
        chain = self._written.get(key)
        if not chain:
            return job
        rv, followed = job["metadata"].get("resourceVersion"), False
        while rv in chain:
            job, followed = chain[rv], True
            rv = job["metadata"].get("resourceVersion")
        if not followed:
            if not job.get("status"):
                # Our first status write (unfenced by resourceVersion) went over a version the cache
                # has not shown yet, e.g. kopf adding its finalizer: what it returned is newer.
                return copy.deepcopy(next(reversed(chain.values())))
            self._written.pop(key, None)  # the cache has caught up with our writes
        return copy.deepcopy(job)

    def _remember(self, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        meta = before["metadata"]
        chain = self._written.setdefault((meta["namespace"], meta["name"]), {})
        chain[meta.get("resourceVersion")] = copy.deepcopy(after)
        return after

    def _observed_pods(self, key: tuple[str, str], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Cached pods plus the ones we created that the cache does not show yet (for a minute)."""
        created = self._created.get(key)
        if not created:
            return pods
        names_seen = {p["metadata"]["name"] for p in pods}
        horizon = time.monotonic() - 60.0
        for pod_name, (_pod, at) in list(created.items()):
            if pod_name in names_seen or at < horizon:
                del created[pod_name]
        if not created:
            self._created.pop(key, None)
        return pods + [pod for pod, _ in created.values()]

    @staticmethod
    def _short(job: dict[str, Any], pods: list[dict[str, Any]]) -> bool:
        """Whether fewer live pods of the current attempt are seen than the job has replicas."""
        try:
            replicas = int((job.get("spec") or {}).get("replicas") or 1)
        except (TypeError, ValueError):
            return True
        attempt = int((job.get("status") or {}).get("restartCount") or 0)
        live = [p for p in pods if owned_by(p, job) and pod_attempt(p) == attempt and not terminating(p)]
        return len(live) < replicas

    def _reconcile(
        self,
        namespace: str,
        name: str,
        now: datetime,
        job: dict[str, Any] | None,
        cached_pods: list[dict[str, Any]] | None,
    ) -> Outcome:
        if job is None or job["metadata"].get("deletionTimestamp"):
            self.forget(namespace, name)
            self._publish_states()
            return Outcome(None, None, [], [])
        running_job, refused = effective_job(job)
        # Only pods this job owns count: a foreign pod carrying the label is never counted or deleted.
        key = (namespace, name)
        labelled = None if cached_pods is None else self._observed_pods(key, cached_pods)
        # A job without a status has had nothing created by any pass yet: its cache cannot be short.
        if labelled is None or (job.get("status") and self._short(job, labelled)):
            # Never act on a cache that may have missed pods (a fresh start, a resumed peer): a
            # missing pod means "create" or "a replica vanished", so confirm it with a LIST.
            labelled = self.kube.list(k8s.PODS, namespace, {names.LABEL_JOB_NAME: name})
            self._created.pop(key, None)
        pods = [p for p in labelled if owned_by(p, job)]
        old = job.get("status") or {}
        new = self._desired_status(job, running_job, refused, pods, now)
        # A new job's children are created first and its first status says so: one write, not a
        # "Created" write followed by a "Pending" one.
        first = not old and new.get("state") == "Created"
        deferred = first or self._settling(key, old, new)
        stored = old
        if not deferred:
            job, stored = self._write_status(job, old, new, pods, now), new
        found: list[tuple[str, bool]] = []
        self._check_fence()
        try:
            created, deleted = self._act(running_job, new, pods, now, found)
        except Exception:
            if first:  # e.g. a quota refused the pods: the job still says it was seen
                self._write_status(job, old, new, pods, now)
            raise
        if first:
            pods = [p for p in self._observed_pods(key, labelled) if owned_by(p, job)]
            new = self._desired_status(job, running_job, refused, pods, now)
            job, stored = self._write_status(job, old, new, pods, now), new
            deferred = False
        if self._settle_conflicts(job, found, now):
            latest = stored_status(with_name_conflicts(new, self._conflicts.get(key, [])))
            self._write_status(job, stored, latest, pods, now)
            new = latest
        platform = str((job.get("spec") or {}).get("platform", ""))
        _STATES[(namespace, name)] = (platform, new.get("state") or "Created")
        self._publish_states()
        if deleted == ["job"]:
            return Outcome(new.get("state"), None, created, deleted)
        due = next_deadline(running_job, new, pods, now)
        wake_in = max(0.0, (due - now).total_seconds()) + 0.05 if due is not None else None
        if new.get("state") == "Running":  # come back for the next progress reading
            wake_in = min(wake_in if wake_in is not None else self.progress_seconds, self.progress_seconds)
        if deferred:
            wake_in = min(wake_in if wake_in is not None else SETTLE_SECONDS, SETTLE_SECONDS)
        return Outcome(new.get("state"), wake_in, created, deleted)

    def _desired_status(
        self,
        job: dict[str, Any],
        running_job: dict[str, Any],
        refused: list[str],
        pods: list[dict[str, Any]],
        now: datetime,
    ) -> dict[str, Any]:
        """The status this pass should store, in the CRD's pruned form (compared with the stored one)."""
        key = (job["metadata"]["namespace"], job["metadata"]["name"])
        generation = job["metadata"].get("generation")
        new = compute_status(running_job, self._with_departed(key, job, pods), now, self.restart_backoff)
        refusal = self._render_problems(running_job)
        if refusal:
            new = with_failure(new, "InvalidSpec", refusal, now, generation)
        breaches = self._policy_problems(running_job)
        if breaches:
            new = with_failure(new, "PolicyViolation", breaches, now, generation)
        new = self._with_progress(running_job, new, pods)
        new = with_rejected_changes(
            new, [(path, "immutable while the job exists") for path in refused], generation, now
        )
        accepted = spec_to_accept(job)
        if accepted is not None:
            new["acceptedSpec"] = accepted
        return stored_status(with_name_conflicts(new, self._conflicts.get(key, [])))

    def _settling(self, key: tuple[str, str], old: dict[str, Any], new: dict[str, Any]) -> bool:
        """Whether to hold back a write that only counts pods starting (Pending, PodsStarting, no
        condition changed) because the job's status was written under SETTLE_SECONDS ago: pods
        of one job start together, and the Running write soon says it all."""
        last = self._last_write.get(key)
        if last is None or time.monotonic() - last >= SETTLE_SECONDS or new == old:
            return False
        return (
            old.get("state") in ("Created", "Pending")
            and new.get("state") == "Pending"
            and new.get("reason") == "PodsStarting"
            and new.get("conditions") == old.get("conditions")
        )

    def _write_status(
        self, job: dict[str, Any], old: dict[str, Any], new: dict[str, Any], pods: list[dict], now: datetime
    ) -> dict[str, Any]:
        """Patch only what differs from the stored status (both in the CRD's pruned form), then
        announce the transitions; an unchanged status costs no request and no event.

        The patch carries the resourceVersion the status was computed from (fencing): a 409 means
        someone (another replica, or our own write the cache has not shown yet) changed the job, and
        nothing is acted on until the pass is computed again from a fresh read."""
        if new == old:
            return job
        self._check_fence()
        meta = job["metadata"]
        try:
            if old:
                patch = {
                    "metadata": {"resourceVersion": meta.get("resourceVersion")},
                    "status": k8s.merge_patch(old, new),
                }
                written = self.kube.patch(
                    k8s.JOBS, meta["namespace"], meta["name"], patch, subresource="status"
                )
            else:
                # The first status (with acceptedSpec): kopf adding its finalizer meanwhile moves the
                # resourceVersion but is no reason to recompute; a spec change is (the test fails).
                ops = [{"op": "add", "path": "/status", "value": new}]
                if meta.get("generation") is not None:
                    ops.insert(0, {"op": "test", "path": "/metadata/generation", "value": meta["generation"]})
                written = self.kube.json_patch(
                    k8s.JOBS, meta["namespace"], meta["name"], ops, subresource="status"
                )
        except k8s.ApiError as error:
            # 409: the resourceVersion moved; 422 on the first write: the generation test failed.
            if error.status == 409 or (error.status == 422 and not old):
                raise Stale(str(error)) from None
            raise
        self._remember(job, written)
        self._last_write[(meta["namespace"], meta["name"])] = time.monotonic()
        self._announce(job, old, new, pods, now)
        return written

    def _settle_conflicts(self, job: dict[str, Any], found: list[tuple[str, bool]], now: datetime) -> bool:
        """Name conflicts found by this pass become the job's (status, one Warning event each) when
        certain (a foreign owner was read) or seen on two passes in a row (a 409 on a pod: on the first
        pass it could still be our own pod created a moment ago by an earlier pass)."""
        key = (job["metadata"]["namespace"], job["metadata"]["name"])
        suspected = {message for message, certain in found if not certain}
        confirmed = sorted(
            {m for m, certain in found if certain} | (suspected & self._suspected.get(key, set()))
        )
        self._suspected[key] = suspected
        before = self._conflicts.get(key, [])
        if confirmed == before:
            return False
        for message in confirmed:
            if message not in before:
                events.post(self.kube, job, "Warning", "NameConflict", message, now)
        self._conflicts[key] = confirmed
        return True

    def _render_problems(self, job: dict[str, Any]) -> str:
        """Problems only the operator's configuration reveals (platform profile limits), as a message."""
        from mnv2_operator.render import resolve

        try:
            resolve(job, self.config)
        except SpecError as error:
            return "the job's spec is invalid: " + "; ".join(f"{path}: {why}" for path, why in error.problems)
        return ""

    def _policy_problems(self, job: dict[str, Any]) -> str:
        """What the job asks beyond the namespace's policy (issue 13), as a message naming each
        field and rule: the job fails with PolicyViolation and nothing is created for it."""
        from mnv2_operator.policy import violations

        found = violations(job, self.config)
        if not found:
            return ""
        return "the job breaks the operator's policy: " + "; ".join(f"{path}: {rule}" for path, rule in found)

    def _with_progress(self, job: dict[str, Any], status: dict[str, Any], pods: list[dict]) -> dict[str, Any]:
        """status.progress from rank 0's /metrics while running, at most every `progress_seconds`.

        Best effort: an unreachable or unreadable trainer leaves the last progress in place.
        """
        from mnv2.progress import ProgressError, fetch_progress, progress_url

        key = (job["metadata"]["namespace"], job["metadata"]["name"])
        if status.get("state") != "Running":
            return status
        last = self._progress_read.get(key)
        if last is not None and time.monotonic() - last < self.progress_seconds:
            return status
        attempt = int(status.get("restartCount") or 0)
        rank0 = [p for p in pods if pod_attempt(p) == attempt and pod_index(p) == 0 and not terminating(p)]
        ip = ((rank0[0].get("status") or {}).get("podIP")) if rank0 else None
        if not ip:
            return status
        self._progress_read[key] = time.monotonic()
        port = int(
            ((job.get("spec") or {}).get("metrics") or {}).get("port") or launchenv.DEFAULT_METRICS_PORT
        )
        try:
            progress = fetch_progress(progress_url(ip, port), timeout=2.0).to_status()
        except (ProgressError, ValueError) as error:
            log.debug("no progress for %s/%s: %s", *key, error)
            return status
        return {**status, "progress": progress}

    # -- reporting -------------------------------------------------------------------------------

    def _announce(
        self, job: dict[str, Any], old: dict[str, Any], new: dict[str, Any], pods: list[dict], now: datetime
    ) -> None:
        """Events and metrics for each transition the new status records."""
        ns = job["metadata"]["namespace"]
        platform = str((job.get("spec") or {}).get("platform", ""))
        if condition(new, "Created") and not condition(old, "Created"):
            METRICS.job_created(ns, platform)
        if int(new.get("restartCount") or 0) > int(old.get("restartCount") or 0):
            METRICS.job_restarted(ns, platform)
        state = new.get("state")
        # Pods starting is progress, not news: no event (the status says it, and its Created
        # condition records when the pods were created); problems on the way have their own.
        quiet = state == "Pending" and new.get("reason") == "PodsStarting"
        if not quiet and (
            (state, new.get("reason")) != (old.get("state"), old.get("reason"))
            or (state == "Restarting" and new.get("message") != old.get("message"))
        ):
            kind = (
                "Warning"
                if state in WARNING_STATES or (state == "Pending" and new.get("reason") == "Unschedulable")
                else "Normal"
            )
            events.post(self.kube, job, kind, new.get("reason") or str(state), new.get("message") or "", now)
            if state == "Succeeded":
                METRICS.job_succeeded(ns, platform)
            elif state == "Failed":
                METRICS.job_failed(ns, platform)
            elif state == "Running" and not condition(old, "Running"):
                created = parse_time(job["metadata"].get("creationTimestamp"))
                if created is not None:
                    METRICS.observe_time_to_running(ns, platform, max(0.0, (now - created).total_seconds()))
                for pod in pods:
                    pod_created = parse_time(pod["metadata"].get("creationTimestamp"))
                    started = parse_time((pod.get("status") or {}).get("startTime"))
                    if pod_created is not None and started is not None:
                        METRICS.observe_pending(
                            ns, platform, max(0.0, (started - pod_created).total_seconds())
                        )
        # A lasting condition is announced once: when it turns True or its message changes.
        found, before = condition(new, SPEC_REJECTED), condition(old, SPEC_REJECTED) or {}
        if is_true(new, SPEC_REJECTED) and (
            before.get("status") != "True" or before.get("message") != found.get("message")
        ):
            events.post(self.kube, job, "Warning", found["reason"], found["message"], now)

    def publish_states(self) -> None:
        self._publish_states()

    @staticmethod
    def _publish_states() -> None:
        counts: dict[tuple[str, str, str], int] = {}
        for (namespace, _), (platform, state) in _STATES.items():
            counts[(namespace, platform, state)] = counts.get((namespace, platform, state), 0) + 1
        METRICS.set_jobs_by_state(counts)

    # -- acting ----------------------------------------------------------------------------------

    def _delete_pods(self, pods: list[dict[str, Any]]) -> list[str]:
        deleted = []
        for pod in pods:
            if terminating(pod):
                continue
            meta = pod["metadata"]
            try:
                if self.kube.delete(k8s.PODS, meta["namespace"], meta["name"], uid=meta.get("uid")):
                    deleted.append(meta["name"])
            except k8s.Conflict:
                pass  # a newer pod of that name exists: not ours to delete
        return deleted

    def _act(
        self,
        job: dict[str, Any],
        status: dict[str, Any],
        pods: list[dict[str, Any]],
        now: datetime,
        found: list[tuple[str, bool]],
    ) -> tuple[list[str], list[str]]:
        state = status.get("state")
        forced = self._force_delete_lost(pods, now)
        if state in TERMINAL_STATES:
            self._delete_podgroup(job)
            return [], forced + self._finish(job, status, pods, now)
        if state == "Suspended":
            self._delete_podgroup(job)
            return [], forced + self._delete_pods(pods)
        self._podgroup_gone.pop((job["metadata"]["namespace"], job["metadata"]["name"]), None)
        attempt = int(status.get("restartCount") or 0)
        stale = [p for p in pods if pod_attempt(p) != attempt]
        if stale:
            # Old attempt first: the new one starts only when every old rank is gone.
            return [], forced + self._delete_pods(stale)
        after = parse_time(status.get("restartAfter"))
        if state == "Restarting" and after is not None and now < after:
            return [], forced  # restart backoff: woken at restartAfter (next_deadline)
        resume = attempt > 0 or condition(status, "Suspended") is not None
        created = self._create_missing(job, pods, attempt, resume, found)
        self._sync_rank_table(job, [p for p in pods if not terminating(p)])
        return created, []

    def _force_delete_lost(self, pods: list[dict[str, Any]], now: datetime) -> list[str]:
        """Pods still Terminating past their grace period on a node that is gone, NotReady or
        unreachable are force-deleted (grace period 0): no kubelet will ever confirm them
        (REFERENCE §7, lost nodes), and the job waits for its old pods to vanish."""
        forced = []
        nodes: dict[str, bool] = {}
        for pod in pods:
            meta = pod["metadata"]
            grace_end = parse_time(meta.get("deletionTimestamp"))
            node = (pod.get("spec") or {}).get("nodeName")
            if grace_end is None or now < grace_end or not node:
                continue
            if node not in nodes:
                nodes[node] = self._node_lost(node)
            if not nodes[node]:
                continue
            try:
                if self.kube.delete(
                    k8s.PODS, meta["namespace"], meta["name"], uid=meta.get("uid"), grace_period_seconds=0
                ):
                    log.info(
                        "force-deleted pod %s/%s: node %s is lost", meta["namespace"], meta["name"], node
                    )
                    forced.append(meta["name"])
            except k8s.Conflict:
                pass  # a newer pod of that name: not the one that was stuck
        return forced

    def _node_lost(self, name: str) -> bool:
        """Whether the node is gone, its Ready condition is not True, or it is tainted unreachable."""
        if self._nodes_forbidden:
            return False
        try:
            node = self.kube.get(k8s.NODES, None, name)
        except k8s.ApiError as error:
            if error.status == 403:
                self._nodes_forbidden = True
                log.warning("cannot read nodes (%s): pods on lost nodes are not force-deleted", error)
            return False
        if node is None:
            return True
        ready = next(
            (c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None
        )
        taints = {t.get("key") for t in (node.get("spec") or {}).get("taints") or []}
        return (ready is not None and ready.get("status") != "True") or bool(taints & set(NODE_LOST_TAINTS))

    def _delete_podgroup(self, job: dict[str, Any]) -> None:
        """A suspended or finished job gives its PodGroup back (its minResources stay reserved in
        Volcano's queue otherwise); a resume creates it again."""
        from mnv2_operator.render import render_job

        meta = job["metadata"]
        key = (meta["namespace"], meta["name"])
        if self._podgroup_gone.get(key) == meta.get("uid"):
            return
        try:
            rendered = render_job(job, self.config)
        except SpecError:
            rendered = []
        for obj in rendered:
            if obj["kind"] != "PodGroup":
                continue
            present = self.kube.get(k8s.PODGROUPS, meta["namespace"], obj["metadata"]["name"])
            if present is not None and owned_by(present, job):
                with contextlib.suppress(k8s.Conflict):
                    self.kube.delete(
                        k8s.PODGROUPS,
                        meta["namespace"],
                        obj["metadata"]["name"],
                        uid=present["metadata"].get("uid"),
                    )
        self._podgroup_gone[key] = meta.get("uid") or ""
        known = self._children.get(key, ("", set()))[1]
        for child in [c for c in known if c.startswith("PodGroup/")]:
            known.discard(child)  # created again on resume

    def _create_missing(
        self, job: dict[str, Any], pods: list[dict], attempt: int, resume: bool, found: list[tuple[str, bool]]
    ) -> list[str]:
        """Create the children that are missing: PodGroup, Service, ConfigMap in order, then the
        pods concurrently (at most `create_concurrency` requests at once)."""
        from mnv2_operator.render import render_job

        key = (job["metadata"]["namespace"], job["metadata"]["name"])
        uid = job["metadata"].get("uid") or ""
        if self._children.get(key, ("", set()))[0] != uid:
            self._children[key] = (uid, set())
        known = self._children[key][1]
        existing_pods = {p["metadata"]["name"] for p in pods}
        created: list[str] = []
        failures: list[str] = []
        missing_pods = []
        for obj in render_job(job, self.config):
            obj = adopt(obj, job)
            kind, obj_name = obj["kind"], obj["metadata"]["name"]
            if kind == "Pod":
                if obj_name not in existing_pods:
                    missing_pods.append(for_attempt(obj, attempt, resume))
                continue
            if f"{kind}/{obj_name}" in known:
                continue
            outcome = self._create(obj, found)
            if outcome == "":  # exists: ours (an earlier pass) or someone else's?
                present = self.kube.get(k8s.resource_of(obj), obj["metadata"]["namespace"], obj_name)
                if present is not None and not owned_by(present, job):
                    found.append((foreign_message(kind, obj_name), True))
                elif present is not None:
                    known.add(f"{kind}/{obj_name}")
            elif outcome is None:
                created.append(f"{kind}/{obj_name}")
                known.add(f"{kind}/{obj_name}")
            else:
                failures.append(outcome)
                break  # the pods wait for the objects before them
        if not failures:
            outcomes = list(self._creator.map(lambda pod: (pod, self._create(pod, found)), missing_pods))
            for pod, outcome in outcomes:
                if outcome is None:
                    created.append(f"Pod/{pod['metadata']['name']}")
                elif outcome:
                    failures.append(outcome)
        if failures:
            # Refused (e.g. no Volcano installed for a PodGroup, a quota, an admission webhook): say
            # so on the job once per distinct error, then retry with backoff.
            message = failures[0]
            if self._last_create_error.get(key) != message:
                self._last_create_error[key] = message
                events.post(self.kube, job, "Warning", "CreateFailed", message, datetime.now(tz=UTC))
            raise k8s.ApiError(0, message)
        self._last_create_error.pop(key, None)
        return created

    def _create(self, obj: dict[str, Any], found: list[tuple[str, bool]]) -> str | None:
        """Create one child: None when created, "" when it exists already, else the error message."""
        kind, obj_name = obj["kind"], obj["metadata"]["name"]
        try:
            made = self.kube.create(obj)
        except k8s.Conflict:
            # Created by an earlier pass (e.g. before an operator restart): exists is fine. A pod
            # that is still not ours on the next pass belongs to someone else.
            if kind == "Pod":
                found.append((foreign_message(kind, obj_name), False))
            return ""
        except k8s.ApiError as error:
            return f"cannot create {kind} {obj_name}: {error}"
        if kind == "Pod":
            key = (obj["metadata"]["namespace"], obj["metadata"]["labels"][names.LABEL_JOB_NAME])
            self._created.setdefault(key, {})[obj_name] = (made, time.monotonic())
        return None

    def _sync_rank_table(self, job: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        """Ascend rank-table mode: rewrite hccl.json whenever the pods' IPs or devices change."""
        from mnv2_operator.render import render_rank_table_configmap

        if str((job.get("spec") or {}).get("platform")) != "Ascend":
            return
        key = (job["metadata"]["namespace"], job["metadata"]["name"])
        ns, name = job["metadata"]["namespace"], names.rank_table_configmap_name(job["metadata"]["name"])
        started = time.perf_counter()
        desired = render_rank_table_configmap(job, pods, self.config).get("data") or {}
        METRICS.observe_rank_table_render(time.perf_counter() - started)
        if self._rank_tables.get(key) == desired:
            return  # what we last read or wrote: no request
        current = self.kube.get(k8s.CONFIGMAPS, ns, name)
        if current is None:
            return  # created by _create_missing on this pass when the mode needs one
        if not owned_by(current, job):
            return  # someone else's ConfigMap: never rewritten (_create_missing reported the conflict)
        if (current.get("data") or {}) != desired:
            self.kube.patch(k8s.CONFIGMAPS, ns, name, {"data": desired})
        self._rank_tables[key] = desired

    def _finish(
        self, job: dict[str, Any], status: dict[str, Any], pods: list[dict[str, Any]], now: datetime
    ) -> list[str]:
        """cleanPodPolicy, then ttlSecondsAfterFinished (from completionTime, so restarts don't reset it)."""
        spec = job.get("spec") or {}
        policy = spec.get("runPolicy") or {}
        clean = policy.get("cleanPodPolicy", "Running")
        if clean == "All":
            doomed = pods
        elif clean == "Running":
            doomed = [p for p in pods if pod_phase(p) in ("Running", "Pending")]
        else:
            doomed = []
        deleted = self._delete_pods(doomed)
        ttl = policy.get("ttlSecondsAfterFinished")
        done = parse_time(status.get("completionTime"))
        if ttl is not None and done is not None and (now - done).total_seconds() >= ttl:
            meta = job["metadata"]
            events.post(
                self.kube,
                job,
                "Normal",
                "TTLExpired",
                f"deleting the job {ttl}s after it finished (ttlSecondsAfterFinished)",
                now,
            )
            # Counted in jobs_deleted_total by the DELETED watch event, like any other deletion.
            self.kube.delete(k8s.JOBS, meta["namespace"], meta["name"], uid=meta.get("uid"))
            return ["job"]
        return deleted
