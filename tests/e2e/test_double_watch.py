"""Watches on the double, as API Concepts ("Efficient detection of changes", "Watch bookmarks") documents:

- a watch from a resourceVersion the server no longer keeps gets an ERROR event whose object is a
  Status with code 410 (reason Expired, "too old resource version"), and the stream ends: the client
  must list again;
- with `allowWatchBookmarks=true` the server sends BOOKMARK events carrying only the current
  metadata.resourceVersion (never without it);
- a watch with a label selector sees an object that stops matching as DELETED.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from mnv2_operator import k8s

CMS = k8s.CONFIGMAPS


@pytest.fixture(autouse=True)
def _double_only(cluster):
    if not cluster.simulated:
        pytest.skip("tests the API-server double itself")


def configmap(namespace: str, name: str, labels: dict | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
    }


def watch(cluster, path: str, **params: str) -> list[dict]:
    async def run() -> list[dict]:
        query = "&".join(f"{k}={v}" for k, v in {"watch": "true", **params}.items())
        events = []
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{cluster.url}{path}?{query}") as response,
        ):
            async for line in response.content:
                if line.strip():
                    events.append(json.loads(line))
        return events

    return cluster.call(asyncio.wait_for(run(), 10), timeout=15)


@pytest.fixture
def small_history(cluster):
    def configure(**values):
        async def apply():
            for key, value in values.items():
                setattr(cluster.double, key, value)

        cluster.call(apply())

    yield configure
    configure(history_limit=20000, bookmark_interval=5.0)


def test_watch_from_a_compacted_version_gets_410_gone(cluster, kube, namespace, small_history):
    first = kube.create(configmap(namespace, "a"))
    small_history(history_limit=3)
    for i in range(5):
        kube.create(configmap(namespace, f"b{i}"))
    events = watch(
        cluster, CMS.path(namespace), resourceVersion=first["metadata"]["resourceVersion"], timeoutSeconds="1"
    )
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert status["kind"] == "Status" and status["code"] == 410 and status["reason"] == "Expired"
    assert status["message"].startswith(f"too old resource version: {first['metadata']['resourceVersion']} (")
    # A fresh list gives a resourceVersion the server still has: watching from it works.
    listed = kube._call("GET", CMS.path(namespace))
    events = watch(
        cluster,
        CMS.path(namespace),
        resourceVersion=listed["metadata"]["resourceVersion"],
        timeoutSeconds="1",
    )
    assert all(e["type"] != "ERROR" for e in events)


def test_bookmarks_only_when_asked_for(cluster, kube, namespace, small_history):
    small_history(bookmark_interval=0.2)
    created = kube.create(configmap(namespace, "a"))
    since = created["metadata"]["resourceVersion"]
    events = watch(
        cluster, CMS.path(namespace), resourceVersion=since, timeoutSeconds="1", allowWatchBookmarks="true"
    )
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks and set(bookmarks[0]["object"]["metadata"]) == {"resourceVersion"}
    assert bookmarks[0]["object"]["kind"] == "ConfigMap"
    assert int(bookmarks[-1]["object"]["metadata"]["resourceVersion"]) >= int(since)
    events = watch(cluster, CMS.path(namespace), resourceVersion=since, timeoutSeconds="1")
    assert not [e for e in events if e["type"] == "BOOKMARK"]


def test_an_object_leaving_the_selector_is_deleted_for_the_watcher(cluster, kube, namespace):
    created = kube.create(configmap(namespace, "a", {"app": "x"}))
    kube.patch(CMS, namespace, "a", {"metadata": {"labels": {"app": "y"}}})
    kube.patch(CMS, namespace, "a", {"metadata": {"labels": {"app": "x"}}})
    since = created["metadata"]["resourceVersion"]
    events = watch(
        cluster, CMS.path(namespace), resourceVersion=since, timeoutSeconds="1", labelSelector="app%3Dx"
    )
    assert [e["type"] for e in events] == ["DELETED", "ADDED"]
