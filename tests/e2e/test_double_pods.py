"""Pods on the double and its simulated kubelet and nodes, as Kubernetes documents them.

- Pod lifecycle, "Termination of Pods": DELETE gives a running pod deletionTimestamp and
  deletionGracePeriodSeconds (default terminationGracePeriodSeconds, 30); it stays (Terminating) until the
  kubelet confirms; `gracePeriodSeconds=0` (query or DeleteOptions) removes it at once ("Forced Pod
  termination"); a pod never scheduled, or already finished, is removed at once.
- Taints and Tolerations, "Taint based Evictions", and Pod disruption conditions: pods of an unreachable
  node get DisruptionTarget (DeletionByTaintManager) and are deleted; no kubelet confirms, so they stay
  Terminating until force-deleted; the pod garbage collector force-deletes pods of a deleted Node.
- API-initiated eviction (Eviction API): POST pods/<name>/eviction -> DisruptionTarget
  (EvictionByEvictionAPI) and a graceful deletion.
- Pod scheduling readiness: a pod with schedulingGates stays Pending with PodScheduled=False,
  reason SchedulingGated, and is scheduled once its gates are removed; gates can only be removed.
- Pod update rules: only a few spec fields may change (422 otherwise).
"""

from __future__ import annotations

import pytest
from harness import http, wait_for
from kubelet_sim import INDEX_LABEL, JOB_LABEL
from mnv2_operator import k8s

PODS = k8s.PODS


@pytest.fixture(autouse=True)
def _double_only(cluster):
    if not cluster.simulated:
        pytest.skip("tests the API-server double itself")


def pod(namespace: str, name: str, index: int = 0, **spec) -> dict:
    labels = {JOB_LABEL: f"sim-{name}", INDEX_LABEL: str(index)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec},
    }


def running(kube, namespace: str, name: str, index: int = 0, **spec) -> dict:
    kube.create(pod(namespace, name, index, **spec))
    return wait_for(
        lambda: (p := kube.get(PODS, namespace, name)) and p["status"].get("phase") == "Running" and p,
        timeout=10,
        what=f"{name} running",
    )


def barrier(kube, namespace: str, name: str, index: int = 5) -> None:
    """The kubelet handles events in order: once this new pod runs, it has handled every earlier one."""
    running(kube, namespace, name, index)


def conditions(obj: dict) -> dict[str, dict]:
    return {c["type"]: c for c in obj["status"].get("conditions") or []}


def test_graceful_deletion_waits_for_the_kubelet(cluster, kube, namespace, sim):
    running(kube, namespace, "a")
    sim.hold_termination(namespace, "a")
    code, body = http(cluster.url, "DELETE", PODS.path(namespace, "a"))
    assert code == 200 and body["metadata"]["deletionTimestamp"]
    assert body["metadata"]["deletionGracePeriodSeconds"] == 30
    barrier(kube, namespace, "b")
    assert kube.get(PODS, namespace, "a")["metadata"]["deletionTimestamp"]  # Terminating
    # A second DELETE with a longer grace period changes nothing.
    http(
        cluster.url, "DELETE", PODS.path(namespace, "a"), {"kind": "DeleteOptions", "gracePeriodSeconds": 60}
    )
    assert kube.get(PODS, namespace, "a")["metadata"]["deletionGracePeriodSeconds"] == 30
    sim.hold_termination(namespace, "a", held=False)  # the kubelet confirms
    assert kube.get(PODS, namespace, "a") is None
    # Not held: the kubelet confirms by itself.
    running(kube, namespace, "c", 1)
    kube.delete(PODS, namespace, "c")
    wait_for(lambda: kube.get(PODS, namespace, "c") is None, timeout=10, what="c confirmed")


@pytest.mark.parametrize("where", ["query", "body"])
def test_grace_period_zero_removes_at_once(cluster, kube, namespace, sim, where):
    running(kube, namespace, "a")
    sim.hold_termination(namespace, "a")
    if where == "query":
        code, _ = http(cluster.url, "DELETE", PODS.path(namespace, "a"), query={"gracePeriodSeconds": "0"})
    else:
        code, _ = http(
            cluster.url,
            "DELETE",
            PODS.path(namespace, "a"),
            {"kind": "DeleteOptions", "gracePeriodSeconds": 0},
        )
    assert code == 200 and kube.get(PODS, namespace, "a") is None


