"""The API-server double behaves like the real server where the operator depends on it.

Exercised over HTTP with the same client the operator uses (plus aiohttp for watch streams). On a
real cluster (MNV2_E2E_KUBECONFIG) these are skipped: they test the double, not Kubernetes.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from apiserver_double import label_selector_matches
from harness import wait_for
from mnv2_operator import k8s

CMS = k8s.CONFIGMAPS


@pytest.fixture(autouse=True)
def _double_only(cluster):
    if not cluster.simulated:
        pytest.skip("tests the API-server double itself")


def configmap(namespace: str, name: str, labels: dict | None = None, owner: dict | None = None) -> dict:
    meta: dict = {"name": name, "namespace": namespace, "labels": labels or {}}
    if owner is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
            }
        ]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}}


def test_server_fields_and_resource_versions(kube, namespace):
    created = kube.create(configmap(namespace, "a"))
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and meta["namespace"] == namespace
    rv1 = int(meta["resourceVersion"])
    patched = kube.patch(CMS, namespace, "a", {"data": {"k": "w"}})
    assert int(patched["metadata"]["resourceVersion"]) > rv1
    same = kube.patch(CMS, namespace, "a", {"data": {"k": "w"}})
    assert same["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]  # no-op write


def test_conflicts(kube, namespace):
    kube.create(configmap(namespace, "a"))
    with pytest.raises(k8s.Conflict, match="already exists"):
        kube.create(configmap(namespace, "a"))
    current = kube.get(CMS, namespace, "a")
    kube.patch(CMS, namespace, "a", {"data": {"k": "1"}})
    stale = {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]}, "data": {"k": "2"}}
    with pytest.raises(k8s.Conflict, match="modified"):
        kube.patch(CMS, namespace, "a", stale)
    with pytest.raises(k8s.Conflict, match="Precondition"):
        kube.delete(CMS, namespace, "a", uid="not-the-uid")
    assert kube.delete(CMS, namespace, "a", uid=current["metadata"]["uid"]) is True
    assert kube.delete(CMS, namespace, "a") is False


def test_patch_types_and_status_subresource(kube, namespace, job_factory):
    job = job_factory("p")
    assert job["metadata"]["generation"] == 1
    # The main resource ignores status; /status ignores everything else.
    kube.patch(k8s.JOBS, namespace, "p", {"status": {"state": "Running"}, "metadata": {"labels": {"a": "b"}}})
    job = kube.get(k8s.JOBS, namespace, "p")
    assert "status" not in job and job["metadata"]["labels"] == {"a": "b"}
    assert job["metadata"]["generation"] == 1  # metadata changes do not bump the generation
    kube.patch(
        k8s.JOBS,
        namespace,
        "p",
        {"status": {"state": "Running"}, "spec": {"replicas": 9}},
        subresource="status",
    )
    job = kube.get(k8s.JOBS, namespace, "p")
    assert job["status"] == {"state": "Running"} and job["spec"]["replicas"] == 2
    kube.patch(k8s.JOBS, namespace, "p", {"spec": {"runPolicy": {"backoffLimit": 5}}})
    assert kube.get(k8s.JOBS, namespace, "p")["metadata"]["generation"] == 2
    path = k8s.JOBS.path(namespace, "p")
    kube._call(
        "PATCH",
        path,
        body=[{"op": "replace", "path": "/spec/runPolicy/backoffLimit", "value": 4}],
        content_type="application/json-patch+json",
    )
    kube._call(
        "PATCH",
        path,
        body={"metadata": {"labels": {"a": None, "c": "d"}}},
        content_type="application/strategic-merge-patch+json",
    )
    job = kube.get(k8s.JOBS, namespace, "p")
    assert job["spec"]["runPolicy"]["backoffLimit"] == 4 and job["metadata"]["labels"] == {"c": "d"}
    with pytest.raises(k8s.ApiError, match="415"):
        kube._call("PATCH", path, body={}, content_type="application/apply-patch+yaml")


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=x", ["a", "b"]),
        ("app=x,tier!=db", ["a"]),
        ("tier in (db, web)", ["b", "c"]),
        ("tier notin (db)", ["a", "c"]),
        ("tier", ["b", "c"]),
        ("!tier", ["a"]),
    ],
)
def test_label_selectors(kube, namespace, selector, expected):
    for name, labels in (("a", {"app": "x"}), ("b", {"app": "x", "tier": "db"}), ("c", {"tier": "web"})):
        kube.create(configmap(namespace, name, labels))
    items = kube._call("GET", CMS.path(namespace), query={"labelSelector": selector})["items"]
    assert sorted(i["metadata"]["name"] for i in items) == expected
    assert label_selector_matches(selector, {"app": "x"}) is ("a" in expected)


def test_watch_replays_from_a_resource_version_and_ends_on_timeout(cluster, kube, namespace):
    first = kube.create(configmap(namespace, "a"))
    since = first["metadata"]["resourceVersion"]
    kube.patch(CMS, namespace, "a", {"data": {"k": "2"}})
    kube.create(configmap(namespace, "b", {"x": "y"}))
    kube.delete(CMS, namespace, "a")

    async def watch() -> list[tuple[str, str]]:
        url = f"{cluster.url}{CMS.path(namespace)}?watch=true&resourceVersion={since}&timeoutSeconds=1"
        events = []
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            async for line in response.content:
                if line.strip():
                    event = json.loads(line)
                    events.append((event["type"], event["object"]["metadata"]["name"]))
        return events

    events = cluster.call(asyncio.wait_for(watch(), 10))
    assert events == [("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a")]


def test_finalizers_and_owner_garbage_collection(kube, namespace):
    owner = kube.create(configmap(namespace, "owner"))
    kube.create(configmap(namespace, "child", owner=owner))
    kube.patch(CMS, namespace, "owner", {"metadata": {"finalizers": ["example.com/hold"]}})
    kube.delete(CMS, namespace, "owner")
    held = kube.get(CMS, namespace, "owner")
    assert held is not None and held["metadata"]["deletionTimestamp"]
    assert kube.get(CMS, namespace, "child") is not None  # the owner still exists
    kube.patch(CMS, namespace, "owner", {"metadata": {"finalizers": None}})
    assert kube.get(CMS, namespace, "owner") is None
    wait_for(lambda: kube.get(CMS, namespace, "child") is None, timeout=10, what="child collected")


def test_injected_fault_prevents_the_write(cluster, kube, namespace):
    async def inject() -> None:
        cluster.double[f"post /api/v1/namespaces/{namespace}/configmaps"] << 500

    cluster.call(inject())
    with pytest.raises(k8s.ApiError, match="500"):
        kube.create(configmap(namespace, "a"))
    assert kube.get(CMS, namespace, "a") is None
