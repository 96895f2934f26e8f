"""The job's status, computed in one pure function from what is observed: the job and its pods.

`compute_status(job, pods, now)` is the one place that decides state, conditions and transitions
(Kubernetes API conventions: type, status, reason, message, lastTransitionTime kept unless the status
flips, observedGeneration). The reconciler writes the result only when it differs and derives its
actions from it (a raised restartCount means "delete this attempt's pods"; a terminal state means
"clean up"). Nothing here talks to the cluster, so every rule is unit-tested with plain dicts.

Attempts: all pods of one run of the job carry `ATTEMPT_LABEL = <restartCount>`. A failed rank ends
the whole attempt (collective training cannot go on with a rank missing); pods of older attempts
that still exist are only waited for, never counted.

Kubernetes semantics followed (REFERENCE §7):
- suspend is batch/v1 Job's: suspending clears startTime, so activeDeadlineSeconds counts running
  time only, from the resume;
- a pod with `DisruptionTarget=True` (preemption, API eviction, taint manager, lost node) restarts the
  job without counting against backoffLimit (Job's podFailurePolicy `Ignore` on DisruptionTarget,
  Volcano's PodEvicted -> RestartJob); such restarts are counted in `disruptionCount`;
- every whole-job restart waits `restartAfter` (10 s doubling per restart, capped, like the Job
  controller's pod backoff) before its pods are created;
- a pod held by scheduling gates (`PodScheduled=False, reason=SchedulingGated`, e.g. Kueue's
  `kueue.x-k8s.io/admission`) is queued, not unschedulable: the job is Pending/Queued (condition
  Queued), with no Warning, and pendingTimeoutSeconds counts only pods the scheduler reports
  Unschedulable, from when the job left the queue.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from mnv2.artifacts import describe as describe_artifacts
from mnv2.artifacts import parse as parse_artifacts
from mnv2.exitcodes import describe, is_retryable

ATTEMPT_LABEL = "training.mindspore.io/restart-count"
INDEX_LABEL = "training.mindspore.io/replica-index"
TRAINER_CONTAINER = "trainer"

CONDITION_TYPES = ("Created", "Queued", "Running", "Restarting", "Succeeded", "Failed", "Suspended")
TERMINAL_STATES = ("Succeeded", "Failed")
SPEC_REJECTED = "SpecChangeRejected"
QUEUED = "Queued"
DISRUPTION_TARGET = "DisruptionTarget"
# The Job controller's pod-failure backoff: 10 s, doubled per failure, at most 6 minutes.
RESTART_BACKOFF = (10.0, 360.0)


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- observations of pods ----------------------------------------------------------------------


@dataclass(frozen=True)
class PodFailure:
    """Why one pod of the current attempt failed, and whether a restart could help."""

    pod: str
    index: int
    exit_code: int | None  # None: the pod never reported one (evicted, node lost, deleted)
    reason: str
    retryable: bool

    def describe(self) -> str:
        if self.exit_code is None:
            return f"pod {self.pod} (replica {self.index}) {self.reason}"
        info = describe(self.exit_code)
        return (
            f"pod {self.pod} (replica {self.index}) exited with code {self.exit_code} "
            f"({info.reason}: {info.meaning})"
        )


def pod_index(pod: dict[str, Any]) -> int:
    return int(((pod.get("metadata") or {}).get("labels") or {}).get(INDEX_LABEL, "0"))


def pod_attempt(pod: dict[str, Any]) -> int:
    return int(((pod.get("metadata") or {}).get("labels") or {}).get(ATTEMPT_LABEL, "0"))


def pod_phase(pod: dict[str, Any]) -> str:
    return (pod.get("status") or {}).get("phase") or "Pending"


def terminating(pod: dict[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def exit_code(pod: dict[str, Any]) -> int | None:
    """The trainer container's exit code (the first terminated container when it has another name)."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    statuses = sorted(statuses, key=lambda s: s.get("name") != TRAINER_CONTAINER)
    for container in statuses:
        for state in ((container.get("state") or {}), (container.get("lastState") or {})):
            terminated = state.get("terminated")
            if terminated is not None and terminated.get("exitCode") is not None:
                return int(terminated["exitCode"])
    return None


