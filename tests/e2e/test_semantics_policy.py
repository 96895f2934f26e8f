"""Issue 13, in the operator: a job that breaks the namespace policy (mnv2_operator.policy, loaded
with the operator's configuration) is Failed with reason PolicyViolation naming the field and the
rule, with one Warning event, and nothing is created for it. (The chart's ValidatingAdmissionPolicy
would refuse it at admission where installed; the operator checks whatever got in.)"""

from __future__ import annotations

from harness import wait_for
from mnv2_operator import k8s, names

JOB = "mnv2"


def test_a_job_breaking_the_policy_fails_and_gets_nothing(kube, namespace, sim, operator, job_factory):
    job_factory(JOB, dataset={"volume": {"hostPath": {"path": "/etc"}}})
    job = wait_for(
        lambda: (
            ((kube.get(k8s.JOBS, namespace, JOB) or {}).get("status") or {}).get("state") == "Failed"
            and kube.get(k8s.JOBS, namespace, JOB)
        ),
        what="Failed",
    )
    status = job["status"]
    assert status["reason"] == "PolicyViolation"
    assert "spec.dataset.volume" in status["message"] and "hostPath" in status["message"]
    # The operator writes the status first and posts the transition's event after it (reconcile.py).
    warnings = wait_for(
        lambda: [e for e in sim.events(namespace, JOB) if e["type"] == "Warning"], what="the Warning event"
    )
    assert [e["reason"] for e in warnings] == ["PolicyViolation"]
    assert kube.list(k8s.PODS, namespace, {names.LABEL_JOB_NAME: JOB}) == []
    assert kube.get(k8s.SERVICES, namespace, JOB) is None
