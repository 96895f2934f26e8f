"""compute_status: the pure function that decides the job's state and conditions, on plain dicts."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mnv2_operator.status import (
    ATTEMPT_LABEL,
    INDEX_LABEL,
    classify_failure,
    compute_status,
    condition,
    next_deadline,
    with_name_conflicts,
    with_rejected_changes,
)

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def job(status: dict | None = None, replicas: int = 2, generation: int = 1, **run_policy: Any) -> dict:
    body = {
        "apiVersion": "training.mindspore.io/v1alpha1",
        "kind": "MobileNetV2TrainJob",
        "metadata": {
            "name": "j",
            "namespace": "ns",
            "generation": generation,
            "uid": "u",
            "creationTimestamp": iso(T0),
        },
        "spec": {
            "platform": "CPU",
            "replicas": replicas,
            "dataset": {"volume": {"persistentVolumeClaim": {"claimName": "d"}}},
            "output": {"volume": {"persistentVolumeClaim": {"claimName": "o"}}},
            "runPolicy": run_policy,
        },
    }
    if status is not None:
        body["status"] = status
    return body


def pod(
    index: int,
    phase: str = "Running",
    attempt: int = 0,
    exit_code: int | None = None,
    created: datetime = T0,
    **status: Any,
) -> dict:
    container: dict[str, Any] = {"name": "trainer", "state": {"running": {}}}
    if exit_code is not None:
        container["state"] = {"terminated": {"exitCode": exit_code}}
    return {
        "metadata": {
            "name": f"j-{index}",
            "creationTimestamp": iso(created),
            "labels": {INDEX_LABEL: str(index), ATTEMPT_LABEL: str(attempt)},
        },
        "status": {"phase": phase, "containerStatuses": [container], **status},
    }


def step(j: dict, pods: list[dict], now: datetime) -> dict:
    """Compute and store, as the reconciler does."""
    new = compute_status(j, pods, now)
    j["status"] = new
    return new


def types(status: dict) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def test_new_job_is_created_with_start_time_and_observed_generation():
    status = compute_status(job(generation=3), [], T0)
    assert status["state"] == "Created"
    assert types(status) == {"Created": "True"}
    assert status["startTime"] == iso(T0) and status["observedGeneration"] == 3
    assert condition(status, "Created")["observedGeneration"] == 3
    assert status["replicas"] == {"pending": 0, "running": 0, "succeeded": 0, "failed": 0}


def test_running_needs_every_replica_running():
    j = job()
    assert step(j, [pod(0), pod(1, phase="Pending")], T0)["state"] == "Pending"
    status = step(j, [pod(0), pod(1)], T0 + timedelta(seconds=5))
    assert status["state"] == "Running"
    assert types(status) == {"Created": "True", "Running": "True"}
    assert status["replicas"]["running"] == 2


def test_last_transition_time_kept_unless_the_status_flips():
    j = job()
    step(j, [pod(0), pod(1)], T0)
    again = step(j, [pod(0), pod(1)], T0 + timedelta(minutes=3))
    assert condition(again, "Running")["lastTransitionTime"] == iso(T0)
    done = step(
        j, [pod(0, "Succeeded", exit_code=0), pod(1, "Succeeded", exit_code=0)], T0 + timedelta(minutes=9)
    )
    assert condition(done, "Running")["status"] == "False"
    assert condition(done, "Running")["lastTransitionTime"] == iso(T0 + timedelta(minutes=9))
    assert condition(done, "Created")["lastTransitionTime"] == iso(T0)


def test_unchanged_observation_gives_an_identical_status():
    j = job()
    first = step(j, [pod(0), pod(1)], T0)
    assert compute_status(copy.deepcopy(j), [pod(0), pod(1)], T0 + timedelta(seconds=30)) == first


def test_all_succeeded_is_terminal_and_sticky():
    j = job()
    done = step(j, [pod(0, "Succeeded", exit_code=0), pod(1, "Succeeded", exit_code=0)], T0)
    assert done["state"] == "Succeeded" and done["completionTime"] == iso(T0)
    # Pods cleaned up later: still Succeeded, completion time unchanged.
    later = step(j, [], T0 + timedelta(hours=1))
    assert later["state"] == "Succeeded" and later["completionTime"] == iso(T0)


def test_a_succeeded_job_names_where_the_model_went():
    """Rank 0's termination message (the container's terminationMessagePath file, kept by Kubernetes up to
    4096 bytes: kubernetes.io "Determine the Reason for Pod Failure") becomes status.artifacts and the
    Succeeded message, which `kubectl describe` shows; the CRD keeps every field (no pruning)."""
    import json

    from mnv2_operator.crd import stored_status

    message = json.dumps({"outputPath": "/output", "checkpoint": "checkpoint/mobilenetv2-5_10.ckpt",
                          "top1": 0.97, "exports": ["mobilenetv2_logits.mindir", "mobilenetv2.json"]})
    rank0 = pod(0, "Succeeded", exit_code=0)
    rank0["status"]["containerStatuses"][0]["state"]["terminated"]["message"] = message
    j = job()
    done = step(j, [rank0, pod(1, "Succeeded", exit_code=0)], T0)
    assert done["artifacts"] == json.loads(message)
    assert stored_status(done)["artifacts"] == done["artifacts"]
    assert done["message"] == (
        "all 2 pod(s) succeeded; on the output volume (persistentVolumeClaim o) under /output: final "
        "checkpoint checkpoint/mobilenetv2-5_10.ckpt; exported mobilenetv2_logits.mindir, mobilenetv2.json; "
        "final top-1 0.9700"
    )
    later = step(j, [], T0 + timedelta(hours=1))  # pods cleaned up: the record stays
    assert later["artifacts"] == done["artifacts"]


def test_a_failed_ranks_log_tail_is_not_taken_for_artifacts():
    """FallbackToLogsOnError puts a failed container's last log lines in the message: never artifacts."""
    rank0 = pod(0, "Succeeded", exit_code=0)
    rank0["status"]["containerStatuses"][0]["state"]["terminated"]["message"] = "epoch: [  4/  5] ..."
    done = step(job(), [rank0, pod(1, "Succeeded", exit_code=0)], T0)
    assert done["state"] == "Succeeded" and "artifacts" not in done
    assert done["message"] == "all 2 pod(s) succeeded"


