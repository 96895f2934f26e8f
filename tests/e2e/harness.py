"""The e2e harness: a cluster (the API-server double + kubelet simulator, or a real one) and the
real kopf operator running in a thread against it over HTTP.

Test code talks to the cluster only through `mnv2_operator.k8s.Kube` over HTTP, the same client the
operator uses, so a scenario reads the same on the double and on a real cluster. The simulator is
reached through `cluster.sim` (None on a real cluster: those scenarios skip).

Two identities, on the double and on a real cluster alike: `cluster.kubeconfig` is an administrator
(the tests), `cluster.operator_kubeconfig` is the chart's ServiceAccount with exactly the chart's RBAC
rules (charts/mobilenetv2-operator/rbac-rules.yaml, bound cluster-wide) and a TokenRequest token, so a
permission the operator lacks fails the suite instead of passing as cluster-admin.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import kmock
import yaml
from apiserver_double import CRD_RES, ApiServerDouble, kubeconfig_for
from kubelet_sim import JobPlan, Kubelet
from mnv2_operator import api, k8s
from mnv2_operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[2]
RBAC_RULES = ROOT / "charts" / "mobilenetv2-operator" / "rbac-rules.yaml"
OPERATOR_NAMESPACE = "mnv2-e2e-system"
OPERATOR_ACCOUNT = "mnv2-operator"
OPERATOR_ROLE = "mnv2-e2e-operator"
OPERATOR_FINALIZER = OperatorSettings.finalizer  # kopf's finalizer on every job (its default)

T = TypeVar("T")


class WaitTimeout(AssertionError):
    pass


def wait_for(check: Callable[[], T], *, timeout: float = 60.0, interval: float = 0.05, what: str = "") -> T:
    """Poll `check` until it returns something truthy; fail with the last value after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except k8s.ApiError as error:
            last = error
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what or check}: last value {last!r}")
        time.sleep(interval)


class SimHandle:
    """Synchronous access to the kubelet simulator, which lives in the double's event loop."""

    def __init__(self, cluster: DoubleCluster):
        self._cluster = cluster

    def plan(self, namespace: str, job: str, **fields: Any) -> JobPlan:
        plan = JobPlan(**fields)
        self._cluster.kubelet.plans[(namespace, job)] = plan
        return plan

    def terminate(self, namespace: str, pod: str, exit_code: int) -> None:
        self._cluster.call(self._cluster.kubelet.terminate(namespace, pod, exit_code))

    def evict(self, namespace: str, pod: str) -> None:
        self._cluster.call(self._cluster.kubelet.evict(namespace, pod))

    def annotate(self, namespace: str, pod: str) -> None:
        self._cluster.call(self._cluster.kubelet.annotate(namespace, pod))

    def gate_pod_creation(self, namespace: str) -> threading.Event:
        """Hold the next pod creation in `namespace` until the returned event is set (then it proceeds)."""
        opened = threading.Event()

        async def hold(request: kmock.Request) -> None:
            await asyncio.to_thread(opened.wait, 60)
            return None  # no payload of its own: the stored-object handler serves the request

        async def register() -> None:
            self._cluster.double[f"post /api/v1/namespaces/{namespace}/pods"] << hold

        self._cluster.call(register())
        return opened

    def delete(self, namespace: str, pod: str) -> None:
        """Force-delete a pod (grace period 0): it is gone at once."""
        self._cluster.call(self._cluster.kubelet.delete(namespace, pod))

    def disrupt(self, namespace: str, pod: str, reason: str = "EvictionByEvictionAPI") -> None:
        """DisruptionTarget (EvictionByEvictionAPI, PreemptionByScheduler, ...) then graceful deletion."""
        self._cluster.call(self._cluster.kubelet.disrupt(namespace, pod, reason))

    def node_lost(self, node: str, unreachable: bool = True) -> None:
        """The node goes unreachable (or NotReady): its pods are evicted and stay Terminating."""
        self._cluster.call(self._cluster.kubelet.node_lost(node, unreachable))

    def node_recovered(self, node: str) -> None:
        self._cluster.call(self._cluster.kubelet.node_recovered(node))

    def delete_node(self, node: str) -> None:
        """The Node object goes: the pod garbage collector force-deletes its pods."""
        self._cluster.call(self._cluster.kubelet.delete_node(node))

    def hold_termination(self, namespace: str, pod: str, held: bool = True) -> None:
        """Keep a deleted pod Terminating (its kubelet does not confirm); held=False confirms it now."""
        self._cluster.call(self._cluster.kubelet.set_hold(namespace, pod, held))

    def set_pod_quota(self, namespace: str, limit: int | None) -> None:
        """A ResourceQuota `pods: limit`: pod creations beyond it get 403 exceeded quota (None lifts it)."""
        self._cluster.call(self._async(lambda: self._cluster.double.set_pod_quota(namespace, limit)))

    def creations(self, resource: str, namespace: str, name: str) -> int:
        return self._cluster.call(
            self._async(lambda: self._cluster.double.creations(resource, namespace, name))
        )

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return self._cluster.call(self._async(lambda: self._cluster.double.events_for(namespace, name)))

    @staticmethod
    async def _async(fn: Callable[[], T]) -> T:
        return fn()


