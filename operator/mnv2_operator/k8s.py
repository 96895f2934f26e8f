"""The one seam to the Kubernetes API: every call the operator makes goes through `Kube`.

Objects travel as plain dicts (what the renderers produce and `compute_status` reads), so the
`kubernetes` client is used only for its configuration and transport (`ApiClient.call_api`), never
for its models. API errors become three exception types by status code (like kopf's own mapping):
`NotFound` (404), `Conflict` (409: already exists, or a stale resourceVersion) and `ApiError`.
`rbac.RULES` lists exactly the (resource, verb) pairs the methods below are called with; a test
checks the two against each other.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from mnv2_operator import api

USER_AGENT = "mnv2-operator"


class ApiError(Exception):
    """A Kubernetes API call failed; `status` is the HTTP status (0 when no response came)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
        if subresource is not None:
            base += f"/{subresource}"
        return base


JOBS = Resource(api.GROUP, api.VERSION, api.PLURAL)
PODS = Resource("", "v1", "pods")
SERVICES = Resource("", "v1", "services")
CONFIGMAPS = Resource("", "v1", "configmaps")
EVENTS = Resource("", "v1", "events")
PODGROUPS = Resource("scheduling.volcano.sh", "v1beta1", "podgroups")
NODES = Resource("", "v1", "nodes", namespaced=False)

_BY_KIND = {
    ("v1", "Pod"): PODS,
    ("v1", "Service"): SERVICES,
    ("v1", "ConfigMap"): CONFIGMAPS,
    ("v1", "Event"): EVENTS,
    ("scheduling.volcano.sh/v1beta1", "PodGroup"): PODGROUPS,
    (api.API_VERSION, api.KIND): JOBS,
}


def resource_of(obj: dict[str, Any]) -> Resource:
    """The resource of a rendered object (only kinds the operator creates)."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in _BY_KIND:
        raise ApiError(0, f"the operator does not manage objects of kind {key[1]} ({key[0]})")
    return _BY_KIND[key]


class RateLimiter:
    """client-go's token bucket: `qps` requests a second on average, bursts of up to `burst`.

    A caller reserves a token and sleeps until it is due (tokens may go negative), so concurrent
    callers queue in order instead of spinning. qps <= 0: no limit."""

    def __init__(self, qps: float, burst: int, clock: Any = time.monotonic, sleep: Any = time.sleep):
        self.qps, self.burst = qps, max(1, burst)
        self._tokens = float(self.burst)
        self._clock, self._sleep = clock, sleep
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token; returns the seconds waited."""
        if self.qps <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
            self._last = now
            self._tokens -= 1.0
            wait = -self._tokens / self.qps if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


