"""Operator at scale: `python -m bench.operator_bench --jobs N --replicas R`.

Three processes, so the operator's CPU and memory are its own:
- the cluster: the API-server double with its kubelet simulator (tests/e2e, as the e2e suite uses
  them), counting every request by client (User-Agent); `--serve-cluster` runs it, driven over stdin;
- the operator: tests/reliability/operator_main.py, the real kopf operator with our handlers and the
  settings `mnv2 operator` defaults to (resync, QPS/burst, create concurrency), as the chart's
  ServiceAccount;
- this one: creates the jobs, polls (its own requests are not counted), reads /proc of the operator.

Phases, from the first job's creation: all pods created; every job Running; `--steady` seconds with
nothing changing; every pod ends with exit 0, every job Succeeded (TTL unset), then `--finished`
seconds. The last line is `BENCH-RESULT {json}` with jobs, replicas, all_pods_created_s,
all_running_s, requests_per_job (the operator's requests until all Running / jobs),
steady_requests_per_s, finished_requests_per_s, operator_rss_mb, operator_cpu_s, plus the load
average (the machine is shared) and an estimate at client-go's default QPS (5, burst 10).

`section(report, quick)` runs it in a subprocess for bench.run_all.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
E2E = ROOT / "tests" / "e2e"
OPERATOR_MAIN = ROOT / "tests" / "reliability" / "operator_main.py"
BENCH_AGENT = "mnv2-bench"
OPERATOR_AGENTS = ("kopf", "mnv2-operator")
CLIENT_GO_QPS, CLIENT_GO_BURST = 5.0, 10


# --- the cluster process -------------------------------------------------------------------------


def serve_cluster(workdir: Path) -> int:
    """Run the double + simulator; answer commands on stdin, one JSON line each on stdout:
    `counts` -> requests by client; `finish NS` -> every pod of NS ends with exit 0; `quit`."""
    sys.path.insert(0, str(E2E))
    from apiserver_double import POD_RES, ApiServerDouble
    from harness import DoubleCluster

    counts: Counter[str] = Counter()
    audit = ApiServerDouble._audit

    def counting_audit(self, request):  # count every request by client, method and resource, then audit
        agent = (request.headers.get("User-Agent") or "").split("/")[0]
        resource = request.resource.plural if request.resource is not None else "discovery"
        watch = "watch" if request.params.get("watch") == "true" else ""
        sub = f"/{request.subresource}" if request.subresource else ""
        counts[f"{agent} {request.method.value} {resource}{sub} {watch}".strip()] += 1
        # What the writes say, to see where requests go: events by reason, status writes by state.
        body = request.data if isinstance(request.data, dict) else {}
        if resource == "events" and request.method.value == "POST":
            counts[f"detail: event {body.get('reason')}"] += 1
        elif sub == "/status" and resource == "mobilenetv2trainjobs":
            status = body.get("status") or next(
                (op.get("value") for op in request.data or [] if op.get("path") == "/status"), {}
            )
            counts[f"detail: status write, state {status.get('state', 'unchanged')}"] += 1
        return audit(self, request)

    ApiServerDouble._audit = counting_audit
    cluster = DoubleCluster(workdir).start()
    reply = {"kubeconfig": str(cluster.kubeconfig), "operator_kubeconfig": str(cluster.operator_kubeconfig)}
    print(json.dumps(reply), flush=True)
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "counts":
            print(json.dumps(dict(counts)), flush=True)
        elif command == "finish":

            async def finish(namespace: str = arg) -> int:
                pods = cluster.double.live_objects(POD_RES, namespace)
                for pod in pods:
                    await cluster.kubelet.terminate(namespace, pod["metadata"]["name"], 0)
                return len(pods)

            print(json.dumps({"finished": cluster.call(finish(), timeout=600)}), flush=True)
        elif command == "quit":
            break
    cluster.stop()
    return 0


class ClusterProcess:
    def __init__(self, workdir: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.operator_bench", "--serve-cluster", str(workdir)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(workdir / "cluster.log").open("wb"),
            text=True,
        )
        self.info = self._read()
        self._lock = threading.Lock()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the cluster process exited; see cluster.log")
        return json.loads(line)

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
            return self._read()

    def operator_counts(self) -> Counter:
        return Counter({k: n for k, n in self.ask("counts").items() if k.split()[0] in OPERATOR_AGENTS})

    def operator_requests(self) -> int:
        return sum(self.operator_counts().values())

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask("quit")
                self.proc.wait(30)
            except (OSError, RuntimeError, subprocess.TimeoutExpired):
                self.proc.kill()


# --- the operator process ------------------------------------------------------------------------


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: str,
        namespace: str,
        workdir: Path,
        qps: float | None,
        create_concurrency: int | None,
    ):
        settings: dict[str, Any] = {"namespaces": [namespace]}
        if create_concurrency is not None:
            settings["create_concurrency"] = create_concurrency
        if qps is not None:
            settings.update(api_qps=qps, api_burst=max(1, int(qps * 2)))
        env = {**os.environ, "KUBECONFIG": kubeconfig, "PYTHONUNBUFFERED": "1"}
        self.log = workdir / "operator.log"
        self.proc = subprocess.Popen(
            [sys.executable, str(OPERATOR_MAIN), json.dumps(settings)],
            cwd=ROOT,
            env=env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        return float("nan")

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# --- the measurement -----------------------------------------------------------------------------


def _wait(check, timeout: float, what: str, interval: float = 0.5) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic()


def run(
    jobs: int,
    replicas: int,
    steady: float,
    finished: float,
    qps: float | None,
    timeout: float,
    create_concurrency: int | None = None,
) -> dict:
    sys.path.insert(0, str(E2E))
    from harness import create_namespace, job_manifest
    from mnv2_operator import k8s, names

    result: dict[str, Any] = {"jobs": jobs, "replicas": replicas, "load_average_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="mnv2-opbench-") as tmp:
        workdir = Path(tmp)
        cluster = ClusterProcess(workdir)
        kube = k8s.Kube.from_environment(cluster.info["kubeconfig"], user_agent=BENCH_AGENT)
        operator = None
        try:
            namespace = create_namespace(kube)
            operator = OperatorProcess(
                cluster.info["operator_kubeconfig"], namespace, workdir, qps, create_concurrency
            )
            _wait(
                lambda: (
                    "Resuming operations" in operator.log.read_text(errors="replace")
                    or cluster.operator_requests() > 3
                ),
                60,
                "the operator to start",
            )
            before = cluster.operator_requests()
            cpu_before = operator.cpu_s()
            start = time.monotonic()
            for j in range(jobs):
                kube.create(job_manifest(f"b{j}", namespace, platform="CPU", replicas=replicas))
            result["submit_s"] = time.monotonic() - start
            selector = {names.LABEL_MANAGED_BY: names.MANAGED_BY}

            def pods_created() -> bool:
                return len(kube.list(k8s.PODS, namespace, selector)) >= jobs * replicas

            poll = 0.1 if jobs * replicas <= 200 else 0.5  # the poll's LISTs load the cluster process too
            result["all_pods_created_s"] = _wait(pods_created, timeout, "all pods", poll) - start

            def states() -> Counter:
                return Counter((j.get("status") or {}).get("state") for j in kube.list(k8s.JOBS, namespace))

            result["all_running_s"] = (
                _wait(lambda: states()["Running"] >= jobs, timeout, "all Running", poll) - start
            )
            counts_running = cluster.operator_counts()
            until_running = sum(counts_running.values()) - before
            result["requests_until_running"] = dict(counts_running)
            every = cluster.ask("counts")
            result["writes_until_running"] = {
                k.removeprefix("detail: "): n for k, n in every.items() if k.startswith("detail:")
            }
            result["operator_requests_until_running"] = until_running
            result["requests_per_job"] = until_running / jobs
            result["operator_cpu_s_until_running"] = operator.cpu_s() - cpu_before
            result["client_go_default_qps_all_running_s_lower_bound"] = max(
                0.0, (until_running - CLIENT_GO_BURST) / CLIENT_GO_QPS
            )

            counted = cluster.operator_counts()
            time.sleep(steady)
            result["steady_s"] = steady
            during = cluster.operator_counts() - counted
            result["steady_requests_per_s"] = sum(during.values()) / steady
            result["steady_requests"] = dict(during)

            cluster.ask(f"finish {namespace}")
            _wait(lambda: states()["Succeeded"] >= jobs, timeout, "all Succeeded", interval=1.0)
            time.sleep(min(10.0, finished))  # cleanup passes (cleanPodPolicy) settle
            counted = cluster.operator_counts()
            time.sleep(finished)
            result["finished_s"] = finished
            during = cluster.operator_counts() - counted
            result["finished_requests_per_s"] = sum(during.values()) / finished
            result["finished_requests"] = dict(during)
            result["operator_rss_mb"] = operator.rss_mb()
            result["operator_cpu_s"] = operator.cpu_s()
            result["load_average_end"] = os.getloadavg()[0]
        finally:
            if operator is not None:
                operator.close()
            kube.close()
            cluster.close()
    return result


def section(report: Any, quick: bool) -> None:
    """100 and 1,000 two-replica jobs (100 only when quick) and one 64-replica job, each its own run."""
    from bench.run_all import run_child

    scenarios = [(100, 2, [])] if quick else [(100, 2, []), (1000, 2, [])]
    scenarios.append((1, 64, ["--steady", "5", "--finished", "5"]))
    rows = [
        "| jobs x replicas | all pods created s | all Running s | requests/job | steady req/s "
        "| finished req/s | operator RSS MB | operator CPU s | load avg at start |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for jobs, replicas, extra in scenarios:
        argv = ["bench.operator_bench", "--jobs", str(jobs), "--replicas", str(replicas), *extra]
        try:
            r = run_child(argv, 3600.0).result
        except RuntimeError as error:
            rows.append(f"| {jobs} x {replicas} | failed: {str(error).splitlines()[0]} | | | | | | | |")
            continue
        report.raw[f"operator-{jobs}x{replicas}"] = r
        rows.append(
            f"| {jobs} x {replicas} | {r['all_pods_created_s']:.1f} | {r['all_running_s']:.1f} "
            f"| {r['requests_per_job']:.2f} | {r['steady_requests_per_s']:.2f} ({r['steady_s']:.0f} s) "
            f"| {r['finished_requests_per_s']:.3f} ({r['finished_s']:.0f} s) "
            f"| {r['operator_rss_mb']:.0f} | {r['operator_cpu_s']:.1f} | {r['load_average_start']:.1f} |"
        )
    body = "\n".join(rows) + (
        "\n\n`python -m bench.operator_bench`: the operator in its own process (the settings `mnv2 "
        "operator` defaults to), the API-server double and kubelet simulator in another, the driver in a "
        "third; times from the first job's creation, the driver's own sequential creations included. "
        "Requests/job: every request the operator made until all jobs were Running (its ~19 start-up "
        "requests included) divided by the jobs. Steady: all Running, nothing changing; finished: all "
        "Succeeded, TTL unset."
    )
    report.add("Operator: job-creation latency, API requests and memory (issue 16 scale)", body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--steady", type=float, default=60.0, help="seconds at rest, all Running")
    parser.add_argument("--finished", type=float, default=60.0, help="seconds at rest, all Succeeded")
    parser.add_argument("--qps", type=float, default=None, help="the operator's API QPS (burst 2x)")
    parser.add_argument("--create-concurrency", type=int, default=None, help="pods of a job created at once")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--serve-cluster", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_cluster:
        return serve_cluster(Path(args.serve_cluster))
    result = run(
        args.jobs, args.replicas, args.steady, args.finished, args.qps, args.timeout, args.create_concurrency
    )
    print("BENCH-RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
