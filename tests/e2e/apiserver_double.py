"""An in-process Kubernetes API-server double: KMock's `KubernetesEmulator`, strict enough for an operator.

KMock 0.8 gives us the HTTP server, request parsing, API discovery, Kubernetes-shaped error bodies and
its reaction DSL (tests can still inject faults with `double['post /api/v1/namespaces/x/pods'] << 500`,
which take priority over the stored-object handlers below). Its emulator stores objects as plain merged
dicts; what a controller relies on is added here (REFERENCE §6): uid, creationTimestamp, a
resourceVersion bumped on every write and honoured by watches (`?watch=true&resourceVersion=N`
replays what happened after N, so a relisting operator misses nothing), label and field selectors,
`generation` bumped on spec changes, the status subresource (status ignored on the main resource and
vice versa), merge / JSON / strategic-merge (treated as merge) patches and PUT replacement, 409 on a
stale resourceVersion and on creating an existing name, finalizers with deletionTimestamp, background
garbage collection by ownerReferences, and Events. Objects live in KMock's `ObjectsArray`, so every
version is kept: `double.objects['v1/pods', ns, name].history` tells how often a pod was created.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import itertools
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import attrs
import jsonpatch
import kmock
from kmock._internal import apps, dicts, parsing

NAMESPACE_RES = kmock.resource("", "v1", "namespaces")

_kmock_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    """KMock 0.8 reads `/api/v1/namespaces[/NAME]` as a namespace prefix with nothing after it and
    fails; those URLs address the Namespace objects themselves."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        return parsing.ParsedPath("", "v1", "namespaces", None, parts[3] if len(parts) == 4 else None, None)
    return _kmock_parse_path(path)


parsing.parse_path = _parse_path
POD_RES = kmock.resource("", "v1", "pods")
CRD_RES = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")

# (group, version, plural): kind, namespaced, subresources. What the operator and kopf talk to.
RESOURCES: dict[tuple[str, str, str], tuple[str, bool, set[str]]] = {
    ("", "v1", "namespaces"): ("Namespace", False, set()),
    ("", "v1", "pods"): ("Pod", True, {"status"}),
    ("", "v1", "services"): ("Service", True, set()),
    ("", "v1", "configmaps"): ("ConfigMap", True, set()),
    ("", "v1", "events"): ("Event", True, set()),
    ("events.k8s.io", "v1", "events"): ("Event", True, set()),
    ("coordination.k8s.io", "v1", "leases"): ("Lease", True, set()),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions"): (
        "CustomResourceDefinition",
        False,
        {"status"},
    ),
    ("scheduling.volcano.sh", "v1beta1", "podgroups"): ("PodGroup", True, {"status"}),
    ("kopf.dev", "v1", "kopfpeerings"): ("KopfPeering", True, set()),
    ("kopf.dev", "v1", "clusterkopfpeerings"): ("ClusterKopfPeering", False, set()),
}
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}


def now_iso() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details={})


# --- selectors ---------------------------------------------------------------------------------