def classify_failure(pod: dict[str, Any], restart_policy: str) -> PodFailure:
    """Permanent or retryable, by the job's restartPolicy and the trainer's exit-code table."""
    name = pod["metadata"]["name"]
    code = exit_code(pod)
    status = pod.get("status") or {}
    if code is None:
        default = (
            "lost its node (phase Unknown)"
            if status.get("phase") == "Unknown"
            else "failed without an exit code"
        )
        reason = status.get("reason") or default
        reason = f"was {reason.lower()}" if reason == "Evicted" else reason
        message = status.get("message")
        reason = f"{reason} ({message})" if message else reason
    else:
        reason = describe(code).reason
    if restart_policy == "Never":
        retryable = False
    elif restart_policy == "OnFailure":
        retryable = True
    else:  # ExitCode: the table decides; a pod that never exited (eviction, lost node) is worth a retry
        retryable = True if code is None else is_retryable(code)
    return PodFailure(name, pod_index(pod), code, reason, retryable)


def pod_condition(pod: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for found in (pod.get("status") or {}).get("conditions") or []:
        if found.get("type") == type_:
            return found
    return None


def scheduling_gates(pod: dict[str, Any]) -> list[str]:
    """The gates holding the pod before scheduling (`spec.schedulingGates`, or the scheduler's
    `PodScheduled=False, reason=SchedulingGated` when the spec is not at hand)."""
    gates = [g.get("name", "") for g in (pod.get("spec") or {}).get("schedulingGates") or []]
    scheduled = pod_condition(pod, "PodScheduled")
    gated = (
        bool(scheduled)
        and scheduled.get("status") == "False"
        and scheduled.get("reason") == "SchedulingGated"
    )
    if not gates and gated:
        gates = ["(unnamed)"]
    return gates


def unschedulable_message(pod: dict[str, Any]) -> str:
    """The scheduler's message for a pod it could not place; "" for any other pod (gated included)."""
    if scheduling_gates(pod):
        return ""
    scheduled = pod_condition(pod, "PodScheduled")
    if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return scheduled.get("message") or "Unschedulable"
    return ""


def disruption(pod: dict[str, Any]) -> str:
    """Why the pod was disrupted ("" when it was not): its DisruptionTarget=True condition."""
    found = pod_condition(pod, DISRUPTION_TARGET)
    if not found or found.get("status") != "True":
        return ""
    reason = found.get("reason") or DISRUPTION_TARGET
    return f"{reason} ({found['message']})" if found.get("message") else reason


def restart_delay(restarts: int, backoff: tuple[float, float] = RESTART_BACKOFF) -> float:
    """Seconds to wait before the pods of restart number `restarts` (1, 2, ...) are created."""
    base, cap = backoff
    return min(cap, base * 2 ** max(0, min(restarts - 1, 30)))


# --- conditions ------------------------------------------------------------------------------------


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> None:
    """Upsert one condition; lastTransitionTime changes only when the status flips."""
    value = "True" if status else "False"
    for condition in conditions:
        if condition["type"] == type_:
            if condition.get("status") != value:
                condition["lastTransitionTime"] = format_time(now)
            condition.update(status=value, reason=reason, message=message)
            if generation is not None:
                condition["observedGeneration"] = generation
            return
    new = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": format_time(now),
    }
    if generation is not None:
        new["observedGeneration"] = generation
    conditions.append(new)


def clear_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> None:
    """Set a condition False only when it was ever set (conditions appear when first relevant)."""
    if any(c["type"] == type_ for c in conditions):
        set_condition(conditions, type_, False, reason, message, now, generation)


def condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