class Kube:
    """Thin dict-in, dict-out client; thread-safe (one urllib3 pool, per-call requests)."""

    def __init__(self, api_client: Any, user_agent: str = USER_AGENT, limiter: RateLimiter | None = None):
        self._client = api_client
        self._client.user_agent = user_agent
        self._limiter = limiter

    @classmethod
    def from_environment(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        user_agent: str = "",
        qps: float = 0.0,
        burst: int = 1,
        pool_size: int = 32,
    ) -> Kube:
        """A client configured by `configuration` (in-cluster, then kubeconfig), rate-limited to
        `qps`/`burst` when qps > 0, with `pool_size` connections for concurrent callers."""
        import kubernetes

        config = configuration(kubeconfig, context)
        config.connection_pool_maxsize = pool_size
        limiter = RateLimiter(qps, burst) if qps > 0 else None
        return cls(kubernetes.client.ApiClient(config), user_agent or USER_AGENT, limiter)

    def close(self) -> None:
        self._client.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        headers = {"Accept": "application/json", "Content-Type": content_type}
        verb = _verb(method, path, query)
        if self._limiter is not None:
            self._limiter.acquire()
        try:
            request = self._client.param_serialize(
                method,
                path,
                query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self._client.call_api(*request, _request_timeout=(5, 30))
            response.read()
        except ApiException as error:
            _count(verb, path, error.status or 0)
            raise ApiError(error.status or 0, f"{method} {path}: {error.reason}") from None
        except HTTPError as error:
            _count(verb, path, 0)
            raise ApiError(0, f"{method} {path}: {error}") from None
        _count(verb, path, response.status)
        data = response.data
        if not 200 <= response.status <= 299:
            raise _mapped(response.status, data.decode(errors="replace") if data else "")
        return json.loads(data) if data else {}

    # -- reads ---------------------------------------------------------------------------------

    def get(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return self._call("GET", resource.path(namespace, name))
        except NotFound:
            return None

    def list(
        self, resource: Resource, namespace: str | None, labels: dict[str, str] | None = None
    ) -> list[dict]:
        selector = ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or None
        body = self._call("GET", resource.path(namespace), query={"labelSelector": selector})
        return list(body.get("items") or [])

    # -- writes --------------------------------------------------------------------------------

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create; raises Conflict when an object of that name already exists."""
        resource = resource_of(obj)
        namespace = obj.get("metadata", {}).get("namespace")
        return self._call("POST", resource.path(namespace), body=obj)

    def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """JSON merge patch (RFC 7386); put metadata.resourceVersion in it for an optimistic-lock write."""
        return self._call(
            "PATCH",
            resource.path(namespace, name, subresource),
            body=patch,
            content_type="application/merge-patch+json",
        )

    def json_patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        operations: list[dict[str, Any]],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """JSON patch (RFC 6902); a failing `test` operation is refused (422) and changes nothing."""
        return self._call(
            "PATCH",
            resource.path(namespace, name, subresource),
            body=operations,
            content_type="application/json-patch+json",
        )

    def delete(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        *,
        uid: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> bool:
        """Delete in the background (dependents by the garbage collector); False when already gone.

        With `uid`, only that incarnation is deleted (a precondition): a pod recreated meanwhile
        under the same name survives. `grace_period_seconds=0` removes a pod at once, without the
        kubelet's confirmation (a force deletion: only for pods whose node is gone).
        """
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
        }
        if uid is not None:
            body["preconditions"] = {"uid": uid}
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        try:
            self._call("DELETE", resource.path(namespace, name), body=body)
            return True
        except NotFound:
            return False


def _verb(method: str, path: str, query: dict[str, Any] | None) -> str:
    """The RBAC verb of a request (as kube-apiserver's audit names it)."""
    if method == "GET":
        if (query or {}).get("watch"):
            return "watch"
        return "list" if _resource_name(path)[1] is None else "get"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
        method, method.lower()
    )


def _resource_name(path: str) -> tuple[str, str | None]:
    """(plural[/subresource], name or None) of an API path."""
    parts = [p for p in path.split("/") if p]
    parts = parts[2:] if parts[0] == "api" else parts[3:]  # drop api/v1 or apis/<group>/<version>
    if len(parts) >= 2 and parts[0] == "namespaces" and len(parts) > 2:
        parts = parts[2:]
    plural = parts[0]
    name = parts[1] if len(parts) > 1 else None
    if len(parts) > 2:
        plural = f"{plural}/{parts[2]}"
    return plural, name


def _count(verb: str, path: str, code: int) -> None:
    from mnv2_operator.metrics import METRICS

    METRICS.api_request(verb, _resource_name(path)[0], code)


def merge_patch(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`: only what differs, removed keys
    as null (a plain `{"status": new}` patch would leave removed fields in place for ever)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value)
    return patch


def configuration(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """The kubernetes client Configuration: a given kubeconfig; else the in-cluster service account;
    else $KUBECONFIG or ~/.kube/config, read now (the client library reads $KUBECONFIG once, at
    import). Kopf's login uses the same, so both clients always talk to the same server as the same user.
    """
    import os

    import kubernetes

    config = kubernetes.client.Configuration()
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=config)
            return config
        except kubernetes.config.ConfigException:
            kubeconfig = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    kubernetes.config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=config)
    return config


def _mapped(status: int, body: str) -> ApiError:
    message = body
    with contextlib.suppress(ValueError, AttributeError):  # not a Status object: keep the raw body
        message = json.loads(body).get("message") or body
    if status == 404:
        return NotFound(status, message)
    if status == 409:
        return Conflict(status, message)
    return ApiError(status, message)


_shared: Kube | None = None
_shared_lock = threading.Lock()


def shared(kubeconfig: str | None = None, qps: float = 0.0, burst: int = 1) -> Kube:
    """The process's client, created on first use (handlers run in threads and share it); all the
    operator's requests share its rate limit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Kube.from_environment(kubeconfig, qps=qps, burst=burst)
        return _shared


def reset_shared() -> None:
    """Forget the process's client (tests point the operator at a new API server)."""
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.close()
        _shared = None