_SET_RE = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(text: str) -> list[str]:
    """Split on commas that are not inside a set's parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def label_selector_matches(selector: str | None, labels: dict[str, str]) -> bool:
    """Equality-, set- and existence-based label selectors, as `kubectl -l` understands them."""
    for term in _split_selector(selector or ""):
        if match := _SET_RE.match(term):
            key, op, values = match[1], match[2], {v.strip() for v in match[3].split(",") if v.strip()}
            if (op == "in") != (key in labels and labels[key] in values):
                return False
        elif "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def field_selector_matches(selector: str | None, obj: dict[str, Any]) -> bool:
    for term in _split_selector(selector or ""):
        negate = "!=" in term
        path, value = term.replace("==", "=").split("!=" if negate else "=", 1)
        actual: Any = obj
        for part in path.strip().split("."):
            actual = actual.get(part) if isinstance(actual, dict) else None
        if (str(actual if actual is not None else "") == value.strip()) == negate:
            return False
    return True


# --- the double ----------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class ApiServerDouble(kmock.KubernetesEmulator):
    """KMock's emulator with a controller-grade object store (see the module docstring)."""

    _rv: itertools.count = attrs.field(factory=lambda: itertools.count(1), init=False)
    _current_rv: int = attrs.field(default=0, init=False)
    _log: list[tuple[int, kmock.resource, dict[str, Any]]] = attrs.field(factory=list, init=False)
    # Replaced by a fresh event on every change; watchers wait on the one they saw (no lock to corrupt
    # when a wait is cancelled, unlike asyncio.Condition under wait_for in Python 3.11).
    _changed: asyncio.Event | None = attrs.field(default=None, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    gc_delay: float = 0.0
    # Every (client, apiGroup, resource, verb) served: the operator's RBAC rules are checked against it.
    calls: set[tuple[str, str, str, str]] = attrs.field(factory=set)
    # Called (in the server's loop) after every stored change: the kubelet simulator listens here.
    listeners: list[Callable[[str, kmock.resource, dict[str, Any]], None]] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.fallback[kmock.method.PUT] << self._serve_replace
        for (group, version, plural), (kind, namespaced, subresources) in RESOURCES.items():
            self.add_resource(
                group, version, plural, kind=kind, namespaced=namespaced, subresources=subresources
            )

    def _audit(self, request: kmock.Request) -> None:
        """Record (client, apiGroup, resource[/subresource], verb) for the RBAC check."""
        if request.resource is None or request.resource.plural is None:
            return  # discovery
        verb = {
            "GET": "watch" if request.params.get("watch") == "true" else ("get" if request.name else "list"),
            "POST": "create",
            "PATCH": "patch",
            "PUT": "update",
            "DELETE": "delete" if request.name else "deletecollection",
        }.get(str(request.method.value).upper())
        if verb is None:
            return
        client = (request.headers.get("User-Agent") or "").split("/")[0]
        resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
        self.calls.add((client, request.resource.group or "", resource, verb))

    def add_resource(
        self,
        group: str,
        version: str,
        plural: str,
        *,
        kind: str,
        namespaced: bool,
        subresources: Iterable[str] = (),
    ) -> None:
        """Make a resource discoverable and servable (e.g. the job's CRD)."""
        self.resources[kmock.resource(group, version, plural)] = kmock.ResourceInfo(
            kind=kind,
            namespaced=namespaced,
            verbs=VERBS,
            subresources=set(subresources),
            singular=kind.lower(),
        )

    # KMock's emulator mutates its store in `_handle` before any reaction runs; we mutate inside the
    # fallback handlers instead, so that an injected fault (a reaction) really prevents the write.
    # KMock also keeps every request for assertions and matches each new request against reactions by
    # scanning that history, which is quadratic over a long test session: keep only requests in flight.
    async def _handle(self, request: kmock.Request):  # type: ignore[override]
        self._audit(request)
        try:
            return await apps.RawHandler._handle(self, request)
        finally:
            with contextlib.suppress(ValueError):
                self._requests.remove(request)

    # -- helpers --------------------------------------------------------------------------------

    def _info(self, resource: kmock.resource | None) -> kmock.ResourceInfo:
        if resource is None or resource not in self.resources:
            raise _error(404, "NotFound", f"the server could not find the requested resource {resource}")
        return self.resources[resource]

    def _kind(self, resource: kmock.resource) -> str:
        return self._info(resource).kind or resource.plural.capitalize()

    def _api_version(self, resource: kmock.resource) -> str:
        return resource.version if not resource.group else f"{resource.group}/{resource.version}"

    def _live(self, resource: kmock.resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        key = (resource, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return self.objects[key].raw

    def live_objects(
        self, resource: kmock.resource | str, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """Current objects of a resource (all namespaces when namespace is None), deep copies."""
        resource = kmock.resource(resource)
        return [
            copy.deepcopy(obj.raw)
            for (res, ns, _), obj in list(self.objects.items())
            if res == resource and not obj.deleted and (namespace is None or ns == namespace)
        ]

    def get_object(self, resource: kmock.resource | str, namespace: str | None, name: str) -> dict | None:
        obj = self._live(kmock.resource(resource), namespace, name)
        return copy.deepcopy(obj) if obj is not None else None

    def creations(self, resource: kmock.resource | str, namespace: str | None, name: str) -> int:
        """How many times an object of this name was created (deleted versions included)."""
        key = (kmock.resource(resource), namespace, name)
        if key not in self.objects:
            return 0
        history = self.objects[key].history.raw
        return sum(1 for i, v in enumerate(history) if v is not None and (i == 0 or history[i - 1] is None))

    async def _record(self, kind: str, resource: kmock.resource, obj: dict[str, Any]) -> None:
        event = {"type": kind, "object": copy.deepcopy(obj)}
        self._log.append((int(obj["metadata"]["resourceVersion"]), resource, event))
        for listener in self.listeners:
            listener(kind, resource, event["object"])
        self._notify()

    def _notify(self) -> None:
        previous, self._changed = self._changed, asyncio.Event()
        if previous is not None:
            previous.set()

    def _bump(self, obj: dict[str, Any]) -> None:
        self._current_rv = next(self._rv)
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._current_rv)

    def _store(self, resource: kmock.resource, namespace: str | None, name: str, obj: dict[str, Any]) -> None:
        key = (resource, namespace, name)
        if key not in self.objects:
            self.objects[key] = obj
        else:
            self.objects[key].history.append(obj)

    # -- writes (also used directly by the kubelet simulator) ------------------------------------

    async def create(self, resource: kmock.resource, namespace: str | None, body: dict[str, Any]) -> dict:
        info = self._info(resource)
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name")
        if not name:
            raise _error(422, "Invalid", f"{self._kind(resource)}: metadata.name: Required value")
        namespace = namespace or meta.get("namespace") if info.namespaced else None
        if info.namespaced and not namespace:
            raise _error(422, "Invalid", "metadata.namespace: Required value")
        if (
            namespace is not None
            and resource != NAMESPACE_RES
            and self._live(NAMESPACE_RES, None, namespace) is None
        ):
            raise _error(404, "NotFound", f'namespaces "{namespace}" not found')
        if meta.get("namespace") not in (None, namespace):
            raise _error(
                400, "BadRequest", "the namespace of the object does not match the namespace on the request"
            )
        async with self._lock:
            if self._live(resource, namespace, name) is not None:
                raise _error(409, "AlreadyExists", f'{resource.plural} "{name}" already exists')
            if namespace is not None:
                meta["namespace"] = namespace
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_iso(), generation=1)
            meta.pop("deletionTimestamp", None)
            obj.setdefault("apiVersion", self._api_version(resource))
            obj.setdefault("kind", self._kind(resource))
            if "status" in info.subresources:
                obj.pop("status", None)
            if resource == POD_RES:
                obj["status"] = {"phase": "Pending"}
            self._bump(obj)
            self._store(resource, namespace, name, obj)
            await self._record("ADDED", resource, obj)
            if resource == CRD_RES:
                self._serve_crd(obj)
            return copy.deepcopy(obj)

    def _serve_crd(self, crd: dict[str, Any]) -> None:
        """A created CustomResourceDefinition is served at once (the real server takes a moment)."""
        spec = crd.get("spec") or {}
        for version in spec.get("versions") or []:
            if version.get("served", True):
                self.add_resource(
                    spec["group"],
                    version["name"],
                    spec["names"]["plural"],
                    kind=spec["names"]["kind"],
                    namespaced=spec.get("scope") == "Namespaced",
                    subresources=set(version.get("subresources") or {}),
                )

    async def update(
        self,
        resource: kmock.resource,
        namespace: str | None,
        name: str,
        change: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        subresource: str | None = None,
        expected_rv: str | None = None,
    ) -> dict:
        """Apply `change` (old -> new) with the API server's rules for subresources and versions."""
        info = self._info(resource)
        if subresource not in (None, "status") or (subresource and subresource not in info.subresources):
            raise _error(404, "NotFound", f"{resource.plural}/{subresource} is not served")
        async with self._lock:
            old = self._live(resource, namespace, name)
            if old is None:
                raise _error(404, "NotFound", f'{resource.plural} "{name}" not found')
            if expected_rv and expected_rv != old["metadata"]["resourceVersion"]:
                raise _error(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {resource.plural} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
                )
            new = copy.deepcopy(change(copy.deepcopy(old)))
            # Fields the server owns, whatever the client sent.
            for field in ("uid", "creationTimestamp", "namespace", "name", "generation", "deletionTimestamp"):
                if field in old["metadata"]:
                    new.setdefault("metadata", {})[field] = old["metadata"][field]
                else:
                    new.setdefault("metadata", {}).pop(field, None)
            if "status" in info.subresources:
                if subresource == "status":
                    new = {**old, "status": new.get("status", {}), "metadata": old["metadata"]}
                elif "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            if new == old:
                return copy.deepcopy(old)  # a no-op write changes nothing, like the real server
            if {k: v for k, v in new.items() if k not in ("metadata", "status")} != {
                k: v for k, v in old.items() if k not in ("metadata", "status")
            }:
                new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
            self._bump(new)
            meta = new["metadata"]
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                self._store(resource, namespace, name, new)
                self.objects[(resource, namespace, name)].delete()
                await self._record("DELETED", resource, new)
                self._collect_garbage(new)
            else:
                self._store(resource, namespace, name, new)
                await self._record("MODIFIED", resource, new)
            return copy.deepcopy(new)

    async def delete(
        self,
        resource: kmock.resource,
        namespace: str | None,
        name: str,
        *,
        propagation: str = "Background",
        preconditions: dict[str, str] | None = None,
    ) -> dict:
        self._info(resource)
        async with self._lock:
            old = self._live(resource, namespace, name)
            if old is None:
                raise _error(404, "NotFound", f'{resource.plural} "{name}" not found')
            for field, expected in (preconditions or {}).items():
                if expected and old["metadata"].get(field) != expected:
                    raise _error(
                        409,
                        "Conflict",
                        f"Precondition failed: {field} in precondition: {expected}, {field} in object meta: "
                        f"{old['metadata'].get(field)}",
                    )
            obj = copy.deepcopy(old)
            if obj["metadata"].get("finalizers"):
                if not obj["metadata"].get("deletionTimestamp"):
                    obj["metadata"]["deletionTimestamp"] = now_iso()
                    self._bump(obj)
                    self._store(resource, namespace, name, obj)
                    await self._record("MODIFIED", resource, obj)
                return obj
            self._bump(obj)
            self.objects[(resource, namespace, name)].history.append(obj)
            self.objects[(resource, namespace, name)].delete()
            await self._record("DELETED", resource, obj)
        if propagation != "Orphan":
            self._collect_garbage(obj)
        return obj

    def _collect_garbage(self, owner: dict[str, Any]) -> None:
        """Delete dependents in the background, as the garbage collector does (not in the request)."""
        uid = owner["metadata"]["uid"]

        async def collect() -> None:
            if self.gc_delay:
                await asyncio.sleep(self.gc_delay)
            for (resource, namespace, name), obj in list(self.objects.items()):
                if obj.deleted:
                    continue
                refs = obj.raw.get("metadata", {}).get("ownerReferences") or []
                if any(ref.get("uid") == uid for ref in refs):
                    with contextlib.suppress(kmock.KubernetesError):  # deleted meanwhile
                        await self.delete(resource, namespace, name)

        asyncio.get_running_loop().create_task(collect())

    # -- HTTP handlers ---------------------------------------------------------------------------

    async def _serve_create(self, request: kmock.Request) -> Any:
        if not isinstance(request.data, dict):
            raise _error(400, "BadRequest", "the body of the request was not a JSON object")
        obj = await self.create(request.resource, request.namespace, request.data)
        return kmock.Response(status=201, payload=obj)

    async def _serve_fetch(self, request: kmock.Request) -> Any:
        self._info(request.resource)
        obj = self._live(request.resource, request.namespace, request.name)
        if obj is None:
            raise _error(404, "NotFound", f'{request.resource.plural} "{request.name}" not found')
        return copy.deepcopy(obj)

    async def _serve_update(self, request: kmock.Request) -> Any:
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        patch = request.data
        if content_type == "application/json-patch+json":
            if not isinstance(patch, list):
                raise _error(400, "BadRequest", "a JSON patch must be a list of operations")

            def change(old: dict) -> dict:
                try:
                    return jsonpatch.apply_patch(old, patch)
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
                    raise _error(422, "Invalid", f"the JSON patch cannot be applied: {error}") from error

            expected = None
        elif content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(patch, dict):
                raise _error(400, "BadRequest", "a merge patch must be a JSON object")

            def change(old: dict) -> dict:
                try:
                    return dict(dicts.merge_patch_dict(old, patch))
                except ValueError as error:
                    raise _error(422, "Invalid", str(error)) from error

            expected = (patch.get("metadata") or {}).get("resourceVersion")
        else:
            raise _error(
                415, "UnsupportedMediaType", f"the patch content type {content_type!r} is not supported"
            )
        return await self.update(
            request.resource,
            request.namespace,
            request.name,
            change,
            subresource=request.subresource,
            expected_rv=expected,
        )

    async def _serve_replace(self, request: kmock.Request) -> Any:
        if request.resource is None or request.name is None or not isinstance(request.data, dict):
            raise _error(405, "MethodNotAllowed", "PUT needs an object URL and a JSON object")
        body = request.data
        return await self.update(
            request.resource,
            request.namespace,
            request.name,
            lambda old: body,
            subresource=request.subresource,
            expected_rv=(body.get("metadata") or {}).get("resourceVersion"),
        )

    async def _serve_delete(self, request: kmock.Request) -> Any:
        options = request.data if isinstance(request.data, dict) else {}
        propagation = (
            options.get("propagationPolicy") or request.params.get("propagationPolicy") or "Background"
        )
        return await self.delete(
            request.resource,
            request.namespace,
            request.name,
            propagation=propagation,
            preconditions=options.get("preconditions"),
        )

    def _select(self, request: kmock.Request, objs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        labels = request.params.get("labelSelector")
        fields = request.params.get("fieldSelector")
        return [
            obj
            for obj in objs
            if (request.namespace is None or obj["metadata"].get("namespace") == request.namespace)
            and label_selector_matches(labels, obj["metadata"].get("labels") or {})
            and field_selector_matches(fields, obj)
        ]

    async def _serve_list(self, request: kmock.Request) -> Any:
        self._info(request.resource)
        async with self._lock:
            items = self._select(request, self.live_objects(request.resource))
            rv = self._current_rv
        return {
            "apiVersion": self._api_version(request.resource),
            "kind": f"{self._kind(request.resource)}List",
            "metadata": {"resourceVersion": str(rv)},
            "items": items,
        }

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        self._info(request.resource)
        if self._changed is None:
            self._changed = asyncio.Event()
        since_text = request.params.get("resourceVersion") or ""
        timeout = float(request.params.get("timeoutSeconds") or 0) or None
        deadline = asyncio.get_running_loop().time() + timeout if timeout else None
        yield b""  # send the headers now: the client waits for them before reading events
        initial: list[dict[str, Any]] = []
        async with self._lock:
            if since_text in ("", "0"):
                initial = self._select(request, self.live_objects(request.resource))
                since = self._current_rv
            else:
                since = int(since_text)
            position = len(self._log) if since_text in ("", "0") else 0
        for obj in initial:
            yield {"type": "ADDED", "object": obj}
        while not self._closing:
            changed = self._changed
            fresh = [(rv, event) for rv, res, event in self._log[position:] if res == request.resource]
            position = len(self._log)
            for rv, event in fresh:
                if rv > since and self._select(request, [event["object"]]):
                    since = rv
                    yield copy.deepcopy(event)
            remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
            if remaining is not None and remaining <= 0:
                return
            if len(self._log) == position and changed is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=min(remaining or 1.0, 1.0))

    async def close(self) -> None:
        """End open watch streams so the server can stop."""
        self._closing = True
        self._notify()

    # -- conveniences for tests -----------------------------------------------------------------

    def events_for(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """Core/v1 Events whose involvedObject is `name` in `namespace`, oldest first."""
        events = [
            e
            for e in self.live_objects("v1/events", namespace)
            if (e.get("involvedObject") or e.get("regarding") or {}).get("name") == name
        ]
        return sorted(events, key=lambda e: int(e["metadata"]["resourceVersion"]))


def kubeconfig_for(url: str) -> dict[str, Any]:
    """A kubeconfig that points clients (kopf, the kubernetes client, kubectl) at the double."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "double", "cluster": {"server": url}}],
        "users": [{"name": "double", "user": {"token": "double"}}],
        "contexts": [{"name": "double", "context": {"cluster": "double", "user": "double"}}],
        "current-context": "double",
    }


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)


def main() -> None:
    """Serve a bare double (no simulator) until interrupted: `python apiserver_double.py KUBECONFIG`.

    Point MNV2_E2E_KUBECONFIG at the file to run the e2e suite in its real-cluster mode against it
    (the CRD is applied over HTTP, simulator scenarios skip), which checks that mode's own code.
    """
    import sys

    import yaml

    async def serve() -> None:
        double = ApiServerDouble()
        async with double, kmock.Server(double) as server:
            await double.create(NAMESPACE_RES, None, {"metadata": {"name": "default"}})
            with open(sys.argv[1], "w") as file:
                yaml.safe_dump(kubeconfig_for(str(server.url).rstrip("/")), file)
            print(f"serving on {server.url}, kubeconfig {sys.argv[1]}", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
