"""Issue 12 on the strict double: disruptions, lost nodes, restart backoff and scheduling gates.

Contracts (REFERENCE §7): a disrupted pod carries `DisruptionTarget=True` (Kubernetes >= 1.26) and
Job's podFailurePolicy / Volcano's PodEvicted policy restart without charging the job; pods on a lost
node get NoExecute taints, DisruptionTarget (DeletionByTaintManager) and stay Terminating for ever
unless force-deleted; pods with `spec.schedulingGates` stay Pending with `PodScheduled=False,
reason=SchedulingGated` until every gate is removed (Kueue's `kueue.x-k8s.io/admission`).
"""

from __future__ import annotations

import time

import pytest
from harness import OperatorRunner, wait_for
from mnv2_operator import k8s, names
from mnv2_operator.metrics import METRICS
from mnv2_operator.status import condition

JOB = "mnv2"


@pytest.fixture
def operator(namespace: str, tmp_path):
    """The operator with a short restart backoff and pods that terminate within 1 s (grace period)."""
    config = tmp_path / "operator.yaml"
    config.write_text("terminationGracePeriodSeconds: 1\n")
    runner = OperatorRunner([namespace], config_path=str(config)).start()
    yield runner
    runner.stop()


def status_of(kube: k8s.Kube, namespace: str) -> dict:
    return (kube.get(k8s.JOBS, namespace, JOB) or {}).get("status") or {}


def reasons(sim, namespace: str) -> list[tuple[str, str]]:
    return [(e.get("type"), e.get("reason")) for e in sim.events(namespace, JOB)]


@pytest.mark.parametrize("reason", ["PreemptionByScheduler", "EvictionByEvictionAPI"])
def test_a_disruption_restarts_a_never_restart_job_without_using_backoff_limit(
    kube, namespace, sim, operator, job_factory, reason
):
    sim.plan(namespace, JOB, outcomes=[None, {0: 0, 1: 0}])
    job_factory(JOB, runPolicy={"restartPolicy": "Never", "backoffLimit": 0})
    wait_for(lambda: status_of(kube, namespace).get("state") == "Running", what="Running")
    sim.disrupt(namespace, f"{JOB}-1", reason)
    wait_for(lambda: status_of(kube, namespace).get("state") == "Succeeded", what="Succeeded after a restart")
    status = status_of(kube, namespace)
    assert status["restartCount"] == 1 and status["disruptionCount"] == 1
    (event,) = [e for e in sim.events(namespace, JOB) if e["reason"] == "PodDisrupted"]
    assert event["type"] == "Warning" and reason in event["message"] and f"{JOB}-1" in event["message"]


def test_pods_of_a_lost_node_are_force_deleted_and_the_job_goes_on(
    kube, namespace, sim, operator, job_factory
):
    sim.plan(namespace, JOB, outcomes=[None, None])
    job_factory(JOB)
    wait_for(lambda: status_of(kube, namespace).get("state") == "Running", what="Running")
    sim.node_lost("node-1")  # unreachable: taint, DisruptionTarget, graceful deletion never confirmed
    try:
        wait_for(
            lambda: (
                status_of(kube, namespace).get("restartCount") == 1
                and status_of(kube, namespace).get("state") == "Running"
            ),
            timeout=30,
            what="Running again after the lost node",
        )
        assert status_of(kube, namespace)["disruptionCount"] == 1
        assert sim.creations("v1/pods", namespace, f"{JOB}-1") == 2
        pods = kube.list(k8s.PODS, namespace, {names.LABEL_JOB_NAME: JOB})
        assert not [p for p in pods if p["metadata"].get("deletionTimestamp")]
    finally:
        sim.node_recovered("node-1")


def test_a_restart_waits_for_its_backoff_and_shows_when(kube, namespace, sim, job_factory):
    """Whole-job restarts wait with exponential backoff (the Job controller's: 10 s doubling, capped),
    visible in status.restartAfter; here 2 s for the first restart."""
    runner = OperatorRunner([namespace], restart_backoff_seconds=2.0).start()
    try:
        sim.plan(namespace, JOB, outcomes=[{1: 76}, None])
        job_factory(JOB, runPolicy={"restartPolicy": "ExitCode", "backoffLimit": 3})
        after = wait_for(lambda: status_of(kube, namespace).get("restartAfter"), what="restartAfter")
        wait_for(
            lambda: status_of(kube, namespace).get("state") == "Running", timeout=30, what="Running again"
        )
        pods = kube.list(k8s.PODS, namespace, {names.LABEL_JOB_NAME: JOB})
        assert pods and all(p["metadata"]["creationTimestamp"] >= after for p in pods)
        assert "restartAfter" not in status_of(kube, namespace)
    finally:
        runner.stop()


def test_a_gated_job_is_queued_without_warnings_and_never_times_out(
    cluster, kube, namespace, sim, operator, job_factory
):
    """Kueue's pod-group integration gates pods until the workload is admitted: queueing, not
    unschedulability. The first version counted gated pods against pendingTimeoutSeconds, said
    Unschedulable with a Warning, and failed the job PendingTimeout."""

    def gate(request):  # what Kueue's pod webhook does to the pods of a queued workload
        spec = request.data.setdefault("spec", {})
        spec["schedulingGates"] = [{"name": "kueue.x-k8s.io/admission"}]
        return None  # the stored-object handler serves the (gated) creation

    async def inject():
        cluster.double[f"post /api/v1/namespaces/{namespace}/pods"] << gate

    cluster.call(inject())
    sim.plan(namespace, JOB, outcomes=[None])
    job_factory(JOB, runPolicy={"pendingTimeoutSeconds": 1})
    wait_for(lambda: status_of(kube, namespace).get("reason") == "Queued", what="Queued")
    queued_at, passes = time.monotonic(), METRICS.passes()
    wait_for(
        lambda: time.monotonic() - queued_at > 2.5 and METRICS.passes() >= passes + 2,
        timeout=30,
        what="well past pendingTimeoutSeconds",
    )
    status = status_of(kube, namespace)
    assert (status["state"], status["reason"]) == ("Pending", "Queued"), status
    assert condition(status, "Queued")["status"] == "True"
    assert "kueue.x-k8s.io/admission" in status["message"]
    assert not [r for t, r in reasons(sim, namespace) if t == "Warning"]
    # Admitted: Kueue removes the gates; the pods are scheduled and run.
    for pod in kube.list(k8s.PODS, namespace, {names.LABEL_JOB_NAME: JOB}):
        kube.patch(k8s.PODS, namespace, pod["metadata"]["name"], {"spec": {"schedulingGates": None}})
    wait_for(lambda: status_of(kube, namespace).get("state") == "Running", what="Running once admitted")
    assert condition(status_of(kube, namespace), "Queued")["status"] == "False"
