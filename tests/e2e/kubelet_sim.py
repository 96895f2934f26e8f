"""A kubelet, scheduler and Ascend device plugin, simulated against the API-server double.

It reacts to pod events from the double (no polling, no sleeps): a new pod is scheduled (or left
Pending with `PodScheduled=False, reason=Unschedulable` and the scheduler's message), gets a node,
an IP and, when it requests Ascend cards, the device plugin's annotation; then it runs. What happens
next is the scenario's choice, per job and per attempt (an attempt is one generation of pods: the
operator deletes and recreates all pods on a restart): stay running, or end every rank with an exit
code (0 = Succeeded). Tests can also act on single pods: fail a rank with a code, evict, delete.
All writes go through the double's own write path, so resourceVersions, watches and events are real.

Like a real kubelet it confirms graceful deletions (Pod lifecycle: termination of pods): a pod the API
server marked with deletionTimestamp is removed (grace period 0) by the kubelet of its node, unless that
node is lost (`node_lost`) or the pod is held (`hold`). Pods with `spec.schedulingGates` are not
scheduled until their gates are removed (Pod scheduling readiness). Nodes (`node-<replica index>`) are
Node objects; losing one does what the node lifecycle controller and the taint manager do (Taints and
Tolerations: taint-based evictions): the node is NotReady/unreachable with a NoExecute taint, its pods
get Ready=False and `DisruptionTarget` (DeletionByTaintManager) and are deleted, and stay Terminating
since no kubelet confirms. Deleting the node lets the pod garbage collector force-delete its pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import kmock
from apiserver_double import NODE_RES, POD_RES, ApiServerDouble, add_condition, disruption, now_iso
from mnv2_operator import api

JOB_RES = kmock.resource(api.GROUP, api.VERSION, api.PLURAL)
JOB_LABEL = "training.mindspore.io/job-name"
INDEX_LABEL = "training.mindspore.io/replica-index"
ASCEND_ANNOTATION = "ascend.kubectl.kubernetes.io/ascend-910-configuration"
ASCEND_RESOURCES = ("huawei.com/Ascend910", "huawei.com/npu")
DEFAULT_UNSCHEDULABLE = (
    "0/3 nodes are available: 3 Insufficient huawei.com/Ascend910. preemption: 0/3 nodes are available"
)


@dataclass
class JobPlan:
    """What the simulated cluster does with one job's pods.

    `outcomes[attempt]` maps replica index -> exit code, applied once every pod of that attempt
    runs; indexes left out keep running. An attempt beyond the list keeps running (None).
    """

    schedulable: bool = True
    unschedulable_message: str = DEFAULT_UNSCHEDULABLE
    outcomes: list[dict[int, int] | None] = field(default_factory=lambda: [None])
    annotate_devices: bool = True
    pod_ip: str | None = None  # a fixed pod IP (127.0.0.1: the test serves the trainer's /metrics)


def device_annotations(index: int, devices: int) -> dict[str, str]:
    """What the Ascend device plugin writes on a pod it gave `devices` cards to (REFERENCE §3)."""
    return {
        ASCEND_ANNOTATION: json.dumps(
            {
                "pod_name": str(index),
                "server_id": f"192.168.0.{index + 10}",
                "devices": [
                    {"device_id": str(d), "device_ip": f"192.168.{100 + index}.{d}"} for d in range(devices)
                ],
            }
        ),
        "huawei.com/Ascend910": ",".join(f"Ascend910-{d}" for d in range(devices)),
    }


def _container_devices(pod: dict[str, Any]) -> int:
    total = 0
    for container in pod.get("spec", {}).get("containers", []):
        limits = (container.get("resources") or {}).get("limits") or {}
        for name in ASCEND_RESOURCES:
            if name in limits:
                total += int(limits[name])
    return total


class Kubelet:
    """The simulator; `start()` in the double's loop, then drive it with plans and actions."""

    def __init__(self, double: ApiServerDouble):
        self.double = double
        self.plans: dict[tuple[str, str], JobPlan] = {}
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._ips = 0
        self.errors: list[BaseException] = []
        self.skipped: list[BaseException] = []
        self.lost: set[str] = set()  # nodes whose kubelet does not answer
        self.hold: set[tuple[str, str]] = set()  # (namespace, pod) whose termination is not confirmed
        double.listeners.append(self._listen)

    def plan(self, namespace: str, job: str) -> JobPlan:
        return self.plans.setdefault((namespace, job), JobPlan())

    def _listen(self, kind: str, resource: kmock.resource, obj: dict[str, Any]) -> None:
        if resource == POD_RES and kind in ("ADDED", "MODIFIED"):
            self._queue.put_nowait((kind, obj))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            kind, pod = await self._queue.get()
            try:
                await self._step(kind, pod)
            except kmock.KubernetesError as error:
                self.skipped.append(error)  # the pod went away meanwhile: nothing to simulate
            except Exception as error:  # kept for the test to report; the simulator goes on
                self.errors.append(error)

    async def _step(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        node = (pod.get("spec") or {}).get("nodeName")
        if meta.get("deletionTimestamp"):
            await self._confirm_termination(pod)
            return
        job = (meta.get("labels") or {}).get(JOB_LABEL)
        if job is None:
            return
        plan = self.plan(meta["namespace"], job)
        status = pod.get("status") or {}
        gated = bool((pod.get("spec") or {}).get("schedulingGates"))
        was_gated = any(c.get("reason") == "SchedulingGated" for c in status.get("conditions") or [])
        if not node and not gated and (kind == "ADDED" or was_gated):
            await self._schedule(pod, plan)
        elif status.get("phase") == "Running":
            await self._maybe_finish(meta["namespace"], job, plan)

    async def _confirm_termination(self, pod: dict[str, Any]) -> None:
        """The node's kubelet stopped the containers: it deletes the pod for good (grace period 0)."""
        meta = pod["metadata"]
        node = (pod.get("spec") or {}).get("nodeName")
        if node in self.lost or (meta["namespace"], meta["name"]) in self.hold or not node:
            return
        if meta.get("deletionGracePeriodSeconds"):
            await self.double.delete(POD_RES, meta["namespace"], meta["name"], grace_period=0)

    async def _schedule(self, pod: dict[str, Any], plan: JobPlan) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        if not plan.schedulable:
            await self._set_status(
                ns,
                name,
                {
                    "phase": "Pending",
                    "conditions": [
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "reason": "Unschedulable",
                            "message": plan.unschedulable_message,
                            "lastTransitionTime": now_iso(),
                        }
                    ],
                },
            )
            return
        self._ips += 1
        # Loopback addresses: unique per pod, and a connection to one (the operator reading a trainer's
        # /metrics) is refused at once instead of hanging until a timeout.
        ip = plan.pod_ip or f"127.{(self._ips // 250) + 1}.{self._ips % 250}.7"
        index = int((pod["metadata"].get("labels") or {}).get(INDEX_LABEL, "0"))
        devices = _container_devices(pod)

        def bind(obj: dict[str, Any]) -> dict[str, Any]:
            obj["spec"]["nodeName"] = f"node-{index}"
            if devices and plan.annotate_devices:
                obj["metadata"].setdefault("annotations", {}).update(device_annotations(index, devices))
            return obj

        await self._ensure_node(f"node-{index}")
        await self.double.update(POD_RES, ns, name, bind)
        containers = [c["name"] for c in pod["spec"].get("containers", [])]
        await self._set_status(
            ns,
            name,
            {
                "phase": "Running",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "hostIP": f"192.168.0.{index + 10}",
                "startTime": now_iso(),
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now_iso()},
                    {"type": "Ready", "status": "True", "lastTransitionTime": now_iso()},
                ],
                "containerStatuses": [
                    {
                        "name": c,
                        "ready": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": now_iso()}},
                        "image": "simulated",
                        "imageID": "simulated",
                    }
                    for c in containers
                ],
            },
        )

    def _attempt(self, namespace: str, job: str) -> int:
        return max(0, self.double.creations(POD_RES, namespace, f"{job}-0") - 1)

    async def _maybe_finish(self, namespace: str, job: str, plan: JobPlan) -> None:
        attempt = self._attempt(namespace, job)
        outcome = plan.outcomes[attempt] if attempt < len(plan.outcomes) else None
        if outcome is None:
            return
        pods = self._job_pods(namespace, job)
        owner = self.double.get_object(JOB_RES, namespace, job) or {}
        replicas = int((owner.get("spec") or {}).get("replicas", 1))
        if len(pods) < replicas or any((p.get("status") or {}).get("phase") != "Running" for p in pods):
            return
        # Every rank of this attempt runs: end the ones the scenario names (failures first).
        for pod in sorted(pods, key=lambda p: outcome.get(self._index(p), 0) == 0):
            index = self._index(pod)
            if index in outcome:
                await self.terminate(namespace, pod["metadata"]["name"], outcome[index])

    def _job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        return [
            p
            for p in self.double.select(POD_RES, namespace, f"{JOB_LABEL}={job}")
            if not p["metadata"].get("deletionTimestamp")
        ]

    @staticmethod
    def _index(pod: dict[str, Any]) -> int:
        return int((pod["metadata"].get("labels") or {}).get(INDEX_LABEL, "0"))

    async def _set_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        await self.double.update(
            POD_RES, namespace, name, lambda obj: {**obj, "status": status}, subresource="status"
        )

    # -- actions a scenario can take ---------------------------------------------------------------

    async def terminate(self, namespace: str, name: str, exit_code: int) -> None:
        """End the pod's containers with `exit_code`: 0 -> Succeeded, anything else -> Failed."""

        def change(obj: dict[str, Any]) -> dict[str, Any]:
            status = obj.setdefault("status", {})
            status["phase"] = "Succeeded" if exit_code == 0 else "Failed"
            reason = "Completed" if exit_code == 0 else ("OOMKilled" if exit_code == 137 else "Error")
            status["containerStatuses"] = [
                {
                    **cs,
                    "ready": False,
                    "state": {
                        "terminated": {
                            "exitCode": exit_code,
                            "reason": reason,
                            "startedAt": now_iso(),
                            "finishedAt": now_iso(),
                        }
                    },
                }
                for cs in status.get("containerStatuses", [])
            ]
            return obj

        await self.double.update(POD_RES, namespace, name, change, subresource="status")

    async def evict(self, namespace: str, name: str) -> None:
        """What the kubelet does under node pressure: phase Failed, reason Evicted, no exit code, and
        (Pod disruption conditions, GA in 1.31) DisruptionTarget with reason TerminationByKubelet."""

        def change(obj: dict[str, Any]) -> dict[str, Any]:
            status = obj.setdefault("status", {})
            message = "The node was low on resource: memory."
            status.update(phase="Failed", reason="Evicted", message=message)
            add_condition(obj, disruption("TerminationByKubelet", message))
            status["containerStatuses"] = [
                {**cs, "ready": False, "state": {"waiting": {"reason": "ContainerCreating"}}}
                for cs in status.get("containerStatuses", [])
            ]
            return obj

        await self.double.update(POD_RES, namespace, name, change, subresource="status")

    async def delete(self, namespace: str, name: str) -> None:
        """A pod vanishes at once (force deletion: `kubectl delete --grace-period=0 --force`)."""
        await self.double.delete(POD_RES, namespace, name, grace_period=0)

    async def disrupt(self, namespace: str, name: str, reason: str = "EvictionByEvictionAPI") -> None:
        """A disruption (Pod disruption conditions): DisruptionTarget with `reason`, then graceful deletion.

        EvictionByEvictionAPI (kubectl drain, the Eviction API), PreemptionByScheduler (a higher-priority
        pod took the node), DeletionByTaintManager (a NoExecute taint), TerminationByKubelet."""
        messages = {
            "EvictionByEvictionAPI": "Eviction API: evicting",
            "PreemptionByScheduler": "default-scheduler: preempting to accommodate a higher priority pod",
            "DeletionByTaintManager": "Taint manager: deleting due to NoExecute taint",
            "TerminationByKubelet": "Pod was terminated in response to imminent node shutdown.",
        }
        await self.double.evict(namespace, name, reason, messages.get(reason, reason))

    async def set_hold(self, namespace: str, name: str, held: bool) -> None:
        """Hold a pod's termination (not confirmed when deleted), or release it (confirmed now if due)."""
        if held:
            self.hold.add((namespace, name))
            return
        self.hold.discard((namespace, name))
        pod = self.double.get_object(POD_RES, namespace, name)
        if pod is not None and pod["metadata"].get("deletionTimestamp"):
            await self._confirm_termination(pod)

    # -- nodes -------------------------------------------------------------------------------------

    async def _ensure_node(self, name: str) -> None:
        if self.double.get_object(NODE_RES, None, name) is None:
            node = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                "spec": {},
            }
            with contextlib.suppress(kmock.KubernetesError):  # created meanwhile
                await self.double.create(NODE_RES, None, node)
                await self._node_ready(name, "True", "KubeletReady", "kubelet is posting ready status")

    async def _node_ready(self, name: str, status: str, reason: str, message: str) -> None:
        condition = {
            "type": "Ready",
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now_iso(),
        }
        await self.double.update(
            NODE_RES, None, name, lambda n: add_condition(n, condition), subresource="status"
        )

    def _pods_on(self, node: str) -> list[dict[str, Any]]:
        return [p for p in self.double.live_objects(POD_RES) if (p.get("spec") or {}).get("nodeName") == node]

    async def node_lost(self, node: str, unreachable: bool = True) -> None:
        """The node stops reporting (unreachable) or reports NotReady: taint, DisruptionTarget, deletion."""
        await self._ensure_node(node)
        self.lost.add(node)
        key = "node.kubernetes.io/unreachable" if unreachable else "node.kubernetes.io/not-ready"
        if unreachable:
            await self._node_ready(
                node, "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status."
            )
        else:
            await self._node_ready(node, "False", "KubeletNotReady", "container runtime is down")

        def taint(obj: dict[str, Any]) -> dict[str, Any]:
            taints = [t for t in obj["spec"].get("taints") or [] if t.get("key") != key]
            obj["spec"]["taints"] = [*taints, {"key": key, "effect": "NoExecute", "timeAdded": now_iso()}]
            return obj

        await self.double.update(NODE_RES, None, node, taint)
        for pod in self._pods_on(node):
            ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            not_ready = {
                "type": "Ready",
                "status": "False",
                "reason": "NodeNotReady",
                "lastTransitionTime": now_iso(),
            }
            with contextlib.suppress(kmock.KubernetesError):
                await self.double.update(
                    POD_RES, ns, name, lambda p, c=not_ready: add_condition(p, c), subresource="status"
                )
                await self.disrupt(ns, name, "DeletionByTaintManager")

    async def node_recovered(self, node: str) -> None:
        """The node's kubelet is back: Ready, untainted, and it finishes terminating its pods."""
        self.lost.discard(node)
        await self._ensure_node(node)  # re-registers if the Node object was deleted
        await self._node_ready(node, "True", "KubeletReady", "kubelet is posting ready status")

        def untaint(obj: dict[str, Any]) -> dict[str, Any]:
            obj["spec"].pop("taints", None)
            return obj

        await self.double.update(NODE_RES, None, node, untaint)
        for pod in self._pods_on(node):
            if pod["metadata"].get("deletionTimestamp"):
                with contextlib.suppress(kmock.KubernetesError):
                    await self._confirm_termination(pod)

    async def delete_node(self, node: str) -> None:
        """The Node object is deleted: the pod garbage collector force-deletes the pods bound to it."""
        with contextlib.suppress(kmock.KubernetesError):
            await self.double.delete(NODE_RES, None, node)
        for pod in self._pods_on(node):
            ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            condition = disruption("DeletionByPodGC", "PodGC: node no longer exists")
            with contextlib.suppress(kmock.KubernetesError):
                await self.double.update(
                    POD_RES, ns, name, lambda p, c=condition: add_condition(p, c), subresource="status"
                )
                await self.double.delete(POD_RES, ns, name, grace_period=0)

    async def annotate(self, namespace: str, name: str) -> None:
        """The device plugin's late annotation (for pods planned with annotate_devices=False)."""

        def change(obj: dict[str, Any]) -> dict[str, Any]:
            devices = _container_devices(obj)
            obj["metadata"].setdefault("annotations", {}).update(
                device_annotations(self._index(obj), devices)
            )
            return obj

        await self.double.update(POD_RES, namespace, name, change)