def test_retryable_exit_code_restarts_and_counts():
    j = job(backoffLimit=2, restartPolicy="ExitCode")
    step(j, [pod(0), pod(1)], T0)
    status = step(j, [pod(0), pod(1, "Failed", exit_code=76)], T0 + timedelta(seconds=10))
    assert status["state"] == "Restarting" and status["restartCount"] == 1
    restarting = condition(status, "Restarting")
    assert restarting["status"] == "True" and restarting["reason"] == "RetryableFailure"
    assert "j-1 (replica 1) exited with code 76" in restarting["message"]
    assert condition(status, "Running")["status"] == "False"
    # The old attempt's pods no longer count; the new attempt starting keeps it Restarting ...
    status = step(j, [pod(0, attempt=1, phase="Pending")], T0 + timedelta(seconds=20))
    assert status["state"] == "Restarting" and status["restartCount"] == 1
    # ... until every new rank runs.
    status = step(j, [pod(0, attempt=1), pod(1, attempt=1)], T0 + timedelta(seconds=30))
    assert status["state"] == "Running"
    assert condition(status, "Restarting")["status"] == "False"


def test_permanent_exit_code_fails_at_once_naming_pod_and_code():
    status = compute_status(job(backoffLimit=5), [pod(0, "Failed", exit_code=65), pod(1)], T0)
    assert status["state"] == "Failed" and status["restartCount"] == 0
    failed = condition(status, "Failed")
    assert failed["reason"] == "PodFailed"
    assert "j-0" in failed["message"] and "65" in failed["message"] and "InvalidInput" in failed["message"]


def test_permanent_failure_wins_over_a_retryable_one():
    pods = [pod(0, "Failed", exit_code=137), pod(1, "Failed", exit_code=67)]
    status = compute_status(job(backoffLimit=5), pods, T0)
    assert status["state"] == "Failed" and "Diverged" in status["message"]


