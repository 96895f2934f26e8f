"""The operator as users and the chart start it: `mnv2 operator` (or `kopf run -m
mnv2_operator.handlers`) in its own process, with probes, metrics, SIGTERM, and peering for HA."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from harness import job_manifest, wait_for
from mnv2_operator import k8s, names

BIN = Path(sys.executable).parent
PEERINGS = k8s.Resource("kopf.dev", "v1", "kopfpeerings")
FAST = ["--watch-server-timeout", "5", "--watch-client-timeout", "8", "--resync-seconds", "2"]
FAST_ENV = {
    "MNV2_OPERATOR_WATCH_SERVER_TIMEOUT": "5",
    "MNV2_OPERATOR_WATCH_CLIENT_TIMEOUT": "8",
    "MNV2_OPERATOR_RESYNC_SECONDS": "2",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except OSError as error:
        return 0, str(error)


class Process:
    """An operator process with its log; stopped (SIGTERM, then kill) when the test ends."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None):
        self.log_path = log
        self._log = log.open("w")
        self.popen = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )

    def terminate(self, timeout: float = 30) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=timeout)

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text()


def test_help_lists_the_chart_flags():
    out = subprocess.run(
        [BIN / "mnv2", "operator", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in (
        "--namespace",
        "--all-namespaces",
        "--config",
        "--peering",
        "--standalone",
        "--liveness",
        "--metrics-port",
        "--log-level",
    ):
        assert flag in out


@pytest.mark.parametrize("how", ["mnv2 operator", "kopf run"])
def test_operator_process_serves_probes_reconciles_and_stops_on_sigterm(
    cluster, kube, namespace, tmp_path, how
):
    health, metrics = free_port(), free_port()
    liveness = f"http://127.0.0.1:{health}/healthz"
    if how == "mnv2 operator":
        argv = [
            str(BIN / "mnv2"),
            "operator",
            "--namespace",
            namespace,
            "--standalone",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--liveness",
            liveness,
            "--metrics-port",
            str(metrics),
            "--log-format",
            "json",
            *FAST,
        ]
        env = {}
    else:  # settings from MNV2_OPERATOR_* variables
        argv = [
            str(BIN / "kopf"),
            "run",
            "-m",
            "mnv2_operator.handlers",
            "--namespace",
            namespace,
            "--standalone",
            "--liveness",
            liveness,
        ]
        env = {**FAST_ENV, "MNV2_OPERATOR_METRICS_PORT": str(metrics), "KUBECONFIG": str(cluster.kubeconfig)}
    process = Process(argv, tmp_path / "operator.log", env)
    try:
        wait_for(lambda: http_get(liveness)[0] == 200, what="liveness probe")
        kube.create(job_manifest("cli", namespace))
        wait_for(lambda: len(kube.list(k8s.PODS, namespace, {names.LABEL_JOB_NAME: "cli"})) == 2, what="pods")
        # Counted with the job's first status, which is written once its pods are created.
        line = f'mnv2_operator_jobs_created_total{{job_namespace="{namespace}",platform="CPU"}} 1.0'
        wait_for(lambda: line in http_get(f"http://127.0.0.1:{metrics}/metrics")[1], what="created counted")
        assert http_get(f"http://127.0.0.1:{metrics}/metrics")[0] == 200
        assert process.terminate() == 0
    finally:
        process.close()
    assert "Traceback" not in process.log()
    if how == "mnv2 operator":  # --log-format json: every line is one JSON object
        lines = [json.loads(line) for line in process.log().splitlines() if line.strip()]
        assert lines and all("message" in line for line in lines)


def test_two_replicas_with_peering_act_once_and_fail_over(cluster, kube, namespace, sim, tmp_path):
    kube._call(
        "POST",
        PEERINGS.path(namespace),
        body={"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "mnv2"}},
    )

    def replica(priority: int) -> Process:
        argv = [
            str(BIN / "mnv2"),
            "operator",
            "--namespace",
            namespace,
            "--peering",
            "mnv2",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--liveness",
            "",
            "--priority",
            str(priority),
            *FAST,
        ]
        return Process(argv, tmp_path / f"operator-{priority}.log")

    # The lower-priority replica starts first and becomes active; the higher one joins and takes
    # over, the first one pauses (the harder order: a replica must give way, not just stay out).
    replicas = [replica(100)]
    wait_for(lambda: "Resuming operations" in replicas[0].log(), what="first replica active")
    replicas.insert(0, replica(200))
    wait_for(lambda: "Pausing operations in favour of" in replicas[1].log(), what="first replica paused")
    try:
        sim.plan(namespace, "ha", outcomes=[None])
        kube.create(job_manifest("ha", namespace))
        wait_for(
            lambda: (
                ((kube.get(k8s.JOBS, namespace, "ha") or {}).get("status") or {}).get("state") == "Running"
            ),
            what="job running",
        )
        assert replicas[0].terminate() == 0  # the active replica goes away (rollout, node drain)
        sim.terminate(namespace, "ha-0", 0)
        sim.terminate(namespace, "ha-1", 0)
        wait_for(
            lambda: (
                ((kube.get(k8s.JOBS, namespace, "ha") or {}).get("status") or {}).get("state") == "Succeeded"
            ),
            what="the standby replica took over",
        )
    finally:
        for replica in replicas:
            replica.close()
    assert replicas[1].log().count("Resuming operations") == 2  # active, paused, active again
    for index in range(2):
        assert sim.creations("v1/pods", namespace, f"ha-{index}") == 1
    running = [e for e in sim.events(namespace, "ha") if e["reason"] == "JobRunning"]
    assert len(running) == 1  # announced by the replica that saw it, not again by the one taking over