class DoubleCluster:
    """The API-server double and the simulator, served from their own thread and event loop."""

    simulated = True

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="apiserver-double", daemon=True)
        self.url = ""
        self.double: ApiServerDouble
        self.kubelet: Kubelet
        self.sim = SimHandle(self)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        from mnv2_operator.crd import generate_crd

        self.double = ApiServerDouble()
        async with self.double, kmock.Server(self.double) as server:
            self.url = str(server.url).rstrip("/")
            self.kubelet = Kubelet(self.double)
            self.kubelet.start()
            await self.double.create(kmock.resource("v1/namespaces"), None, {"metadata": {"name": "default"}})
            await self.double.create(CRD_RES, None, generate_crd())  # served with its schema, as applied
            self._ready.set()
            await self._stop.wait()
            await self.double.close()
            await self.kubelet.stop()

    def start(self) -> DoubleCluster:
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("the API-server double did not start")
        self.kubeconfig = self.workdir / "kubeconfig.yaml"
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig_for(self.url)))
        self.operator_kubeconfig = install_operator_identity(self.kubeconfig, self.workdir)
        return self

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def errors(self) -> list[BaseException]:
        return list(self.kubelet.errors)


class RealCluster:
    """A real cluster from MNV2_E2E_KUBECONFIG: the CRD is applied, nothing is simulated."""

    simulated = False
    sim = None

    def __init__(self, kubeconfig: str, workdir: Path):
        self.kubeconfig = Path(kubeconfig)
        self.workdir = workdir

    def start(self) -> RealCluster:
        from mnv2_operator.crd import generate_crd

        kube = k8s.Kube.from_environment(str(self.kubeconfig))
        crd = generate_crd()
        crds = k8s.Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", namespaced=False)
        try:
            kube._call("POST", crds.path(), body=crd)
        except k8s.Conflict:  # installed before (by the chart or an earlier run): bring it up to date
            current = kube._call("GET", crds.path(name=crd["metadata"]["name"]))
            crd["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            kube._call("PUT", crds.path(name=crd["metadata"]["name"]), body=crd)
        wait_for(lambda: kube.list(k8s.JOBS, "default") is not None, timeout=60, what="the CRD to be served")
        kube.close()
        self.operator_kubeconfig = install_operator_identity(self.kubeconfig, self.workdir)
        return self

    def stop(self) -> None:
        pass

    def errors(self) -> list[BaseException]:
        return []


NAMESPACES = k8s.Resource("", "v1", "namespaces", namespaced=False)
SERVICE_ACCOUNTS = k8s.Resource("", "v1", "serviceaccounts")
CLUSTER_ROLES = k8s.Resource("rbac.authorization.k8s.io", "v1", "clusterroles", namespaced=False)
CLUSTER_ROLE_BINDINGS = k8s.Resource(
    "rbac.authorization.k8s.io", "v1", "clusterrolebindings", namespaced=False
)


def _create_or_replace(kube: k8s.Kube, resource: k8s.Resource, body: dict[str, Any]) -> None:
    namespace = body["metadata"].get("namespace")
    try:
        kube._call("POST", resource.path(namespace), body=body)
    except k8s.Conflict:
        current = kube._call("GET", resource.path(namespace, body["metadata"]["name"]))
        body = {
            **body,
            "metadata": {**body["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]},
        }
        kube._call("PUT", resource.path(namespace, body["metadata"]["name"]), body=body)


def install_operator_identity(admin_kubeconfig: Path, workdir: Path) -> Path:
    """The chart's ServiceAccount with the chart's rules (a ClusterRole bound cluster-wide, as the chart
    does with `watchNamespaces: []`), and a kubeconfig with a TokenRequest token for it.

    The same calls on the double and on a real cluster: the double authorizes from these objects."""
    kube = k8s.Kube.from_environment(str(admin_kubeconfig), user_agent="mnv2-e2e")
    try:
        with contextlib.suppress(k8s.Conflict):
            kube._call(
                "POST",
                NAMESPACES.path(),
                body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}},
            )
        with contextlib.suppress(k8s.Conflict):
            account = {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": OPERATOR_ACCOUNT, "namespace": OPERATOR_NAMESPACE},
            }
            kube._call("POST", SERVICE_ACCOUNTS.path(OPERATOR_NAMESPACE), body=account)
        rules = yaml.safe_load(RBAC_RULES.read_text())
        role = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": OPERATOR_ROLE},
            "rules": rules,
        }
        _create_or_replace(kube, CLUSTER_ROLES, role)
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": OPERATOR_ROLE},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": OPERATOR_ROLE,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": OPERATOR_ACCOUNT, "namespace": OPERATOR_NAMESPACE}
            ],
        }
        _create_or_replace(kube, CLUSTER_ROLE_BINDINGS, binding)
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 6 * 3600},
        }
        token = kube._call(
            "POST", SERVICE_ACCOUNTS.path(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT, "token"), body=request
        )
    finally:
        kube.close()
    config = yaml.safe_load(Path(admin_kubeconfig).read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])["context"]
    cluster = next(c for c in config["clusters"] if c["name"] == context["cluster"])
    operator = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": OPERATOR_ACCOUNT, "user": {"token": token["status"]["token"]}}],
        "contexts": [{"name": "operator", "context": {"cluster": cluster["name"], "user": OPERATOR_ACCOUNT}}],
        "current-context": "operator",
    }
    path = workdir / "operator-kubeconfig.yaml"
    path.write_text(yaml.safe_dump(operator))
    return path


