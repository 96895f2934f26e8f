"""Operator chaos: the real operator, through the fault proxy, killed and restarted at random points of
a job's lifecycle while pods are evicted, deleted, left unschedulable or fail; every run must end with
the invariants intact.

Set-up: the e2e harness's API-server double and kubelet simulator (tests/e2e, imported as is); the
operator runs as a child process (`operator_main.py`) so it can be SIGKILLed, and reaches the double
only through `FaultProxy` (500s, 409s, delays, held requests, lost write responses, dropped watches).
The test and the simulator talk to the double directly.

Invariants, checked as they happen (a listener inside the double sees every stored change) and at
the end of each run:
- no duplicates: never more live pods than replicas, never pods of two attempts alive together, no
  pod name created more often than attempts (+ external deletions) allow, Service/ConfigMap once;
- no orphans: every child carries the job as controlling owner, nothing is created for a job that
  is gone or being deleted, and after the job is deleted nothing of it remains;
- every job ends terminal (the state the scenario implies) with a condition carrying a reason and a
  message, or is clearly explained (a Pending/Unschedulable reason);
- the status agrees with the pods (replica counts of the current attempt, restartCount).

Default: CHAOS_RUNS runs (CI); soak mode (`-m soak` / `--soak` / MNV2_SOAK=1): SOAK_RUNS runs.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from faultproxy import FaultPlan, ProxyThread
from figures import add

E2E = Path(__file__).resolve().parents[1] / "e2e"
if str(E2E) not in sys.path:
    sys.path.insert(0, str(E2E))

harness = pytest.importorskip("harness")
apiserver_double = pytest.importorskip("apiserver_double")

import kmock  # noqa: E402
from mnv2_operator import api, k8s, names  # noqa: E402

CHAOS_RUNS = int(os.environ.get("MNV2_CHAOS_RUNS", "8"))
SOAK_RUNS = int(os.environ.get("MNV2_SOAK_RUNS", "50"))
SEED = int(os.environ.get("MNV2_CHAOS_SEED", "20261127"))
JOB = "chaos"
ATTEMPT_LABEL = "training.mindspore.io/restart-count"
INDEX_LABEL = "training.mindspore.io/replica-index"
JOB_RES = kmock.resource(api.GROUP, api.VERSION, api.PLURAL)
EVENT_RESOURCES = (kmock.resource("v1/events"), kmock.resource("events.k8s.io/v1/events"))
POD_RES = apiserver_double.POD_RES
CHILD_RESOURCES = {
    POD_RES: k8s.PODS,
    kmock.resource("", "v1", "services"): k8s.SERVICES,
    kmock.resource("", "v1", "configmaps"): k8s.CONFIGMAPS,
    kmock.resource("scheduling.volcano.sh", "v1beta1", "podgroups"): k8s.PODGROUPS,
}
TERMINAL = ("Succeeded", "Failed")
OPERATOR_MAIN = Path(__file__).with_name("operator_main.py")
# The credential the operator presents (through the proxy); the security test greps for it.
SECRET_TOKEN = f"mnv2-chaos-token-{uuid.uuid4().hex}"


# --- the operator as a killable process -----------------------------------------------------------


class OperatorProcess:
    """`operator_main.py` in a child process; every start appends to one log file."""

    def __init__(self, kubeconfig: Path, namespaces: list[str], log_path: Path):
        self.kubeconfig = kubeconfig
        self.settings = {
            "namespaces": namespaces, "watch_server_timeout": 4, "watch_client_timeout": 6.0,
            "watch_connect_timeout": 2.0, "watch_inactivity_timeout": 8.0, "reconnect_backoff": 0.2,
            "resync_seconds": 2.0, "request_timeout": 5.0,
            # The Job controller's 10 s restart backoff would only stretch each run.
            "restart_backoff_seconds": 0.2, "restart_backoff_max_seconds": 1.0,
        }
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.starts = self.kills = self.graceful_stops = self.forced_stops = 0

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(OPERATOR_MAIN), json.dumps(self.settings)],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, like an OOM kill or a lost node."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.kills += 1
        self.proc = None

    def stop(self, timeout: float = 20.0) -> bool:
        """SIGTERM and wait; True when it exited by itself in time."""
        if self.proc is None:
            return True
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
            self.graceful_stops += 1
            return True
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            self.forced_stops += 1
            return False
        finally:
            self.proc = None


# --- invariants checked inside the double on every change -----------------------------------------


class Monitor:
    """Listens to every change the double stores and records invariant violations as they happen."""

    def __init__(self, double: Any):
        self.double = double
        self.violations: list[str] = []
        self.checked = 0
        # Children created while the job already had a deletionTimestamp (its finalizer pending): not
        # orphans, because their owner reference lets the garbage collector take them with the job.
        self.created_during_deletion = 0
        double.listeners.append(self.on_change)

    def on_change(self, kind: str, resource: Any, obj: dict[str, Any]) -> None:
        if kind != "ADDED" or resource not in CHILD_RESOURCES:
            return
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        job_name = labels.get(names.LABEL_JOB_NAME)
        if job_name is None or labels.get(names.LABEL_MANAGED_BY) != names.MANAGED_BY:
            return  # not the operator's
        self.checked += 1
        ns, where = meta.get("namespace"), f"{obj.get('kind')} {meta.get('namespace')}/{meta.get('name')}"
        owners = [r for r in meta.get("ownerReferences") or [] if r.get("controller")]
        job = self.double.get_object(JOB_RES, ns, job_name)
        if not owners:
            self.violations.append(f"{where}: created without a controlling owner reference")
        elif job is None or job["metadata"]["uid"] != owners[0].get("uid"):
            self.violations.append(f"{where}: created for a job that no longer exists (orphan)")
        elif job["metadata"].get("deletionTimestamp"):
            self.created_during_deletion += 1
        if resource != POD_RES or job is None:
            return
        replicas = int((job.get("spec") or {}).get("replicas", 1))
        live = [
            p for p in self.double.live_objects(POD_RES, ns)
            if (p["metadata"].get("labels") or {}).get(names.LABEL_JOB_NAME) == job_name
            and not p["metadata"].get("deletionTimestamp")
        ]
        if len(live) > replicas:
            self.violations.append(f"{where}: {len(live)} live pods for {replicas} replicas (duplicate)")
        attempts = {(p["metadata"].get("labels") or {}).get(ATTEMPT_LABEL) for p in live}
        if len(attempts) > 1:
            self.violations.append(f"{where}: pods of attempts {sorted(map(str, attempts))} alive together")


# --- scenarios ------------------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    platform: str
    replicas: int
    outcomes: list[dict[int, int] | None]
    expect_state: str
    expect_reasons: tuple[str, ...]
    schedulable: bool = True
    action: str | None = None  # evict | delete: done to one pod while the job runs
    run_policy: dict[str, Any] = field(default_factory=dict)


def make_scenario(rng: random.Random) -> Scenario:
    platform = rng.choice(["CPU", "GPU", "Ascend"])
    replicas = rng.randint(1, 3)
    everyone = dict.fromkeys(range(replicas), 0)
    victim = rng.randrange(replicas)
    policy = {"cleanPodPolicy": rng.choice(["All", "Running", "None"]), "backoffLimit": 3}
    kind = rng.choice(["succeed", "retryable", "permanent", "evict", "delete", "unschedulable", "backoff"])
    later = [everyone] * 6  # every later attempt succeeds
    if kind == "succeed":
        return Scenario(kind, platform, replicas, [everyone], "Succeeded", ("JobSucceeded",),
                        run_policy=policy)
    if kind == "retryable":
        code = rng.choice([74, 75, 76, 137, 143])
        return Scenario(kind, platform, replicas, [{victim: code}, *later], "Succeeded", ("JobSucceeded",),
                        run_policy=policy)
    if kind == "permanent":
        code = rng.choice([1, 64, 65, 66, 67])
        return Scenario(kind, platform, replicas, [{victim: code}], "Failed", ("PodFailed",),
                        run_policy=policy)
    if kind in ("evict", "delete"):
        return Scenario(kind, platform, replicas, [None, *later], "Succeeded", ("JobSucceeded",), action=kind,
                        run_policy=policy)
    if kind == "unschedulable":
        policy["pendingTimeoutSeconds"] = rng.randint(1, 3)
        return Scenario(kind, platform, replicas, [None], "Failed", ("PendingTimeout",), schedulable=False,
                        run_policy=policy)
    policy["backoffLimit"] = rng.randint(0, 2)
    return Scenario(kind, platform, replicas, [{victim: 74}] * 6, "Failed", ("BackoffLimitExceeded",),
                    run_policy=policy)


def manifest(namespace: str, sc: Scenario) -> dict[str, Any]:
    devices = {"CPU": 1, "GPU": 2, "Ascend": 2}[sc.platform]
    return {
        "apiVersion": api.API_VERSION, "kind": api.KIND,
        "metadata": {"name": JOB, "namespace": namespace},
        "spec": {
            "platform": sc.platform, "replicas": sc.replicas, "devicesPerReplica": devices,
            "dataset": {"volume": {"persistentVolumeClaim": {"claimName": "imagenet"}}},
            "output": {"volume": {"persistentVolumeClaim": {"claimName": "checkpoints"}}},
            "scheduling": {"gang": False},
            "runPolicy": sc.run_policy,
            "training": {"epochs": 1, "warmupEpochs": 0, "batchSize": 8, "imageSize": 32, "widthMult": 0.25},
        },
    }


# --- one run --------------------------------------------------------------------------------------


@dataclass
class RunResult:
    scenario: str
    state: str | None
    violations: list[str]
    kills: int
    faults: Counter
    seconds: float
    phases: dict[str, float]


class Chaos:
    """Everything the runs share: the double, the proxy, clients, the monitor and the figures."""

    def __init__(self, workdir: Path, seed: int):
        self.workdir = workdir
        self.cluster = harness.DoubleCluster(workdir).start()
        self.monitor = Monitor(self.cluster.double)
        self.proxy = ProxyThread(self.cluster.url, FaultPlan(seed=seed).quiet())
        self.proxy.start()
        config = apiserver_double.kubeconfig_for(self.proxy.url)
        config["users"][0]["user"]["token"] = SECRET_TOKEN
        # The double authenticates bearer tokens: ours is the chart's ServiceAccount, whose RBAC rules
        # (the chart's) the harness installed, so the operator runs with exactly the chart's rights.
        self.cluster.double.tokens[SECRET_TOKEN] = apiserver_double.User.service_account(
            harness.OPERATOR_NAMESPACE, harness.OPERATOR_ACCOUNT
        )
        self.proxy_kubeconfig = workdir / "operator-kubeconfig.yaml"
        self.proxy_kubeconfig.write_text(yaml.safe_dump(config))
        self.kube = k8s.Kube.from_environment(str(self.cluster.kubeconfig))
        self.log_path = workdir / "operator.log"
        self.results: list[RunResult] = []
        self.external_deletions: Counter[tuple[str, str]] = Counter()

    def close(self) -> None:
        self.kube.close()
        self.proxy.stop()
        self.cluster.stop()

    # -- observations (direct, never through the proxy) --

    def job(self, ns: str) -> dict[str, Any] | None:
        return self.kube.get(k8s.JOBS, ns, JOB)

    def state(self, ns: str) -> str | None:
        job = self.job(ns)
        return ((job or {}).get("status") or {}).get("state")

    def pods(self, ns: str) -> list[dict[str, Any]]:
        return self.kube.list(k8s.PODS, ns, {names.LABEL_JOB_NAME: JOB})

    def children(self, ns: str, uid: str | None = None) -> list[str]:
        left = []
        for resource in CHILD_RESOURCES.values():
            for obj in self.kube.list(resource, ns):
                meta = obj["metadata"]
                owned = any(r.get("uid") == uid for r in meta.get("ownerReferences") or []) if uid else False
                if owned or (meta.get("labels") or {}).get(names.LABEL_JOB_NAME) == JOB:
                    left.append(f"{obj.get('kind')}/{meta['name']}")
        return left

    def wait(self, check: Any, timeout: float, what: str) -> Any:
        try:
            return harness.wait_for(check, timeout=timeout, interval=0.05, what=what)
        except harness.WaitTimeout:
            return None

    # -- the run --

    def run(self, index: int, rng: random.Random) -> RunResult:
        started = time.monotonic()
        sc = make_scenario(rng)
        ns = harness.create_namespace(self.kube)
        violations: list[str] = []
        first_violation = len(self.monitor.violations)
        self.cluster.sim.plan(ns, JOB, outcomes=sc.outcomes, schedulable=sc.schedulable)
        before = self.proxy.counts()
        self.proxy.set_plan(FaultPlan.chaos(seed=rng.randrange(2**31), timeout_hold_s=2.0))
        operator = OperatorProcess(self.proxy_kubeconfig, [ns], self.log_path)
        operator.start()
        created = self.kube.create(manifest(ns, sc))
        uid = created["metadata"]["uid"]

        milestones = {
            "soon": lambda: True,
            "pods": lambda: bool(self.pods(ns)),
            "running": lambda: self.state(ns) == "Running",
            "restarted": lambda: int(((self.job(ns) or {}).get("status") or {}).get("restartCount") or 0) > 0,
            "terminal": lambda: self.state(ns) in TERMINAL,
        }
        steps = ["kill"] * rng.randint(1, 3) + (["act"] if sc.action else [])
        rng.shuffle(steps)
        acted = False
        for step in steps:
            if step == "act":
                acted = self._act(ns, sc, rng)
                continue
            point = rng.choice(list(milestones))
            self.wait(milestones[point], timeout=8.0, what=point)
            time.sleep(rng.uniform(0.0, 0.4))  # a random moment after the milestone, not a wait for one
            operator.kill()
            time.sleep(rng.uniform(0.0, 0.5))  # the operator stays down a random while
            operator.start()
        if sc.action and not acted:
            acted = self._act(ns, sc, rng)

        phases = {"steps": round(time.monotonic() - started, 1)}
        final = self.wait(lambda: self.state(ns) in TERMINAL and self.job(ns), timeout=120.0, what="terminal")
        phases["terminal"] = round(time.monotonic() - started, 1)
        if final is None:
            job = self.job(ns) or {}
            status = job.get("status") or {}
            explained = status.get("reason") and status.get("message")
            pods = [(p["metadata"]["name"], attempt_of(p), (p.get("status") or {}).get("phase"))
                    for p in self.pods(ns)]
            violations.append(
                f"run {index} ({sc.name}, ns {ns}): not terminal after 120s: state {status.get('state')!r}, "
                f"reason {status.get('reason')!r}, restartCount {status.get('restartCount')}, pods {pods}"
                + ("" if explained else " and unexplained")
            )
        else:
            violations += self._check_final(index, sc, ns, final)

        phases["checked"] = round(time.monotonic() - started, 1)
        # Delete the job (sometimes killing the operator meanwhile): everything it owned must go.
        self.kube.delete(k8s.JOBS, ns, JOB)
        if rng.random() < 0.3:
            operator.kill()
            operator.start()
        gone = self.wait(lambda: self.job(ns) is None, timeout=90.0, what="job deleted")
        if gone is None:
            left = (self.job(ns) or {}).get("metadata", {})
            violations.append(f"run {index} ({sc.name}): the job was not deleted in 90s: finalizers "
                              f"{left.get('finalizers')}, deletionTimestamp {left.get('deletionTimestamp')}")
        leftovers = self.wait(lambda: not self.children(ns, uid), timeout=30.0, what="children collected")
        if leftovers is None:
            violations.append(f"run {index} ({sc.name}): orphans after deletion: {self.children(ns, uid)}")
        phases["deleted"] = round(time.monotonic() - started, 1)
        if not operator.stop():
            violations.append(f"run {index} ({sc.name}): the operator ignored SIGTERM for 20s")
        self.proxy.set_plan(FaultPlan(seed=0).quiet())
        faults = self.proxy.counts() - before
        violations += [f"run {index} ({sc.name}): {v}" for v in self.monitor.violations[first_violation:]]
        harness.delete_namespace(self.kube, ns)
        result = RunResult(sc.name, final and final["status"]["state"], violations,
                           operator.kills, faults, time.monotonic() - started, phases)
        self.results.append(result)
        return result

    def _act(self, ns: str, sc: Scenario, rng: random.Random) -> bool:
        """Evict or delete one pod once the job runs (as a kubelet under pressure or a lost node would)."""
        if not self.wait(lambda: self.state(ns) == "Running", timeout=30.0, what="running"):
            return False
        pods = [p for p in self.pods(ns) if not p["metadata"].get("deletionTimestamp")]
        if not pods:
            return False
        victim = rng.choice(pods)["metadata"]["name"]
        try:
            if sc.action == "evict":
                self.cluster.sim.evict(ns, victim)
            else:
                self.external_deletions[(ns, victim)] += 1
                self.cluster.sim.delete(ns, victim)
        except kmock.KubernetesError:
            return False  # gone meanwhile
        return True

    def _check_final(self, index: int, sc: Scenario, ns: str, job: dict[str, Any]) -> list[str]:
        problems = []
        tag = f"run {index} ({sc.name})"
        status = job.get("status") or {}
        state, reason, message = status.get("state"), status.get("reason"), status.get("message")
        if state != sc.expect_state or reason not in sc.expect_reasons:
            problems.append(f"{tag}: ended {state}/{reason} ({message}), expected {sc.expect_state}/"
                            f"{'|'.join(sc.expect_reasons)}")
        found = next((c for c in status.get("conditions") or [] if c.get("type") == state), None)
        if not found or found.get("status") != "True" or not found.get("reason") or not found.get("message"):
            problems.append(f"{tag}: no {state} condition with a reason and a message: {found}")
        if not status.get("completionTime"):
            problems.append(f"{tag}: terminal without completionTime")
        if sc.name == "unschedulable" and "Insufficient" not in (message or ""):
            problems.append(f"{tag}: the scheduler's message is missing from {message!r}")
        restarts = int(status.get("restartCount") or 0)
        backoff = int(sc.run_policy.get("backoffLimit", 3))
        if restarts > backoff:
            problems.append(f"{tag}: restartCount {restarts} exceeds backoffLimit {backoff}")

        # The status follows the pods: counts of the current attempt (allowing the operator a moment
        # to record the last pod changes, e.g. the clean-up of running pods).
        def consistent() -> bool:
            current = self.job(ns) or {}
            st = current.get("status") or {}
            attempt = int(st.get("restartCount") or 0)
            pods = [p for p in self.pods(ns) if attempt_of(p) == attempt]
            counts = Counter()
            for p in pods:
                phase = (p.get("status") or {}).get("phase") or "Pending"
                counts[phase.lower() if phase in ("Running", "Succeeded", "Failed") else "pending"] += 1
            observed = {k: counts.get(k, 0) for k in ("pending", "running", "succeeded", "failed")}
            future = [p for p in self.pods(ns) if attempt_of(p) > attempt]
            return st.get("replicas") == observed and not future

        if self.wait(consistent, timeout=15.0, what="status consistent with pods") is None:
            current = self.job(ns) or {}
            seen = [(p["metadata"]["name"], p.get("status", {}).get("phase")) for p in self.pods(ns)]
            problems.append(f"{tag}: status.replicas {current.get('status', {}).get('replicas')} disagrees "
                            f"with the pods {seen}")
        # Nothing created more often than the attempts (and our own deletions) explain.
        attempts = restarts + 1
        for name_ in [f"{JOB}-{i}" for i in range(sc.replicas)]:
            made = self.cluster.sim.creations(POD_RES, ns, name_)
            allowed = attempts + self.external_deletions[(ns, name_)]
            if made > allowed:
                problems.append(f"{tag}: pod {name_} created {made} times for {attempts} attempt(s)")
        singletons = [(kmock.resource("", "v1", "services"), JOB),
                      (kmock.resource("", "v1", "configmaps"), names.rank_table_configmap_name(JOB))]
        for resource, name_ in singletons:
            made = self.cluster.sim.creations(resource, ns, name_)
            if made > 1:
                problems.append(f"{tag}: {resource.plural}/{name_} created {made} times")
        return problems


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory, soak: bool):
    """Run every chaos run once for the module; the tests below read the results."""
    runs = SOAK_RUNS if soak else CHAOS_RUNS
    rng = random.Random(SEED)
    keep = os.environ.get("MNV2_CHAOS_WORKDIR")  # keep the operator log for a post-mortem
    workdir = Path(keep) if keep else tmp_path_factory.mktemp("chaos")
    workdir.mkdir(parents=True, exist_ok=True)
    state = Chaos(workdir, SEED)
    try:
        for index in range(runs):
            result = state.run(index, rng)
            sys.stderr.write(
                f"chaos run {index}: {result.scenario} -> {result.state} in {result.seconds:.1f}s "
                f"{result.phases}, kills {result.kills}, faults {sum(result.faults.values())}, "
                f"violations {len(result.violations)}\n"
            )
        yield state
    finally:
        state.close()


def test_operator_survives_kills_and_api_faults(chaos: Chaos) -> None:
    results = chaos.results
    faults = sum((r.faults for r in results), Counter())
    violations = [v for r in results for v in r.violations]
    add("chaos", runs=len(results), kills=sum(r.kills for r in results), faults=sum(faults.values()),
        violations=len(violations), children_checked=chaos.monitor.checked,
        created_during_deletion=chaos.monitor.created_during_deletion,
        **{f"fault_{k}": v for k, v in faults.items()},
        **{f"scenario_{k}": v for k, v in Counter(r.scenario for r in results).items()})
    print(f"reliability: runs={len(results)} kills={sum(r.kills for r in results)} "
          f"faults={sum(faults.values())} violations={len(violations)}")
    assert sum(faults.values()) > 0 and sum(r.kills for r in results) >= len(results)
    assert chaos.monitor.checked > 0  # the listener really saw the operator's objects
    assert not violations, "\n".join(violations[:20])


def test_no_credential_in_logs_events_or_status(chaos: Chaos) -> None:
    """The operator's bearer token never shows up in its logs, in Events, or in any job's status."""
    assert any(SECRET_TOKEN in value for value in chaos.proxy.authorizations()), "the token was not in use"
    log = chaos.log_path.read_text(errors="replace")
    assert log.strip(), "the operator wrote no log at all"
    double = chaos.cluster.double
    # Every stored version, deleted ones included: namespace deletion removes the live Events (and
    # jobs) before this runs, so reading live objects would scan nothing.
    events = chaos.cluster.call(_async(lambda: [
        v for (res, _, _), obj in list(double.objects.items()) if res in EVENT_RESOURCES
        for v in obj.history.raw if v
    ]))
    history = chaos.cluster.call(_async(lambda: [
        v for (res, _, _), obj in list(double.objects.items()) if res == JOB_RES for v in obj.history.raw if v
    ]))
    assert events, "no Event was ever posted: the scan would prove nothing"
    assert history, "no job version was stored: the scan would prove nothing"
    haystacks = {"operator log": log, "events": json.dumps(events, default=_plain),
                 "job statuses": json.dumps([h.get("status") for h in history], default=_plain)}
    add("security", log_bytes=len(log), events_scanned=len(events), job_versions_scanned=len(history))
    for where, text in haystacks.items():
        assert SECRET_TOKEN not in text, f"the bearer token leaked into the {where}"
        assert "Bearer " not in text, f"an Authorization header leaked into the {where}"


async def _async(fn: Any) -> Any:
    return fn()


def _plain(obj: Any) -> Any:
    """KMock keeps history as mapping views; JSON wants plain containers."""
    return dict(obj) if hasattr(obj, "keys") else list(obj)


def attempt_of(pod: dict[str, Any]) -> int:
    return int((pod["metadata"].get("labels") or {}).get(ATTEMPT_LABEL, "0"))


def test_monitor_detects_a_violation() -> None:
    """The invariant listener is not vacuous: an unowned child and a surplus pod are reported."""

    class FakeDouble:
        listeners: list = []

        def __init__(self) -> None:
            self.pods = [self.pod("j-0", "0"), self.pod("j-1", "1")]

        @staticmethod
        def pod(name: str, attempt: str) -> dict:
            return {"kind": "Pod", "metadata": {"name": name, "namespace": "n", "labels": {
                names.LABEL_JOB_NAME: "j", names.LABEL_MANAGED_BY: names.MANAGED_BY, ATTEMPT_LABEL: attempt}}}

        def get_object(self, resource: Any, ns: str, name: str) -> dict:
            return {"metadata": {"uid": "u1"}, "spec": {"replicas": 1}}

        def live_objects(self, resource: Any, ns: str) -> list:
            return self.pods

    fake = FakeDouble()
    monitor = Monitor(fake)
    monitor.on_change("ADDED", POD_RES, fake.pods[1])
    assert any("without a controlling owner" in v for v in monitor.violations)
    assert any("2 live pods for 1 replicas" in v for v in monitor.violations)
    assert any("alive together" in v for v in monitor.violations)


def api_call(method: str, path: str, watch: bool) -> tuple[str, str, str] | None:
    """(group, resource[/subresource], verb) of a Kubernetes API request; None for discovery."""
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) >= 3:
        group, rest = "", parts[2:]
    elif parts[0] == "apis" and len(parts) >= 4:
        group, rest = parts[1], parts[3:]
    else:
        return None  # /api, /api/v1, /apis, /apis/<group>/<version>: discovery, no RBAC verb
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    resource, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
    if method == "GET":
        verb = "watch" if watch else ("get" if name else "list")
    else:
        verb = {"POST": "create", "PATCH": "patch", "PUT": "update",
                "DELETE": "delete" if name else "deletecollection"}[method]
    return group, f"{resource}/{sub}" if sub else resource, verb


# Grants the chaos runs cannot exercise, and why (every other grant must be seen in use).
UNEXERCISED_GRANTS = {
    ("kopf.dev", "kopfpeerings", "*"): "the chaos operator runs standalone (no --peering)",
    ("kopf.dev", "clusterkopfpeerings", "*"): "the chaos operator runs standalone (no --peering)",
    ("", "namespaces", "*"): "only watched for namespace patterns; the chaos operator names its namespace",
    ("scheduling.volcano.sh", "podgroups", "*"): "the chaos jobs run without gang scheduling",
    (api.GROUP, api.PLURAL, "delete"): "only ttlSecondsAfterFinished deletes a job; the runs leave it unset",
    ("", "nodes", "get"): "read only for pods stuck Terminating on a lost node "
    "(tests/e2e/test_rbac_audit.py)",
    (api.GROUP, api.PLURAL, "get"): "passes read the watch cache; a GET follows only a 409 (stale cache)",
    ("", "services", "get"): "read only after a 409 on creation (is the taken name ours?)",
    (api.GROUP, f"{api.PLURAL}/finalizers", "update"): "checked by admission (blockOwnerDeletion), "
    "never called",
}


def unexercised(grant: tuple[str, str, str]) -> bool:
    group, resource, verb = grant
    return (group, resource, verb) in UNEXERCISED_GRANTS or (group, resource, "*") in UNEXERCISED_GRANTS


def test_operator_calls_stay_within_its_rbac_rules(chaos: Chaos) -> None:
    """Least privilege, measured: every request the operator made is granted, every grant is used."""
    from mnv2_operator import rbac

    observed = Counter()
    for (method, path, watch), count in chaos.proxy.calls().items():
        call = api_call(method, path, watch)
        if call is not None:
            observed[call] += count
    denied = sorted({c for c in observed if not rbac.allows(*c)})
    granted = {(g, r, v) for rule in rbac.RULES for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    unused = sorted(g for g in granted - set(observed) if not unexercised(g))
    add("security", api_calls=sum(observed.values()), distinct_permissions_used=len(observed),
        permissions_granted=len(granted))
    assert observed, "the proxy saw no API calls"
    assert not denied, f"the operator made calls its RBAC rules do not grant: {denied}"
    assert not unused, f"granted but never used by the operator: {unused}"
