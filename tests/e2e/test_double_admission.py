"""Authentication, RBAC and admission on the double, as kube-apiserver answers them.

- Authenticating: a bearer token from the TokenRequest API (POST serviceaccounts/<name>/token)
  authenticates as `system:serviceaccount:<namespace>:<name>`; an unknown token is 401 Unauthorized.
- Using RBAC Authorization: a request the bound rules do not allow is 403 Forbidden,
  `<resource> is forbidden: User "<user>" cannot <verb> resource "<resource>" in API group "<group>" ...`.
- Admission controllers, OwnerReferencesPermissionEnforcement: setting `blockOwnerDeletion: true`
  needs `update` on the owner's `<plural>/finalizers`, else 403 "cannot set blockOwnerDeletion if an
  ownerReference refers to a resource you can't set finalizers on".
- Resource Quotas: a pod beyond a `pods` quota is 403 "exceeded quota: <name>, requested: pods=1, used:
  pods=N, limited: pods=N".
"""

from __future__ import annotations

import pytest
from harness import http, job_manifest
from mnv2_operator import api, k8s

RBAC = "/apis/rbac.authorization.k8s.io/v1"


@pytest.fixture(autouse=True)
def _double_only(cluster):
    if not cluster.simulated:
        pytest.skip("tests the API-server double itself")


def account(cluster, namespace: str, name: str, rules: list[dict]) -> str:
    """A ServiceAccount bound to `rules` in `namespace`, and a token for it."""
    url = cluster.url
    http(url, "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": name}})
    http(url, "POST", f"{RBAC}/namespaces/{namespace}/roles", {"metadata": {"name": name}, "rules": rules})
    binding = {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }
    http(url, "POST", f"{RBAC}/namespaces/{namespace}/rolebindings", binding)
    code, token = http(
        url, "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", {"spec": {}}
    )
    assert code == 201 and token["kind"] == "TokenRequest"
    return token["status"]["token"]


def child(namespace: str, name: str, owner: dict, block: bool) -> dict:
    ref = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": block,
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "ownerReferences": [ref]},
    }


def test_unknown_token_is_401_and_unbound_verbs_are_403(cluster, namespace):
    code, status = http(cluster.url, "GET", k8s.PODS.path(namespace), token="no-such-token")
    assert code == 401 and status["reason"] == "Unauthorized"
    token = account(
        cluster, namespace, "reader", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
    )
    code, _ = http(cluster.url, "GET", k8s.PODS.path(namespace), token=token)
    assert code == 200
    code, status = http(cluster.url, "GET", k8s.CONFIGMAPS.path(namespace), token=token)
    assert code == 403 and status["reason"] == "Forbidden"
    assert status["message"] == (
        f'configmaps is forbidden: User "system:serviceaccount:{namespace}:reader" cannot list resource '
        f'"configmaps" in API group "" in the namespace "{namespace}"'
    )
    code, status = http(
        cluster.url,
        "PATCH",
        k8s.JOBS.path(namespace, "x", "status"),
        {},
        token=token,
        content_type="application/merge-patch+json",
    )
    assert code == 403 and 'cannot patch resource "mobilenetv2trainjobs/status"' in status["message"]


def test_block_owner_deletion_needs_update_on_the_owners_finalizers(cluster, kube, namespace):
    owner = kube.create(job_manifest("owner", namespace))
    creator = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}]
    token = account(cluster, namespace, "creator", creator)
    path = k8s.CONFIGMAPS.path(namespace)
    code, status = http(cluster.url, "POST", path, child(namespace, "a", owner, block=True), token=token)
    assert code == 403 and status["reason"] == "Forbidden"
    assert status["message"] == (
        'configmaps "a" is forbidden: cannot set blockOwnerDeletion if an ownerReference refers to a '
        "resource you can't set finalizers on: , <nil>"
    )
    code, _ = http(cluster.url, "POST", path, child(namespace, "b", owner, block=False), token=token)
    assert code == 201
    finalizers = {"apiGroups": [api.GROUP], "resources": [f"{api.PLURAL}/finalizers"], "verbs": ["update"]}
    token = account(cluster, namespace, "owner-aware", [*creator, finalizers])
    code, _ = http(cluster.url, "POST", path, child(namespace, "c", owner, block=True), token=token)
    assert code == 201


def test_pod_quota_refuses_creation_beyond_the_limit(cluster, kube, namespace, sim):
    def pod(name: str) -> dict:
        return {"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}

    sim.set_pod_quota(namespace, 1)
    try:
        assert http(cluster.url, "POST", k8s.PODS.path(namespace), pod("a"))[0] == 201
        code, status = http(cluster.url, "POST", k8s.PODS.path(namespace), pod("b"))
        assert code == 403 and status["reason"] == "Forbidden"
        assert status["message"] == (
            'pods "b" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=1, limited: pods=1'
        )
    finally:
        sim.set_pod_quota(namespace, None)
    assert http(cluster.url, "POST", k8s.PODS.path(namespace), pod("b"))[0] == 201
