"""`mnv2 operator` as users and the chart start it: a separate process, flags, probes, metrics, SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from conftest import job_manifest
from harness import wait_for
from mnv2_operator import k8s, names

MNV2 = str(Path(sys.executable).with_name("mnv2"))


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


def test_help_lists_the_chart_flags():
    out = subprocess.run([MNV2, "operator", "--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--namespace", "--all-namespaces", "--config", "--peering", "--standalone", "--liveness",
                 "--metrics-port", "--log-level"):
        assert flag in out


def test_operator_process_serves_probes_reconciles_and_stops_on_sigterm(cluster, kube, namespace, tmp_path):
    health, metrics = free_port(), free_port()
    log = (tmp_path / "operator.log").open("w")
    process = subprocess.Popen(
        [MNV2, "operator", "--namespace", namespace, "--standalone", "--kubeconfig", str(cluster.kubeconfig),
         "--liveness", f"http://127.0.0.1:{health}/healthz", "--metrics-port", str(metrics),
         "--watch-server-timeout", "5", "--watch-client-timeout", "8", "--resync-seconds", "2"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: http_get(f"http://127.0.0.1:{health}/healthz")[0] == 200, what="liveness probe")
        kube.create(job_manifest("cli", namespace))
        wait_for(lambda: len(kube.list(k8s.PODS, namespace, {names.LABEL_JOB_NAME: "cli"})) == 2, what="pods")
        status, text = http_get(f"http://127.0.0.1:{metrics}/metrics")
        assert status == 200
        assert f'mnv2_operator_jobs_created_total{{job_namespace="{namespace}",platform="CPU"}} 1.0' in text
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    assert "Traceback" not in (tmp_path / "operator.log").read_text()