def test_backoff_limit_exhausted():
    j = job(status={"restartCount": 2, "state": "Running", "conditions": []}, backoffLimit=2)
    status = compute_status(j, [pod(0, "Failed", exit_code=143, attempt=2), pod(1, attempt=2)], T0)
    assert status["state"] == "Failed"
    assert condition(status, "Failed")["reason"] == "BackoffLimitExceeded"
    assert status["restartCount"] == 2


@pytest.mark.parametrize(
    ("policy", "code", "retry"),
    [
        ("Never", 137, False),
        ("OnFailure", 65, True),
        ("ExitCode", 65, False),
        ("ExitCode", 74, True),
        ("ExitCode", 200, True),
        ("ExitCode", 3, False),
        ("ExitCode", None, True),
        ("Never", None, False),
    ],
)
def test_restart_policies(policy, code, retry):
    failed = pod(0, "Failed", exit_code=code)
    if code is None:
        failed["status"].update(reason="Evicted", message="The node was low on resource: memory.")
    assert classify_failure(failed, policy).retryable is retry


def test_eviction_restarts_and_says_why():
    evicted = pod(1, "Failed", reason="Evicted", message="The node was low on resource: memory.")
    evicted["status"]["containerStatuses"] = []
    status = compute_status(job(), [pod(0), evicted], T0)
    assert status["state"] == "Restarting"
    assert "was evicted (The node was low on resource: memory.)" in status["message"]


def test_a_pod_vanishing_from_a_running_job_restarts_it():
    j = job()
    step(j, [pod(0), pod(1)], T0)
    status = step(j, [pod(0)], T0 + timedelta(seconds=5))
    assert status["state"] == "Restarting" and "replica 1" in status["message"]


def test_missing_pods_before_running_are_just_not_created_yet():
    assert compute_status(job(), [pod(0)], T0)["state"] == "Pending"


def unschedulable(index: int, **fields: Any) -> dict:
    """A pod the scheduler could not place: PodScheduled=False, reason Unschedulable."""
    return pod(
        index,
        "Pending",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
            }
        ],
        **fields,
    )


def gated(index: int, created: datetime = T0) -> dict:
    """A pod held by Kueue's admission gate: the scheduler reports PodScheduled=False,
    reason=SchedulingGated until every gate is removed (REFERENCE §7, scheduling gates)."""
    held = pod(
        index,
        "Pending",
        created=created,
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "SchedulingGated",
                "message": "Scheduling is blocked due to non-empty scheduling gates",
            }
        ],
    )
    held["spec"] = {"schedulingGates": [{"name": "kueue.x-k8s.io/admission"}]}
    return held