def is_true(status: dict[str, Any], type_: str) -> bool:
    found = condition(status, type_)
    return bool(found and found.get("status") == "True")


# --- the pure function --------------------------------------------------------------------------


def _spec(job: dict[str, Any]) -> tuple[Any | None, str]:
    """The parsed spec, or None and the message listing every problem with its field path."""
    from mnv2_operator.api import SpecError, parse_job

    try:
        return parse_job(
            job, source=f"{job.get('kind', 'job')} {job.get('metadata', {}).get('name', '')}"
        ), ""
    except SpecError as error:
        return None, "; ".join(f"{path}: {message}" for path, message in error.problems)


def reported_artifacts(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What rank 0 reported in its termination message (mnv2.artifacts), checked and bounded there."""
    for pod in pods:
        if pod_index(pod) != 0:
            continue
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            found = parse_artifacts(((container.get("state") or {}).get("terminated") or {}).get("message"))
            if found is not None:
                return found
    return None


def output_volume_words(job: dict[str, Any]) -> str:
    """The job's output volume in words, e.g. 'the output volume (persistentVolumeClaim results)'."""
    volume = ((job.get("spec") or {}).get("output") or {}).get("volume") or {}
    for kind, source in volume.items():
        if isinstance(source, dict):
            detail = source.get("claimName") or source.get("path") or source.get("driver") or ""
            return f"the output volume ({kind} {detail})".replace(" )", ")")
    return "the output volume"


def compute_status(
    job: dict[str, Any],
    pods: list[dict[str, Any]],
    now: datetime,
    restart_backoff: tuple[float, float] = RESTART_BACKOFF,
) -> dict[str, Any]:
    """The job's next status from its current status, its spec and its pods (see module docstring)."""
    old = job.get("status") or {}
    status: dict[str, Any] = copy.deepcopy(old)
    conditions: list[dict[str, Any]] = status.setdefault("conditions", [])
    generation = (job.get("metadata") or {}).get("generation")
    if generation is not None:
        status["observedGeneration"] = generation
    restart_count = int(old.get("restartCount") or 0)
    disruptions = int(old.get("disruptionCount") or 0)
    status["restartCount"] = restart_count

    def transition(state: str, reason: str, message: str) -> dict[str, Any]:
        status.update(state=state, reason=reason, message=message)
        if state not in ("Restarting", "Created", "Pending"):
            status.pop("restartAfter", None)
        return status

    def finish(state: str, reason: str, message: str) -> dict[str, Any]:
        set_condition(conditions, state, True, reason, message, now, generation)
        clear_condition(conditions, "Running", reason, "the job has finished", now, generation)
        clear_condition(conditions, "Restarting", reason, "the job has finished", now, generation)
        clear_condition(conditions, QUEUED, reason, "the job has finished", now, generation)
        status.setdefault("completionTime", format_time(now))
        return transition(state, reason, message)

    def restart(reason: str, message: str) -> dict[str, Any]:
        status["restartCount"] = restart_count + 1
        delay = restart_delay(restart_count + 1, restart_backoff)
        status["restartAfter"] = format_time(now + timedelta(seconds=delay))
        message = f"{message}; new pods in {delay:.0f}s"
        set_condition(conditions, "Restarting", True, reason, message, now, generation)
        clear_condition(conditions, "Running", reason, "a rank failed", now, generation)
        status["replicas"] = {"pending": 0, "running": 0, "succeeded": 0, "failed": 0}
        return transition("Restarting", reason, message)

    parsed, problems = _spec(job)
    current = [p for p in pods if pod_attempt(p) == restart_count]
    counts = {"pending": 0, "running": 0, "succeeded": 0, "failed": 0}
    for pod in current:
        if pod_phase(pod) == "Unknown":
            counts["failed"] += 1
            continue
        counts[
            pod_phase(pod).lower() if pod_phase(pod) in ("Running", "Succeeded", "Failed") else "pending"
        ] += 1
    status["replicas"] = counts

    if old.get("state") in TERMINAL_STATES:
        return status  # a finished job stays finished; only the counts above follow the pods
    if parsed is None:
        return finish("Failed", "InvalidSpec", f"the job's spec is invalid: {problems}")

    spec = parsed.spec
    policy = spec.run_policy
    replicas = spec.replicas
    set_condition(conditions, "Created", True, "JobCreated", f"{replicas} pod(s) requested", now, generation)

    if policy.suspend:
        set_condition(
            conditions,
            "Suspended",
            True,
            "JobSuspended",
            "the job is suspended; its pods are deleted",
            now,
            generation,
        )
        clear_condition(conditions, "Running", "JobSuspended", "the job is suspended", now, generation)
        clear_condition(conditions, "Restarting", "JobSuspended", "the job is suspended", now, generation)
        clear_condition(conditions, QUEUED, "JobSuspended", "the job is suspended", now, generation)
        # batch/v1 Job: the deadline counts running time only; a resume starts it afresh.
        status.pop("startTime", None)
        status.pop("restartAfter", None)
        return transition("Suspended", "JobSuspended", "the job is suspended; its pods are deleted")
    if is_true(old, "Suspended"):
        set_condition(conditions, "Suspended", False, "JobResumed", "the job is resumed", now, generation)
    status.setdefault("startTime", format_time(now))

    # Deadline over the job's running time, restarts included (Kubeflow's activeDeadlineSeconds).
    started = parse_time(status.get("startTime"))
    if policy.active_deadline_seconds is not None and started is not None:
        elapsed = (now - started).total_seconds()
        if elapsed >= policy.active_deadline_seconds:
            return finish(
                "Failed",
                "DeadlineExceeded",
                f"the job ran {elapsed:.0f}s, longer than activeDeadlineSeconds "
                f"({policy.active_deadline_seconds}s)",
            )

    # Disruptions end the attempt without counting against backoffLimit, whatever the restartPolicy.
    disrupted = [p for p in current if disruption(p)]
    if disrupted:
        status["disruptionCount"] = disruptions + 1
        details = "; ".join(
            f"pod {p['metadata']['name']} (replica {pod_index(p)}) was disrupted: {disruption(p)}"
            for p in disrupted
        )
        return restart(
            "PodDisrupted",
            f"{details}; restarting every pod from the latest checkpoint "
            f"(disruption {disruptions + 1}, not counted against backoffLimit)",
        )

    live = [p for p in current if not terminating(p)]
    # Failed pods, and pods whose node stopped reporting (phase Unknown: node lost) count as failed.
    failures = [
        classify_failure(p, policy.restart_policy.value)
        for p in live
        if pod_phase(p) in ("Failed", "Unknown")
    ]
    if not failures and old.get("state") == "Running" and len(live) < replicas:
        present = {pod_index(p) for p in live}
        failures = [
            PodFailure(
                f"replica {i}",
                i,
                None,
                "was deleted while the job ran (node lost or pod deleted)",
                policy.restart_policy.value != "Never",
            )
            for i in range(replicas)
            if i not in present
        ]
    if failures:
        permanent = [f for f in failures if not f.retryable]
        details = "; ".join(f.describe() for f in (permanent or failures))
        if permanent:
            reason = "PodFailed" if policy.restart_policy.value != "Never" else "RestartPolicyNever"
            return finish(
                "Failed", reason, f"{details}: not retryable (restartPolicy {policy.restart_policy.value})"
            )
        failed_restarts = restart_count - disruptions
        if failed_restarts >= policy.backoff_limit:
            return finish(
                "Failed",
                "BackoffLimitExceeded",
                f"{details}; the job was already restarted {failed_restarts} time(s) after failures, "
                f"backoffLimit is {policy.backoff_limit}",
            )
        return restart(
            "RetryableFailure",
            f"{details}; restarting every pod ({failed_restarts + 1}/{policy.backoff_limit}) "
            "from the latest checkpoint",
        )

    # Queued (held by scheduling gates) is not unschedulable: a condition, no timeout, no Warning.
    gated = [p for p in live if scheduling_gates(p)]
    if gated:
        gates = ", ".join(sorted({g for p in gated for g in scheduling_gates(p)}))
        set_condition(
            conditions,
            QUEUED,
            True,
            "SchedulingGated",
            f"{len(gated)} pod(s) held by scheduling gates ({gates}): waiting for admission",
            now,
            generation,
        )
    else:
        clear_condition(
            conditions, QUEUED, "Admitted", "no pod is held by a scheduling gate", now, generation
        )

    if policy.pending_timeout_seconds is not None:
        for pod in live:
            since = unschedulable_since(pod, status)
            if pod_phase(pod) == "Pending" and since is not None:
                waited = (now - since).total_seconds()
                if waited >= policy.pending_timeout_seconds:
                    return finish(
                        "Failed",
                        "PendingTimeout",
                        f"pod {pod['metadata']['name']} was unschedulable for {waited:.0f}s "
                        f"(pendingTimeoutSeconds {policy.pending_timeout_seconds}): "
                        f"{unschedulable_message(pod)}",
                    )

    if len(live) >= replicas and counts["succeeded"] >= replicas:
        message = f"all {replicas} pod(s) succeeded"
        found = reported_artifacts(current)
        if found is not None:
            status["artifacts"] = found
            message += "; " + describe_artifacts(found, output_volume_words(job))
        return finish("Succeeded", "JobSucceeded", message)
    if len(live) >= replicas and counts["running"] + counts["succeeded"] >= replicas and counts["running"]:
        set_condition(
            conditions, "Running", True, "JobRunning", f"all {replicas} pod(s) are running", now, generation
        )
        clear_condition(conditions, "Restarting", "JobRunning", "every pod is running again", now, generation)
        return transition("Running", "JobRunning", f"all {replicas} pod(s) are running")
    if is_true(status, "Restarting"):
        return transition(
            "Restarting",
            condition(status, "Restarting")["reason"],
            condition(status, "Restarting")["message"],
        )
    if gated:
        return transition("Pending", "Queued", condition(status, QUEUED)["message"])
    waiting = [p for p in live if unschedulable_message(p)]
    if waiting:
        return transition(
            "Pending",
            "Unschedulable",
            f"pod {waiting[0]['metadata']['name']} cannot be scheduled: {unschedulable_message(waiting[0])}",
        )
    if live:
        return transition("Pending", "PodsStarting", f"{counts['running']}/{replicas} pod(s) running")
    return transition("Created", "JobCreated", f"{replicas} pod(s) requested")


def unschedulable_since(pod: dict[str, Any], status: dict[str, Any]) -> datetime | None:
    """When the pod's pending timeout started: None unless the scheduler reports it Unschedulable;
    else its creation or the job leaving the queue (Queued turning False), whichever is later."""
    if not unschedulable_message(pod):
        return None
    moments = [parse_time(pod["metadata"].get("creationTimestamp"))]
    queued = condition(status, QUEUED)
    if queued is not None and queued.get("status") == "False":
        moments.append(parse_time(queued.get("lastTransitionTime")))
    known = [m for m in moments if m is not None]
    return max(known) if known else None


def with_failure(
    status: dict[str, Any], reason: str, message: str, now: datetime, generation: int | None
) -> dict[str, Any]:
    """The status of a job that cannot run for a reason found outside the spec's own rules (e.g. the
    operator's platform profile refuses it); terminal like any other failure."""
    if status.get("state") in TERMINAL_STATES:
        return status
    status = copy.deepcopy(status)
    conditions = status.setdefault("conditions", [])
    set_condition(conditions, "Failed", True, reason, message, now, generation)
    clear_condition(conditions, "Running", reason, "the job has finished", now, generation)
    clear_condition(conditions, "Restarting", reason, "the job has finished", now, generation)
    status.setdefault("completionTime", format_time(now))
    status.update(state="Failed", reason=reason, message=message)
    return status


def with_name_conflicts(status: dict[str, Any], conflicts: list[str]) -> dict[str, Any]:
    """A job that cannot start because objects it needs exist under its children's names but belong
    to someone else: say which, instead of waiting silently (it proceeds once they are gone)."""
    if not conflicts or status.get("state") not in ("Created", "Pending"):
        return status
    return {**status, "state": "Pending", "reason": "NameConflict", "message": "; ".join(conflicts)}


def with_rejected_changes(
    status: dict[str, Any], changes: list[tuple[str, str]], generation: int | None, now: datetime
) -> dict[str, Any]:
    """Record (or clear) refused changes of immutable fields; the job keeps running its accepted spec."""
    status = copy.deepcopy(status)
    conditions = status.setdefault("conditions", [])
    if changes:
        message = "; ".join(f"{path}: {why}" for path, why in changes)
        set_condition(
            conditions,
            SPEC_REJECTED,
            True,
            "ImmutableFieldChanged",
            f"change refused, the job keeps its accepted spec: {message}",
            now,
            generation,
        )
    else:
        clear_condition(
            conditions, SPEC_REJECTED, "SpecAccepted", "the spec matches the accepted spec", now, generation
        )
    return status


def next_deadline(
    job: dict[str, Any], status: dict[str, Any], pods: list[dict[str, Any]], now: datetime | None = None
) -> datetime | None:
    """The earliest moment a time-based rule could change the status or call for an action
    (deadline, pending timeout, restart backoff, a deletion's grace period ending, TTL)."""
    parsed, _ = _spec(job)
    if parsed is None:
        return None
    policy = parsed.spec.run_policy
    moments: list[datetime] = []

    if status.get("state") in TERMINAL_STATES:
        done = parse_time(status.get("completionTime"))
        if done is not None and policy.ttl_seconds_after_finished is not None:
            moments.append(done + timedelta(seconds=policy.ttl_seconds_after_finished))
        return min(moments) if moments else None
    started = parse_time(status.get("startTime"))
    if started is not None and policy.active_deadline_seconds is not None:
        moments.append(started + timedelta(seconds=policy.active_deadline_seconds))
    after = parse_time(status.get("restartAfter"))
    if status.get("state") == "Restarting" and after is not None and (now is None or after > now):
        moments.append(after)
    for pod in pods:
        if terminating(pod):
            # Past its grace period a pod on a lost node is force-deleted (see the reconciler).
            grace_end = parse_time(pod["metadata"].get("deletionTimestamp"))
            if grace_end is not None and (now is None or grace_end > now):
                moments.append(grace_end)
            continue
        since = unschedulable_since(pod, status)
        if policy.pending_timeout_seconds is not None and since is not None and pod_phase(pod) == "Pending":
            moments.append(since + timedelta(seconds=policy.pending_timeout_seconds))
    return min(moments) if moments else None


def at_rest(job: dict[str, Any]) -> bool:
    """Whether nothing can ever be left to do for the job: finished, no TTL, and its pods cleaned
    up as cleanPodPolicy asks (by the recorded counts). Such a job needs no daemon and no timer; a
    change of its spec (a TTL added) makes it need one again."""
    status = job.get("status") or {}
    if status.get("state") not in TERMINAL_STATES:
        return False
    policy = (job.get("spec") or {}).get("runPolicy") or {}
    if policy.get("ttlSecondsAfterFinished") is not None:
        return False
    counts = status.get("replicas") or {}
    clean = policy.get("cleanPodPolicy", "Running")
    if clean == "All":
        return not any(counts.get(k) for k in ("pending", "running", "succeeded", "failed"))
    if clean == "Running":
        return not counts.get("pending") and not counts.get("running")
    return True
