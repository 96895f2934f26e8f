"""The e2e harness: a cluster (the API-server double + kubelet simulator, or a real one) and the
real kopf operator running in a thread against it over HTTP.

Test code talks to the cluster only through `mnv2_operator.k8s.Kube` over HTTP, the same client the
operator uses, so a scenario reads the same on the double and on a real cluster. The simulator is
reached through `cluster.sim` (None on a real cluster: those scenarios skip).
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
from apiserver_double import ApiServerDouble, kubeconfig_for
from kubelet_sim import JobPlan, Kubelet
from mnv2_operator import api, k8s

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
        self._cluster.call(self._cluster.kubelet.delete(namespace, pod))

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
        self.double = ApiServerDouble()
        self.double.add_resource(
            api.GROUP, api.VERSION, api.PLURAL, kind=api.KIND, namespaced=True, subresources={"status"}
        )
        async with self.double, kmock.Server(self.double) as server:
            self.url = str(server.url).rstrip("/")
            self.kubelet = Kubelet(self.double)
            self.kubelet.start()
            await self.double.create(kmock.resource("v1/namespaces"), None, {"metadata": {"name": "default"}})
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

    def __init__(self, kubeconfig: str):
        self.kubeconfig = Path(kubeconfig)

    def start(self) -> RealCluster:
        from mnv2_operator.crd import generate_crd

        kube = k8s.Kube.from_environment(str(self.kubeconfig))
        crd = generate_crd()
        crds = k8s.Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", namespaced=False)
        with contextlib.suppress(k8s.Conflict):  # already installed (e.g. by the chart)
            kube._call("POST", crds.path(), body=crd)
        wait_for(lambda: kube.list(k8s.JOBS, "default") is not None, timeout=60, what="the CRD to be served")
        kube.close()
        return self

    def stop(self) -> None:
        pass

    def errors(self) -> list[BaseException]:
        return []


NAMESPACES = k8s.Resource("", "v1", "namespaces", namespaced=False)


def create_namespace(kube: k8s.Kube) -> str:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kube._call(
        "POST", NAMESPACES.path(), body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    return name


def delete_namespace(kube: k8s.Kube, name: str) -> None:
    with contextlib.suppress(k8s.ApiError):
        kube.delete(NAMESPACES, None, name)


class OperatorRunner:
    """The real operator (`kopf.operator` with our handlers) in a thread, stoppable and restartable."""

    def __init__(self, namespaces: list[str], **overrides: Any):
        from mnv2_operator.settings import OperatorSettings

        overrides.setdefault("kubeconfig", os.environ.get("KUBECONFIG"))
        self.settings = OperatorSettings(
            namespaces=namespaces,
            watch_server_timeout=5,
            watch_client_timeout=8.0,
            watch_connect_timeout=2.0,
            watch_inactivity_timeout=15.0,
            reconnect_backoff=0.2,
            resync_seconds=3.0,
            progress_seconds=1.0,
            request_timeout=10.0,
            **overrides,
        )
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