def test_pending_timeout_carries_the_schedulers_message():
    j = job(pendingTimeoutSeconds=60)
    status = step(j, [unschedulable(0), pod(1)], T0 + timedelta(seconds=30))
    assert status["state"] == "Pending" and status["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in status["message"]
    status = step(j, [unschedulable(0), pod(1)], T0 + timedelta(seconds=61))
    assert status["state"] == "Failed"
    failed = condition(status, "Failed")
    assert failed["reason"] == "PendingTimeout" and "3 Insufficient nvidia.com/gpu" in failed["message"]


def test_active_deadline_counts_from_start_time():
    j = job(activeDeadlineSeconds=100)
    step(j, [pod(0), pod(1)], T0)
    assert step(j, [pod(0), pod(1)], T0 + timedelta(seconds=99))["state"] == "Running"
    status = step(j, [pod(0), pod(1)], T0 + timedelta(seconds=100))
    assert status["state"] == "Failed" and condition(status, "Failed")["reason"] == "DeadlineExceeded"


def test_suspend_and_resume():
    j = job()
    step(j, [pod(0), pod(1)], T0)
    j["spec"]["runPolicy"]["suspend"] = True
    status = step(j, [pod(0), pod(1)], T0 + timedelta(seconds=5))
    assert status["state"] == "Suspended"
    assert types(status)["Suspended"] == "True" and types(status)["Running"] == "False"
    assert "startTime" not in status  # batch/v1 Job: a resume starts the clock afresh
    j["spec"]["runPolicy"]["suspend"] = False
    status = step(j, [], T0 + timedelta(seconds=9))
    assert status["state"] == "Created" and types(status)["Suspended"] == "False"
    assert condition(status, "Suspended")["reason"] == "JobResumed"
    assert status["startTime"] == iso(T0 + timedelta(seconds=9))


def test_suspended_time_does_not_count_against_the_active_deadline():
    """batch/v1 Job (REFERENCE §7): suspending resets startTime; activeDeadlineSeconds counts from
    the resume. On the first version a job suspended longer than its deadline failed on resume."""
    j = job(activeDeadlineSeconds=100)
    step(j, [pod(0), pod(1)], T0)
    j["spec"]["runPolicy"]["suspend"] = True
    step(j, [], T0 + timedelta(seconds=50))
    j["spec"]["runPolicy"]["suspend"] = False
    resumed_at = T0 + timedelta(hours=2)
    status = step(j, [], resumed_at)
    assert status["state"] == "Created" and status["startTime"] == iso(resumed_at)
    assert next_deadline(j, status, []) == resumed_at + timedelta(seconds=100)
    status = step(j, [pod(0, attempt=0), pod(1, attempt=0)], resumed_at + timedelta(seconds=99))
    assert status["state"] == "Running"
    status = step(j, [pod(0), pod(1)], resumed_at + timedelta(seconds=100))
    assert status["state"] == "Failed" and status["reason"] == "DeadlineExceeded"


def test_invalid_spec_fails_naming_the_field():
    j = job()
    j["spec"]["replicas"] = 0
    j["spec"]["runPolicy"] = {"backoffLimit": -1}
    status = compute_status(j, [], T0)
    assert status["state"] == "Failed"
    failed = condition(status, "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert "spec.replicas" in failed["message"] and "spec.runPolicy.backoffLimit" in failed["message"]


def test_rejected_immutable_change_is_a_condition_until_reverted():
    status = compute_status(job(), [pod(0), pod(1)], T0)
    rejected = with_rejected_changes(status, [("spec.replicas", "immutable while the job exists")], 2, T0)
    found = condition(rejected, "SpecChangeRejected")
    assert found["status"] == "True" and "spec.replicas" in found["message"]
    cleared = with_rejected_changes(rejected, [], 3, T0 + timedelta(seconds=1))
    assert condition(cleared, "SpecChangeRejected")["status"] == "False"
    assert condition(with_rejected_changes(status, [], 1, T0), "SpecChangeRejected") is None


def test_next_deadline_picks_the_earliest_rule():
    j = job(activeDeadlineSeconds=300, pendingTimeoutSeconds=60)
    status = step(j, [unschedulable(0), pod(1)], T0)
    assert next_deadline(j, status, [unschedulable(0), pod(1)]) == T0 + timedelta(seconds=60)
    # A pod that is merely Pending (scheduled, pulling its image) has no pending timeout.
    assert next_deadline(j, status, [pod(0, "Pending"), pod(1)]) == T0 + timedelta(seconds=300)
    finished = job(status={"state": "Succeeded", "completionTime": iso(T0)}, ttlSecondsAfterFinished=30)
    assert next_deadline(finished, finished["status"], []) == T0 + timedelta(seconds=30)
    assert next_deadline(job(), compute_status(job(), [], T0), []) is None


def test_a_pod_on_a_lost_node_counts_as_a_retryable_failure():
    lost = pod(1, "Unknown")
    lost["status"]["containerStatuses"] = []
    status = compute_status(job(), [pod(0), lost], T0)
    assert status["state"] == "Restarting" and "lost its node" in status["message"]
    assert status["replicas"]["failed"] == 0  # counts reset for the next attempt
    assert compute_status(job(restartPolicy="Never"), [pod(0), lost], T0)["state"] == "Failed"


def test_name_conflicts_explain_a_job_that_cannot_start():
    created = compute_status(job(), [], T0)
    blocked = with_name_conflicts(created, ["Pod j-0 already exists and is not owned by this job"])
    assert (
        blocked["state"] == "Pending" and blocked["reason"] == "NameConflict" and "j-0" in blocked["message"]
    )
    running = compute_status(job(), [pod(0), pod(1)], T0)
    assert with_name_conflicts(running, ["x"]) == running
    assert with_name_conflicts(created, []) == created


# --- issue 12: Kubernetes semantics -------------------------------------------------------------


def test_gated_pods_are_queued_not_unschedulable_and_never_time_out():
    """Issue 12 (4): a job waiting in Kueue's queue for 601 s with a 600 s pending timeout stayed
    Pending/Unschedulable and then Failed PendingTimeout on the first version."""
    j = job(pendingTimeoutSeconds=600)
    status = step(j, [gated(0), gated(1)], T0 + timedelta(seconds=1))
    assert (status["state"], status["reason"]) == ("Pending", "Queued")
    assert "kueue.x-k8s.io/admission" in status["message"]
    assert condition(status, "Queued")["status"] == "True"
    assert next_deadline(j, status, [gated(0), gated(1)]) is None
    status = step(j, [gated(0), gated(1)], T0 + timedelta(seconds=3601))
    assert (status["state"], status["reason"]) == ("Pending", "Queued")
    # Admitted: the gates are removed; the cluster has no room. The timeout counts from admission.
    admitted = T0 + timedelta(hours=2)
    status = step(j, [unschedulable(0), unschedulable(1)], admitted)
    assert (status["state"], status["reason"]) == ("Pending", "Unschedulable")
    assert condition(status, "Queued")["status"] == "False"
    assert next_deadline(j, status, [unschedulable(0)]) == admitted + timedelta(seconds=600)
    assert (
        step(j, [unschedulable(0), unschedulable(1)], admitted + timedelta(seconds=599))["state"] == "Pending"
    )
    status = step(j, [unschedulable(0), unschedulable(1)], admitted + timedelta(seconds=600))
    assert status["state"] == "Failed" and status["reason"] == "PendingTimeout"


def disrupted(index: int, reason: str = "PreemptionByScheduler", attempt: int = 0, **fields: Any) -> dict:
    """A pod with DisruptionTarget=True (Kubernetes >= 1.26: preemption, eviction, taint manager)."""
    victim = pod(index, attempt=attempt, **fields)
    victim["status"]["conditions"] = [
        {"type": "DisruptionTarget", "status": "True", "reason": reason, "message": "preempted by a-job"}
    ]
    return victim


@pytest.mark.parametrize("restart_policy", ["Never", "OnFailure", "ExitCode"])
def test_a_disruption_restarts_without_counting_against_backoff_limit(restart_policy):
    """Issue 12 (5): Job's podFailurePolicy Ignore on DisruptionTarget, Volcano's PodEvicted ->
    RestartJob. The first version failed a restartPolicy Never job and used up backoffLimit."""
    j = job(backoffLimit=0, restartPolicy=restart_policy)
    step(j, [pod(0), pod(1)], T0)
    victim = disrupted(1, phase="Failed")
    victim["metadata"]["deletionTimestamp"] = iso(T0 + timedelta(seconds=30))
    status = step(j, [pod(0), victim], T0 + timedelta(seconds=5))
    assert status["state"] == "Restarting" and status["reason"] == "PodDisrupted"
    assert status["restartCount"] == 1 and status["disruptionCount"] == 1
    assert "j-1" in status["message"] and "PreemptionByScheduler" in status["message"]
    # The next attempt fails for real: backoffLimit 0 counts failures only, so it fails now.
    status = step(j, [pod(0, attempt=1), pod(1, attempt=1)], T0 + timedelta(seconds=60))
    assert status["state"] == "Running"
    status = step(
        j, [pod(0, "Failed", attempt=1, exit_code=76), pod(1, attempt=1)], T0 + timedelta(seconds=70)
    )
    expected = "BackoffLimitExceeded" if restart_policy != "Never" else "RestartPolicyNever"
    assert status["state"] == "Failed" and status["reason"] == expected


def test_restarts_back_off_exponentially_and_say_when():
    """Issue 12 (5): whole-job restarts wait 10 s, doubled per restart, capped (Job controller)."""
    j = job(backoffLimit=20, restartPolicy="OnFailure")
    delays = []
    moment = T0
    for attempt in range(7):
        step(j, [pod(0, attempt=attempt), pod(1, attempt=attempt)], moment)
        moment += timedelta(seconds=1)
        status = step(j, [pod(0, "Failed", attempt=attempt, exit_code=76), pod(1, attempt=attempt)], moment)
        after = datetime.fromisoformat(status["restartAfter"].replace("Z", "+00:00"))
        delays.append((after - moment).total_seconds())
        assert next_deadline(j, status, []) == after
    assert delays == [10, 20, 40, 80, 160, 320, 360]
    running = step(j, [pod(0, attempt=7), pod(1, attempt=7)], moment + timedelta(seconds=400))
    assert running["state"] == "Running" and "restartAfter" not in running


def test_every_status_field_survives_the_crds_pruning():
    """Issue 12 (1): the status the operator computes is exactly what kube-apiserver keeps under the
    CRD's structural schema (REFERENCE §7, CRD pruning). On the first version conditions carried
    observedGeneration, which the schema did not declare: pruned, so every pass wrote again."""
    from mnv2_operator.crd import stored_status

    j = job(backoffLimit=3, pendingTimeoutSeconds=60)
    moments = iter(T0 + timedelta(seconds=10 * i) for i in range(100))
    observed = [
        [gated(0), gated(1)],
        [unschedulable(0), pod(1)],
        [pod(0), pod(1)],
        [disrupted(0), pod(1)],
        [pod(0, attempt=1), pod(1, "Failed", attempt=1, exit_code=76)],
        [pod(0, attempt=2), pod(1, attempt=2)],
    ]
    seen = set()
    for pods in observed:
        status = step(j, pods, next(moments))
        assert stored_status(status) == status, status
        seen |= set(status) | {k for c in status["conditions"] for k in c}
    assert {"observedGeneration", "disruptionCount", "restartAfter", "lastTransitionTime"} <= seen
    j["spec"]["runPolicy"]["suspend"] = True
    status = step(j, [], next(moments))
    assert stored_status(status) == status


def test_stored_form_prunes_unknown_fields_and_applies_defaults():
    """kube-apiserver's structural pruning and defaulting, as the operator models it."""
    from mnv2_operator.crd import stored_form

    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "object", "properties": {"b": {"type": "integer", "default": 3}}},
            "l": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "string"}}}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "m": {"type": "object", "additionalProperties": {"type": "object", "properties": {}}},
        },
    }
    value = {
        "a": {"zz": 1},
        "l": [{"x": "1", "y": 2}],
        "free": {"k": {"deep": 1}},
        "m": {"k": {"gone": 1}},
        "unknown": 1,
        "nulled": None,
    }
    assert stored_form(value, schema) == {
        "a": {"b": 3},
        "l": [{"x": "1"}],
        "free": {"k": {"deep": 1}},
        "m": {"k": {}},
    }