def test_unscheduled_pods_go_at_once(kube, namespace, sim):
    sim.plan(namespace, "sim-a", schedulable=False)
    kube.create(pod(namespace, "a"))
    wait_for(
        lambda: conditions(kube.get(PODS, namespace, "a")).get("PodScheduled"),
        timeout=10,
        what="scheduler verdict",
    )
    kube.delete(PODS, namespace, "a")
    assert kube.get(PODS, namespace, "a") is None


def test_lost_node_pods_are_evicted_and_stay_terminating(cluster, kube, namespace, sim):
    running(kube, namespace, "a", index=3)
    sim.node_lost("node-3")
    node = kube._call("GET", "/api/v1/nodes/node-3")
    assert {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}.items() <= node["spec"]["taints"][
        0
    ].items()
    assert conditions(node)["Ready"]["status"] == "Unknown"
    evicted = kube.get(PODS, namespace, "a")
    assert evicted["metadata"]["deletionTimestamp"]
    target = conditions(evicted)["DisruptionTarget"]
    assert target["status"] == "True" and target["reason"] == "DeletionByTaintManager"
    assert conditions(evicted)["Ready"]["status"] == "False"
    barrier(kube, namespace, "b")
    assert kube.get(PODS, namespace, "a") is not None  # no kubelet confirms: Terminating for ever
    kube.delete(PODS, namespace, "a", grace_period_seconds=0)  # force deletion
    assert kube.get(PODS, namespace, "a") is None
    sim.node_recovered("node-3")
    assert conditions(kube._call("GET", "/api/v1/nodes/node-3"))["Ready"]["status"] == "True"


def test_deleted_node_pods_are_garbage_collected(kube, namespace, sim):
    running(kube, namespace, "a", index=4)
    sim.node_lost("node-4")
    sim.delete_node("node-4")
    assert kube.get(PODS, namespace, "a") is None
    sim.node_recovered("node-4")  # recreated for later tests


def test_eviction_api_marks_the_disruption(cluster, kube, namespace, sim):
    running(kube, namespace, "a")
    sim.hold_termination(namespace, "a")
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": "a", "namespace": namespace},
    }
    code, _ = http(cluster.url, "POST", PODS.path(namespace, "a", "eviction"), eviction)
    assert code == 201
    evicted = kube.get(PODS, namespace, "a")
    assert evicted["metadata"]["deletionTimestamp"]
    assert conditions(evicted)["DisruptionTarget"]["reason"] == "EvictionByEvictionAPI"
    running(kube, namespace, "b", 1)
    sim.disrupt(namespace, "b", "PreemptionByScheduler")
    preempted = kube.get(PODS, namespace, "b")
    assert preempted is None or conditions(preempted)["DisruptionTarget"]["reason"] == "PreemptionByScheduler"
    sim.hold_termination(namespace, "a", held=False)


def test_scheduling_gates_hold_the_pod_until_removed(cluster, kube, namespace, sim):
    gates = [{"name": "kueue.x-k8s.io/admission"}]
    created = kube.create(pod(namespace, "a", schedulingGates=gates))
    gated = conditions(created)["PodScheduled"]
    assert created["status"]["phase"] == "Pending"
    assert gated["status"] == "False" and gated["reason"] == "SchedulingGated"
    barrier(kube, namespace, "b")
    assert not kube.get(PODS, namespace, "a")["spec"].get("nodeName")
    path = PODS.path(namespace, "a")
    more = {"spec": {"schedulingGates": [*gates, {"name": "example.com/more"}]}}
    code, status = http(cluster.url, "PATCH", path, more, content_type="application/merge-patch+json")
    assert code == 422 and status["details"]["causes"][0]["field"] == "spec.schedulingGates"
    code, _ = http(
        cluster.url,
        "PATCH",
        path,
        {"spec": {"schedulingGates": None}},
        content_type="application/merge-patch+json",
    )
    assert code == 200
    wait_for(
        lambda: kube.get(PODS, namespace, "a")["status"].get("phase") == "Running",
        timeout=10,
        what="scheduled",
    )


def test_pod_spec_is_immutable_but_for_images(cluster, kube, namespace, sim):
    running(kube, namespace, "a")
    path = PODS.path(namespace, "a")
    image = [{"op": "replace", "path": "/spec/containers/0/image", "value": "busybox:2"}]
    code, _ = http(cluster.url, "PATCH", path, image, content_type="application/json-patch+json")
    assert code == 200
    env = [{"op": "add", "path": "/spec/containers/0/env", "value": [{"name": "X", "value": "1"}]}]
    code, status = http(cluster.url, "PATCH", path, env, content_type="application/json-patch+json")
    assert code == 422 and "pod updates may not change fields" in status["message"]
