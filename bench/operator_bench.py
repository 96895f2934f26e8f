"""Operator benchmarks on the end-to-end harness: `python -m bench.operator_bench [--quick]`.

Runs the real kopf operator (tests/e2e/harness.py: OperatorRunner) against the API-server double
and the kubelet simulator over HTTP, in this process, and measures for one 64-replica job and for
200 two-replica jobs: time from creating the job(s) to all pods created and to every job Running,
and the API requests the operator made per job. Memory is this process's RSS, which holds the
operator *and* the double and simulator, so it is an upper bound on the operator's own.

`section(report, quick)` runs it in a subprocess for bench.run_all.
"""

from __future__ import annotations

import argparse
import collections
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
E2E = ROOT / "tests" / "e2e"
BENCH_AGENT = "mnv2-bench"


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _scenario(kube, namespace: str, jobs: int, replicas: int, counter: collections.Counter,
              timeout: float) -> dict[str, Any]:
    from conftest import job_manifest
    from harness import wait_for
    from mnv2_operator import k8s, names

    counter.clear()
    start = time.perf_counter()
    for j in range(jobs):
        kube.create(job_manifest(f"b{j}", namespace, platform="CPU", replicas=replicas))
    created_s = time.perf_counter() - start
    want_pods = jobs * replicas

    def all_pods():
        pods = kube.list(k8s.PODS, namespace, {})
        return len(pods) >= want_pods and len(pods)

    wait_for(all_pods, timeout=timeout, interval=0.1, what=f"{want_pods} pods")
    pods_s = time.perf_counter() - start

    def all_running():
        listed = kube.list(k8s.JOBS, namespace, {})
        running = sum(1 for job in listed if (job.get("status") or {}).get("state") == "Running")
        return running >= jobs and running

    wait_for(all_running, timeout=timeout, interval=0.2, what=f"{jobs} jobs Running")
    running_s = time.perf_counter() - start
    operator_requests = sum(n for agent, n in counter.items() if not agent.startswith(BENCH_AGENT))
    del names
    return {
        "jobs": jobs, "replicas": replicas, "submit_s": created_s, "all_pods_s": pods_s,
        "all_running_s": running_s, "operator_requests": operator_requests,
        "requests_per_job": operator_requests / jobs, "rss_mb": _rss_mb(),
    }


def run(quick: bool) -> dict[str, Any]:
    sys.path.insert(0, str(E2E))
    import tempfile

    from apiserver_double import ApiServerDouble
    from harness import DoubleCluster, OperatorRunner, create_namespace, kubeconfig_env
    from mnv2_operator import k8s

    counter: collections.Counter = collections.Counter()
    audit = ApiServerDouble._audit

    def counting_audit(self, request):  # count every request by client, then audit as usual
        counter[(request.headers.get("User-Agent") or "").split("/")[0]] += 1
        return audit(self, request)

    ApiServerDouble._audit = counting_audit
    rss_start = _rss_mb()
    results: dict[str, Any] = {"rss_before_mb": rss_start}
    with tempfile.TemporaryDirectory(prefix="mnv2-opbench-") as tmp:
        cluster = DoubleCluster(Path(tmp)).start()
        kubeconfig_env(cluster.kubeconfig)
        kube = k8s.Kube.from_environment(str(cluster.kubeconfig), user_agent=BENCH_AGENT)
        try:
            namespaces = [create_namespace(kube), create_namespace(kube)]
            results["rss_cluster_mb"] = _rss_mb()
            runner = OperatorRunner(namespaces).start()
            results["rss_operator_started_mb"] = _rss_mb()
            try:
                timeout = 600.0
                results["one_64"] = _scenario(kube, namespaces[0], 1, 64, counter, timeout)
                many = 50 if quick else 200  # run_all always asks for 200: cheap next to training
                results["many_2"] = _scenario(kube, namespaces[1], many, 2, counter, timeout)
                results["rss_end_mb"] = _rss_mb()
            finally:
                runner.stop()
        finally:
            kube.close()
            cluster.stop()
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return results


def section(report: Any, quick: bool) -> None:
    from bench.run_all import run_child

    argv = ["bench.operator_bench"]  # 200 jobs even in quick mode: minutes, not the hours training takes
    try:
        r = run_child(argv, 1800.0).result
    except RuntimeError as error:
        report.add("Operator: job-creation latency and memory", f"Failed: {error}")
        return
    report.raw["operator"] = r
    rows = ["| scenario | submit s | all pods created s | all jobs Running s | operator API requests per job "
            "| process RSS MB after |", "|---|---|---|---|---|---|"]
    scenarios = (("one_64", "1 job x 64 replicas"), ("many_2", f"{r['many_2']['jobs']} jobs x 2 replicas"))
    for key, label in scenarios:
        s = r[key]
        rows.append(f"| {label} | {s['submit_s']:.2f} | {s['all_pods_s']:.2f} | {s['all_running_s']:.2f} "
                    f"| {s['requests_per_job']:.1f} | {s['rss_mb']:.0f} |")
    body = "\n".join(rows) + (
        "\n\nThe real kopf operator against the API-server double and kubelet simulator "
        "(tests/e2e/harness.py), over loopback HTTP, all in one process: times include the double's and "
        "simulator's work on the same 2 shared cores. Requests are counted at the double by client "
        f"(everything but the benchmark's own client). Process RSS: {r['rss_before_mb']:.0f} MB before the "
        f"double, {r['rss_cluster_mb']:.0f} MB with it, {r['rss_operator_started_mb']:.0f} MB with the "
        f"operator started, {r['rss_end_mb']:.0f} MB at the end (peak {r['peak_rss_mb']:.0f} MB); the "
        "operator's own share is at most the growth after it started, "
        f"{r['rss_end_mb'] - r['rss_cluster_mb']:.0f} MB, which also counts the double's stored objects. "
        + ("" if r["many_2"]["jobs"] == 200 else f"Only {r['many_2']['jobs']} jobs x 2 (quick).")
    )
    report.add("Operator: job-creation latency, API requests and memory", body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print("BENCH-RESULT " + json.dumps(run(args.quick)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