@pytest.mark.parametrize(
    ("clean", "counts", "ttl", "rest"),
    [
        ("All", {"pending": 0, "running": 0, "succeeded": 0, "failed": 0}, None, True),
        ("All", {"pending": 0, "running": 0, "succeeded": 2, "failed": 0}, None, False),
        ("Running", {"pending": 0, "running": 0, "succeeded": 2, "failed": 0}, None, True),
        ("Running", {"pending": 0, "running": 1, "succeeded": 1, "failed": 0}, None, False),
        ("None", {"pending": 0, "running": 1, "succeeded": 1, "failed": 0}, None, True),
        ("None", {"pending": 0, "running": 0, "succeeded": 2, "failed": 0}, 60, False),
    ],
)
def test_a_finished_job_is_at_rest_once_cleaned_up_and_without_ttl(clean, counts, ttl, rest):
    """Issue 16: such a job needs no daemon and no timer (handlers' `when` filter)."""
    from mnv2_operator.status import at_rest

    policy = {"cleanPodPolicy": clean, **({"ttlSecondsAfterFinished": ttl} if ttl is not None else {})}
    finished = job(status={"state": "Succeeded", "replicas": counts}, **policy)
    assert at_rest(finished) is rest
    assert at_rest(job(status={"state": "Running", "replicas": counts}, **policy)) is False
