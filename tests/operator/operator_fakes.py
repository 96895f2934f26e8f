"""An in-memory stand-in for `k8s.Kube` that answers like kube-apiserver where the reconciler's
correctness depends on it, so Reconciler passes can be run and counted without a server:

- the job's status subresource is pruned and defaulted with the generated CRD's own schema
  (kube-apiserver's structural pruning, REFERENCE §7), and a merge patch (RFC 7386) is applied as
  the server applies it; a patch that changes nothing changes nothing;
- `metadata.resourceVersion` in a patch is an optimistic-lock precondition (409 on mismatch);
- delete honours a uid precondition; `gracePeriodSeconds` is recorded;
- every call is recorded as (verb, resource plural[/subresource], name), so a test counts writes.
The e2e suite runs the same reconciler against the HTTP double; this one is for pure, fast checks.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from mnv2_operator import k8s
from mnv2_operator.crd import stored_status

WRITES = ("create", "patch", "delete")


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.forced: list[str] = []
        self._rv = itertools.count(1)
        self._uid = itertools.count(1)

    # -- helpers for tests ------------------------------------------------------------------------

    def writes(self) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if c[0] in WRITES]

    def events(self) -> list[dict[str, Any]]:
        return [o for (plural, _, _), o in self.objects.items() if plural == "events"]

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object as if it existed already (no call recorded)."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{next(self._uid)}")
        meta.setdefault("creationTimestamp", "2026-11-27T12:00:00Z")
        meta["resourceVersion"] = str(next(self._rv))
        resource = k8s.resource_of(obj) if obj.get("kind") != "Node" else k8s.NODES
        self.objects[(resource.plural, meta.get("namespace"), meta["name"])] = obj
        return copy.deepcopy(obj)

    # -- the Kube interface -----------------------------------------------------------------------

    def get(self, resource: k8s.Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", resource.plural, name))
        found = self.objects.get((resource.plural, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def list(self, resource: k8s.Resource, namespace: str | None, labels: dict[str, str] | None = None):
        self.calls.append(("list", resource.plural, ""))
        return [
            copy.deepcopy(o)
            for (plural, ns, _), o in sorted(self.objects.items())
            if plural == resource.plural
            and ns == namespace
            and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in (labels or {}).items())
        ]

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        resource = k8s.resource_of(obj)
        meta = obj["metadata"]
        self.calls.append(("create", resource.plural, meta["name"]))
        if (resource.plural, meta.get("namespace"), meta["name"]) in self.objects:
            raise k8s.Conflict(409, f"{resource.plural} {meta['name']} already exists")
        obj = copy.deepcopy(obj)
        if resource == k8s.PODS:
            obj["status"] = {"phase": "Pending"}
        return self.put(obj)

    def _target(self, resource, namespace, name, subresource) -> tuple[tuple, dict[str, Any]]:
        """Record a patch call and return the stored object's key and the object (404 if absent)."""
        self.calls.append(("patch", resource.plural + (f"/{subresource}" if subresource else ""), name))
        key = (resource.plural, namespace, name)
        if key not in self.objects:
            raise k8s.NotFound(404, f"{name} not found")
        return key, self.objects[key]

    def _commit(self, key, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """Store `new` under a new resourceVersion unless it equals `old` (a no-op write keeps it)."""
        if new.get("status") is None:
            new.pop("status", None)
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new != old:
            new["metadata"]["resourceVersion"] = str(next(self._rv))
            self.objects[key] = new
        return copy.deepcopy(self.objects[key])

    def patch(self, resource, namespace, name, patch, *, subresource=None):
        key, old = self._target(resource, namespace, name, subresource)
        expected = (patch.get("metadata") or {}).get("resourceVersion")
        if expected and expected != old["metadata"]["resourceVersion"]:
            raise k8s.Conflict(409, "the object has been modified")
        if subresource == "status":
            new = copy.deepcopy(old)
            new["status"] = apply_merge_patch(old.get("status") or {}, patch.get("status") or {})
            if resource == k8s.JOBS:
                new["status"] = stored_status(new["status"])
        else:
            body = {k: v for k, v in patch.items() if k != "status"}
            new = apply_merge_patch(old, body)
            new["status"] = old.get("status")
        return self._commit(key, old, new)

    def json_patch(self, resource, namespace, name, operations, *, subresource=None):
        """Applied to the whole object, then (as kube-apiserver's status strategy does) only the
        status survives a /status write and everything but the status survives a main write."""
        import jsonpatch

        key, old = self._target(resource, namespace, name, subresource)
        try:
            patched = jsonpatch.apply_patch(old, operations)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
            raise k8s.ApiError(422, f"the JSON patch cannot be applied: {error}") from None
        if subresource == "status":
            new = copy.deepcopy(old)
            new["status"] = patched.get("status")
            if resource == k8s.JOBS and new["status"] is not None:
                new["status"] = stored_status(new["status"])
        else:
            new = patched
            new["status"] = old.get("status")
        return self._commit(key, old, new)

    def delete(self, resource, namespace, name, *, uid=None, grace_period_seconds=None) -> bool:
        self.calls.append(("delete", resource.plural, name))
        key = (resource.plural, namespace, name)
        if key not in self.objects:
            return False
        if uid is not None and self.objects[key]["metadata"].get("uid") != uid:
            raise k8s.Conflict(409, "Precondition failed: uid")
        if grace_period_seconds == 0:
            self.forced.append(name)
        del self.objects[key]
        return True