def create_namespace(kube: k8s.Kube) -> str:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kube._call(
        "POST", NAMESPACES.path(), body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    return name


def delete_namespace(kube: k8s.Kube, name: str) -> None:
    """Delete a test namespace; first release the jobs the (stopped) operator's kopf finalizer would
    hold, so that the namespace does not stay Terminating (Namespaces; Finalizers)."""
    with contextlib.suppress(k8s.ApiError):
        for job in kube._call("GET", k8s.JOBS.path(name)).get("items", []):
            finalizers = job["metadata"].get("finalizers") or []
            if OPERATOR_FINALIZER in finalizers:
                kept = [f for f in finalizers if f != OPERATOR_FINALIZER]
                with contextlib.suppress(k8s.ApiError):
                    kube.patch(
                        k8s.JOBS, name, job["metadata"]["name"], {"metadata": {"finalizers": kept or None}}
                    )
    with contextlib.suppress(k8s.ApiError):
        kube.delete(NAMESPACES, None, name)


class OperatorRunner:
    """The real operator (`kopf.operator` with our handlers) in a thread, stoppable and restartable."""

    # Test-speed settings; any OperatorSettings field given to the constructor wins over these.
    # Restarts wait 0.2 s doubling to 1 s (not the Job controller's 10 s to 6 min) so that a test
    # restarting a job is seconds long.
    FAST = {
        "watch_server_timeout": 5,
        "watch_client_timeout": 8.0,
        "watch_connect_timeout": 2.0,
        "watch_inactivity_timeout": 15.0,
        "reconnect_backoff": 0.2,
        "resync_seconds": 3.0,
        "progress_seconds": 1.0,
        "request_timeout": 10.0,
        "restart_backoff_seconds": 0.2,
        "restart_backoff_max_seconds": 1.0,
    }

    def __init__(self, namespaces: list[str], **overrides: Any):
        from mnv2_operator.settings import OperatorSettings

        settings = {**self.FAST, "kubeconfig": os.environ.get("KUBECONFIG"), **overrides}
        self.settings = OperatorSettings(namespaces=namespaces, **settings)
        self._thread: threading.Thread | None = None
        self._stop_flag: threading.Event | None = None
        self.error: BaseException | None = None

    def start(self, timeout: float = 20.0) -> OperatorRunner:
        import kopf
        from mnv2_operator import handlers  # noqa: F401  (registers the handlers)
        from mnv2_operator import settings as operator_settings

        operator_settings.use(self.settings)
        k8s.reset_shared()
        self._stop_flag = threading.Event()
        ready = threading.Event()

        def main() -> None:
            try:
                asyncio.run(
                    kopf.operator(
                        namespaces=self.settings.namespaces,
                        clusterwide=self.settings.clusterwide,
                        standalone=self.settings.peering is None,
                        peering_name=self.settings.peering,
                        stop_flag=self._stop_flag,
                        ready_flag=ready,
                    )
                )
            except BaseException as error:  # reported by the fixture
                self.error = error
                ready.set()

        self._thread = threading.Thread(target=main, name="kopf-operator", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("the operator did not become ready")
        if self.error is not None:
            raise RuntimeError(f"the operator failed to start: {self.error!r}")
        return self

    def signal_stop(self) -> None:
        """Ask the operator to stop (like SIGTERM) without waiting for it."""
        if self._stop_flag is not None:
            self._stop_flag.set()

    def stop(self, timeout: float = 20.0) -> None:
        if self._thread is None or self._stop_flag is None:
            return
        self._stop_flag.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("the operator did not stop in time")
        self._thread = None


def executor() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=2)


def kubeconfig_env(path: Path) -> None:
    os.environ["KUBECONFIG"] = str(path)


def job_manifest(name: str, namespace: str, platform: str = "CPU", replicas: int = 2, **spec: Any) -> dict:
    """A small valid MobileNetV2TrainJob; keyword arguments are merged into spec (camelCase)."""
    devices = {"CPU": 1, "GPU": 2, "Ascend": 2}[platform]
    body: dict[str, Any] = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "platform": platform,
            "replicas": replicas,
            "devicesPerReplica": devices,
            "dataset": {"volume": {"persistentVolumeClaim": {"claimName": "imagenet"}}},
            "output": {"volume": {"persistentVolumeClaim": {"claimName": "checkpoints"}}},
            "scheduling": {"gang": False},
            "training": {"epochs": 1, "warmupEpochs": 0, "batchSize": 8, "imageSize": 32, "widthMult": 0.25},
        },
    }
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(body["spec"].get(key), dict):
            body["spec"][key] = {**body["spec"][key], **copy.deepcopy(value)}
        else:
            body["spec"][key] = copy.deepcopy(value)
    return body


def http(
    url: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = "admin",
    content_type: str = "application/json",
    query: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One raw request -> (status code, decoded JSON body): what kube-apiserver answers, byte for byte
    (k8s.Kube turns errors into exceptions and keeps only the message)."""
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    target = url + path + ("?" + urllib.parse.urlencode(query) if query else "")
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": content_type, "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(target, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")
