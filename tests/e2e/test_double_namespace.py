"""Namespace deletion on the double, as Kubernetes documents it (Namespaces; Finalizers; API Concepts):
DELETE marks the namespace Terminating (deletionTimestamp, status.phase Terminating), new content is
refused with 403 ("unable to create new content in namespace ... because it is being terminated"),
everything in it is deleted, objects held by finalizers stay until released, and the namespace goes
once it is empty.
"""

from __future__ import annotations

import pytest
from harness import OPERATOR_FINALIZER, delete_namespace, http, job_manifest, wait_for
from mnv2_operator import k8s

CMS = k8s.CONFIGMAPS


@pytest.fixture(autouse=True)
def _double_only(cluster):
    if not cluster.simulated:
        pytest.skip("tests the API-server double itself")


def test_namespace_terminates_after_its_content(cluster, kube, namespace):
    kube.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "free", "namespace": namespace}}
    )
    held = {"name": "held", "namespace": namespace, "finalizers": ["example.com/hold"]}
    kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": held})
    code, body = http(cluster.url, "DELETE", f"/api/v1/namespaces/{namespace}")
    assert code == 200 and body["metadata"]["deletionTimestamp"] and body["status"]["phase"] == "Terminating"
    refused = {"metadata": {"name": "late"}}
    code, status = http(cluster.url, "POST", CMS.path(namespace), refused)
    assert code == 403 and status["reason"] == "Forbidden"
    assert (
        f"unable to create new content in namespace {namespace} because it is being terminated"
        in status["message"]
    )
    wait_for(lambda: kube.get(CMS, namespace, "free") is None, timeout=10, what="content deleted")
    assert kube.get(CMS, namespace, "held")["metadata"]["deletionTimestamp"]
    assert http(cluster.url, "GET", f"/api/v1/namespaces/{namespace}")[0] == 200  # still Terminating
    kube.patch(CMS, namespace, "held", {"metadata": {"finalizers": None}})
    wait_for(
        lambda: http(cluster.url, "GET", f"/api/v1/namespaces/{namespace}")[0] == 404,
        timeout=10,
        what="namespace gone",
    )


def test_the_fixture_releases_jobs_held_by_the_stopped_operators_finalizer(cluster, kube, namespace):
    """What the `namespace` fixture does after the operator stopped: kopf's finalizer would keep the job,
    and with it the namespace, Terminating for ever (the same on a real cluster)."""
    held = job_manifest("held", namespace)
    held["metadata"]["finalizers"] = [OPERATOR_FINALIZER, "example.com/other"]
    kube.create(held)
    delete_namespace(kube, namespace)
    job = kube.get(k8s.JOBS, namespace, "held")
    assert job["metadata"]["finalizers"] == ["example.com/other"]  # only the operator's is removed
    kube.patch(k8s.JOBS, namespace, "held", {"metadata": {"finalizers": None}})
    wait_for(
        lambda: http(cluster.url, "GET", f"/api/v1/namespaces/{namespace}")[0] == 404,
        timeout=10,
        what="namespace gone",
    )
