"""RBAC: `rbac.RULES` grants exactly the API calls the operator (our client and kopf's) makes.

On a fresh double that records every call: (1) a cluster-wide operator with kopf peering runs an
Ascend gang job through rank-table completion, a lost node (its pod force-deleted after the grace
period), a restart, success and TTL deletion; (2) a namespaced operator with peering and a namespace
pattern starts and peers. The calls are then checked against RULES both ways: nothing is called
without a grant, and nothing is granted that is never called (except the grants admission checks
instead of a call: rbac.ADMISSION_ONLY, `update` on the job's finalizers for blockOwnerDeletion).
"""

from __future__ import annotations

import json
import os

import pytest
from harness import DoubleCluster, OperatorRunner, job_manifest, wait_for
from mnv2_operator import api, k8s, names, rbac

OPERATOR_CLIENTS = {"kopf", k8s.USER_AGENT}
# Reads the operator makes only after a 409 (passes read the job and pods from watch caches): a
# stale cache (the job is read afresh) or a child's name already taken (is it ours?). Exercised by
# tests/operator/test_reconciler.py and the name-conflict scenarios of test_lifecycle.py.
ON_CONFLICT_ONLY = {(api.GROUP, api.PLURAL, "get"), ("", "services", "get")}
CLUSTER_PEERINGS = k8s.Resource("kopf.dev", "v1", "clusterkopfpeerings", namespaced=False)
PEERINGS = k8s.Resource("kopf.dev", "v1", "kopfpeerings")


@pytest.fixture
def audited(cluster, tmp_path):
    if not cluster.simulated:
        pytest.skip("needs the double's record of API calls")
    double = DoubleCluster(tmp_path).start()
    previous = os.environ["KUBECONFIG"]
    os.environ["KUBECONFIG"] = str(double.kubeconfig)
    try:
        yield double
    finally:
        os.environ["KUBECONFIG"] = previous
        k8s.reset_shared()
        double.stop()


def _rank_table_status(kube: k8s.Kube) -> str | None:
    cm = kube.get(k8s.CONFIGMAPS, "default", names.rank_table_configmap_name("audit")) or {}
    return json.loads((cm.get("data") or {}).get("hccl.json", "{}")).get("status")


def _running_again(kube: k8s.Kube) -> bool:
    status = (kube.get(k8s.JOBS, "default", "audit") or {}).get("status") or {}
    return status.get("restartCount") == 1 and status.get("state") == "Running"


def test_rules_match_the_calls_made(audited, tmp_path):
    kube = k8s.Kube.from_environment(str(audited.kubeconfig), user_agent="mnv2-e2e")
    sim = audited.sim
    kube._call(
        "POST",
        CLUSTER_PEERINGS.path(),
        body={"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "mnv2-e2e"}},
    )
    sim.plan("default", "audit", outcomes=[None, None])
    config = tmp_path / "operator.yaml"
    config.write_text("terminationGracePeriodSeconds: 1\n")
    operator = OperatorRunner(
        [],
        clusterwide=True,
        peering="mnv2-e2e",
        config_path=str(config),
        restart_backoff_seconds=0.2,
    ).start()
    try:
        kube.create(
            job_manifest(
                "audit",
                "default",
                platform="Ascend",
                replicas=2,
                scheduling={"gang": True, "gangScheduler": "volcano"},
                runPolicy={"ttlSecondsAfterFinished": 1},
            )
        )
        wait_for(lambda: _rank_table_status(kube) == "completed", what="rank table completed")
        sim.node_lost("node-1")  # audit-1 stays Terminating: the operator reads the node, force-deletes
        wait_for(lambda: _running_again(kube), what="restarted")
        sim.node_recovered("node-1")
        wait_for(lambda: _rank_table_status(kube) == "completed", what="rank table completed again")
        sim.terminate("default", "audit-0", 0)
        sim.terminate("default", "audit-1", 0)
        wait_for(lambda: kube.get(k8s.JOBS, "default", "audit") is None, what="job deleted by TTL")
    finally:
        operator.stop()

    kube._call(
        "POST",
        PEERINGS.path("default"),
        body={"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "mnv2-e2e"}},
    )
    operator = OperatorRunner(["def*"], peering="mnv2-e2e").start()
    try:
        wait_for(
            lambda: any(c[2] == "kopfpeerings" and c[3] == "patch" for c in audited.double.calls),
            what="namespaced peering",
        )
    finally:
        operator.stop()
        kube.close()

    made = {
        (group, resource, verb)
        for client, group, resource, verb in audited.double.calls
        if client in OPERATOR_CLIENTS
    }
    granted = {
        (group, resource, verb)
        for rule in rbac.RULES
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert sorted(made - granted) == [], "calls the chart's Role would refuse"
    assert sorted(granted - made - rbac.ADMISSION_ONLY - ON_CONFLICT_ONLY) == [], (
        "grants the operator never uses"
    )
