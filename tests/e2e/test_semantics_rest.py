"""Issue 12 on the strict double: a job at rest costs no writes, a TTL deletion is counted once.

The double prunes status with the CRD's schema like kube-apiserver (REFERENCE §7, CRD pruning), so a
field the operator writes but the schema does not declare would show up here as a write per pass.
"""

from __future__ import annotations

import time

from harness import OperatorRunner, wait_for
from mnv2_operator import k8s
from mnv2_operator.metrics import METRICS

JOB = "mnv2"
WRITES = ("create", "patch", "update", "delete")


def test_a_running_job_at_rest_makes_no_writes(kube, namespace, sim, job_factory):
    """Once Running and nothing changes, resync passes make no writes at all: no status patch, no
    event, no change of the job (kopf's writes included). On the first version every pass patched
    the status (conditions' observedGeneration was pruned, so the computed status always differed)."""
    # many resyncs, quickly
    runner = OperatorRunner([namespace], resync_seconds=0.2, progress_seconds=0.2).start()
    try:
        sim.plan(namespace, JOB, outcomes=[None])
        job_factory(JOB)
        wait_for(
            lambda: (
                ((kube.get(k8s.JOBS, namespace, JOB) or {}).get("status") or {}).get("state") == "Running"
            ),
            what="Running",
        )
        settled = METRICS.passes()
        wait_for(lambda: METRICS.passes() >= settled + 2, what="two passes after Running")
        version = kube.get(k8s.JOBS, namespace, JOB)["metadata"]["resourceVersion"]
        events, writes, start = len(sim.events(namespace, JOB)), METRICS.requests(), METRICS.passes()
        wait_for(lambda: METRICS.passes() >= start + 6, timeout=30, what="six resync passes")
        assert METRICS.requests() == writes, "the operator wrote while nothing changed"
        assert kube.get(k8s.JOBS, namespace, JOB)["metadata"]["resourceVersion"] == version
        assert len(sim.events(namespace, JOB)) == events
    finally:
        runner.stop()


def test_a_ttl_deletion_is_counted_once(kube, namespace, sim, job_factory):
    """jobs_deleted_total{job_namespace,platform} counts the TTL deletion once (the first version
    counted it when deleting and again on the DELETED watch event)."""
    counter = METRICS.deleted.labels(namespace, "CPU")
    runner = OperatorRunner([namespace]).start()
    try:
        sim.plan(namespace, JOB, outcomes=[{0: 0, 1: 0}])
        job_factory(JOB, runPolicy={"ttlSecondsAfterFinished": 1})
        wait_for(lambda: kube.get(k8s.JOBS, namespace, JOB) is None, what="job deleted by TTL")
        wait_for(lambda: counter._value.get() >= 1, what="the deletion counted")
        moment = time.monotonic()
        start = METRICS.passes()
        # Whatever the operator still does (nothing: the job is gone) must not count it again.
        wait_for(lambda: time.monotonic() - moment > 1.5 or METRICS.passes() > start + 3, what="a moment")
        assert counter._value.get() == 1
    finally:
        runner.stop()


def test_a_finished_job_without_ttl_costs_nothing(kube, namespace, sim, job_factory):
    """Issue 16: once finished, cleaned up per cleanPodPolicy and without a TTL, a job has no daemon
    and no timer (kopf stops a daemon whose `when` filter stops matching): no pass, no request."""
    from mnv2_operator import handlers

    # a daemon left running would show many passes at once
    runner = OperatorRunner([namespace], resync_seconds=0.2).start()
    try:
        sim.plan(namespace, JOB, outcomes=[{0: 0, 1: 0}])
        job_factory(JOB, runPolicy={"cleanPodPolicy": "All"})
        wait_for(
            lambda: (
                ((kube.get(k8s.JOBS, namespace, JOB) or {}).get("status") or {}).get("replicas", {})
                == {"pending": 0, "running": 0, "succeeded": 0, "failed": 0}
                and kube.get(k8s.JOBS, namespace, JOB)["status"]["state"] == "Succeeded"
            ),
            what="Succeeded and cleaned up",
        )
        wait_for(lambda: (namespace, JOB) not in handlers._WAKE, what="the daemon stopped")
        passes, requests, moment = (
            METRICS.passes(),
            METRICS.requests(("get", "list", *WRITES)),
            time.monotonic(),
        )
        wait_for(lambda: time.monotonic() - moment > 1.5, what="a few resync intervals")
        assert METRICS.passes() == passes and METRICS.requests(("get", "list", *WRITES)) == requests
        # A TTL added later needs the daemon again: it comes back and deletes the job.
        kube.patch(k8s.JOBS, namespace, JOB, {"spec": {"runPolicy": {"ttlSecondsAfterFinished": 0}}})
        wait_for(lambda: kube.get(k8s.JOBS, namespace, JOB) is None, what="deleted by the new TTL")
    finally:
        runner.stop()
