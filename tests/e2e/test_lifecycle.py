"""End-to-end scenarios: the real kopf operator, over HTTP, against the API-server double and the
kubelet simulator (or a real cluster with MNV2_E2E_KUBECONFIG; scenarios that need simulated pods
skip there). Every wait polls the API for a condition with a deadline.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from harness import OperatorRunner, wait_for
from mnv2 import launchenv
from mnv2_operator import k8s, names
from mnv2_operator.status import ATTEMPT_LABEL, condition

JOB = "mnv2"
# The operator fixture is conftest's: its restart backoff is the harness's 0.2 s (the Job
# controller's 10 s would only slow the suite; the backoff itself is tested in
# test_semantics_restarts.py and tests/operator).


def get_job(kube: k8s.Kube, namespace: str, name: str = JOB) -> dict[str, Any]:
    return kube.get(k8s.JOBS, namespace, name) or {}


def wait_state(kube: k8s.Kube, namespace: str, state: str, name: str = JOB, timeout: float = 60.0) -> dict:
    def check():
        job = get_job(kube, namespace, name)
        return job if (job.get("status") or {}).get("state") == state else None

    try:
        return wait_for(check, timeout=timeout, what=f"job {name} to be {state}")
    except AssertionError as error:
        status = get_job(kube, namespace, name).get("status") or {}
        raise AssertionError(f"{error}\nstatus now: {json.dumps(status, indent=1)}") from None


def pods_of(kube: k8s.Kube, namespace: str, name: str = JOB) -> list[dict[str, Any]]:
    pods = kube.list(k8s.PODS, namespace, {names.LABEL_JOB_NAME: name})
    return sorted(pods, key=lambda p: p["metadata"]["name"])


def pod_names(kube: k8s.Kube, namespace: str, name: str = JOB) -> list[str]:
    return [p["metadata"]["name"] for p in pods_of(kube, namespace, name)]


def cond(job: dict, type_: str) -> dict:
    found = condition(job.get("status") or {}, type_)
    assert found is not None, f"no {type_} condition in {job.get('status')}"
    return found


def event_reasons(sim, namespace: str, name: str = JOB) -> list[tuple[str, str]]:
    return [(e.get("type"), e.get("reason")) for e in sim.events(namespace, name)]


def wait_event(sim, namespace: str, type_: str, reason: str) -> list[tuple[str, str]]:
    """The job's Events once one is (type_, reason). The operator writes a transition's status first
    and then posts its Event (Reconciler._announce), so a test that saw the status waits for it."""
    return wait_for(
        lambda: (type_, reason) in event_reasons(sim, namespace) and event_reasons(sim, namespace),
        what=f"{type_} Event {reason}",
    )


def training_config(pod: dict) -> dict:
    env = pod["spec"]["containers"][0]["env"]
    return json.loads(next(e["value"] for e in env if e["name"] == launchenv.TRAINING_CONFIG))


def rank_table(kube: k8s.Kube, namespace: str) -> dict:
    cm = kube.get(k8s.CONFIGMAPS, namespace, names.rank_table_configmap_name(JOB)) or {}
    return json.loads((cm.get("data") or {}).get("hccl.json", "{}"))


# --- runs to completion ----------------------------------------------------------------------------


@pytest.mark.parametrize("platform", ["CPU", "GPU", "Ascend"])
def test_job_on_each_platform_runs_to_succeeded(kube, namespace, sim, operator, job_factory, platform):
    sim.plan(namespace, JOB, outcomes=[None])
    created = job_factory(JOB, platform=platform, replicas=2)
    running = wait_state(kube, namespace, "Running")
    assert cond(running, "Running")["status"] == "True"
    assert running["status"]["replicas"]["running"] == 2
    sim.terminate(namespace, "mnv2-1", 0)
    sim.terminate(namespace, "mnv2-0", 0)
    job = wait_state(kube, namespace, "Succeeded")
    status = job["status"]
    assert cond(job, "Created")["status"] == "True"
    assert cond(job, "Succeeded")["status"] == "True"
    assert cond(job, "Running")["status"] == "False"  # was True while running, flipped at the end
    assert status["replicas"] == {"pending": 0, "running": 0, "succeeded": 2, "failed": 0}
    assert status["restartCount"] == 0 and status["observedGeneration"] == 1
    assert status["startTime"] <= status["completionTime"]
    # Children carry the job as controlling owner; cleanPodPolicy Running keeps finished pods.
    pods = pods_of(kube, namespace)
    assert [p["metadata"]["name"] for p in pods] == ["mnv2-0", "mnv2-1"]
    for obj in [*pods, kube.get(k8s.SERVICES, namespace, JOB)]:
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref["uid"] == created["metadata"]["uid"] and ref["controller"] is True
    reasons = [r for _, r in wait_event(sim, namespace, "Normal", "JobSucceeded")]
    # Milestones and problems, not progress: no event for pods being created and starting.
    assert reasons == ["JobRunning", "JobSucceeded"]
    assert sim.creations("v1/pods", namespace, "mnv2-0") == 1


def test_gang_scheduling_with_volcano_creates_a_podgroup(kube, namespace, sim, operator, job_factory):
    sim.plan(namespace, JOB, outcomes=[None])
    job_factory(JOB, scheduling={"gang": True, "gangScheduler": "volcano", "queue": "research"})
    wait_state(kube, namespace, "Running")
    podgroup = kube.get(k8s.PODGROUPS, namespace, names.podgroup_name(JOB))
    assert podgroup is not None and podgroup["spec"]["minMember"] == 2


def test_children_are_created_with_owner_references(kube, namespace, operator, job_factory, cluster):
    """Runs on a real cluster too: only creation is checked, not pods running."""
    created = job_factory(JOB, platform="CPU", replicas=2)
    wait_for(lambda: len(pod_names(kube, namespace)) == 2, what="two pods")
    service = kube.get(k8s.SERVICES, namespace, JOB)
    assert service is not None and service["spec"]["clusterIP"] == "None"
    for pod in pods_of(kube, namespace):
        assert pod["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
        assert pod["metadata"]["labels"][ATTEMPT_LABEL] == "0"
    job = wait_for(
        lambda: (
            condition(get_job(kube, namespace).get("status") or {}, "Created") and get_job(kube, namespace)
        ),
        what="Created condition",
    )
    assert cond(job, "Created")["status"] == "True"


# --- Ascend rank table --------------------------------------------------------------------------------


def test_ascend_rank_table_initializing_completed_and_regenerated(
    kube, namespace, sim, operator, job_factory
):
    plan = sim.plan(namespace, JOB, outcomes=[None, None], annotate_devices=False)
    job_factory(JOB, platform="Ascend", replicas=2)
    wait_state(kube, namespace, "Running")
    # Pods run and have IPs, but the device plugin has not annotated them: still initializing.
    assert rank_table(kube, namespace) == {"status": "initializing"}
    sim.annotate(namespace, "mnv2-0")
    assert rank_table(kube, namespace) == {"status": "initializing"}
    sim.annotate(namespace, "mnv2-1")
    table = wait_for(
        lambda: rank_table(kube, namespace).get("status") == "completed" and rank_table(kube, namespace),
        what="rank table completed",
    )
    assert table["server_count"] == "2"
    ips = [server["container_ip"] for server in table["server_list"]]
    assert ips == [p["status"]["podIP"] for p in pods_of(kube, namespace)]
    assert [d["rank_id"] for s in table["server_list"] for d in s["device"]] == ["0", "1", "2", "3"]

    # A pod is replaced (its node went away): the whole job restarts, and the table goes back to
    # initializing until the new pods are annotated, then completes with the new IPs.
    sim.delete(namespace, "mnv2-1")
    wait_for(lambda: get_job(kube, namespace).get("status", {}).get("restartCount") == 1, what="restart")
    wait_for(lambda: sim.creations("v1/pods", namespace, "mnv2-1") == 2, what="mnv2-1 recreated")
    wait_for(lambda: rank_table(kube, namespace) == {"status": "initializing"}, what="back to initializing")
    plan.annotate_devices = True
    sim.annotate(namespace, "mnv2-0")
    sim.annotate(namespace, "mnv2-1")
    table2 = wait_for(
        lambda: rank_table(kube, namespace).get("status") == "completed" and rank_table(kube, namespace),
        what="rank table completed again",
    )
    new_ips = [server["container_ip"] for server in table2["server_list"]]
    assert new_ips == [p["status"]["podIP"] for p in pods_of(kube, namespace)]
    assert set(new_ips).isdisjoint(ips)


# --- failures and restarts -------------------------------------------------------------------------------


def test_retryable_failure_restarts_whole_job_then_succeeds(kube, namespace, sim, operator, job_factory):
    # Attempt 0: rank 1 hits a communication error (76, retryable); attempt 1 finishes.
    sim.plan(namespace, JOB, outcomes=[{1: 76}, {0: 0, 1: 0}])
    job_factory(JOB, runPolicy={"backoffLimit": 2, "restartPolicy": "ExitCode"})
    job = wait_state(kube, namespace, "Succeeded")
    assert job["status"]["restartCount"] == 1
    restarting = cond(job, "Restarting")
    assert restarting["status"] == "False" and restarting["reason"] != "RetryableFailure"
    # Both ranks were replaced, not just the failed one, and the new ones resume from a checkpoint.
    assert sim.creations("v1/pods", namespace, "mnv2-0") == 2
    assert sim.creations("v1/pods", namespace, "mnv2-1") == 2
    for pod in pods_of(kube, namespace):
        assert pod["metadata"]["labels"][ATTEMPT_LABEL] == "1"
        assert training_config(pod)["resume"] is True
    warnings = [r for t, r in event_reasons(sim, namespace) if t == "Warning"]
    assert "RetryableFailure" in warnings
    message = next(e["message"] for e in sim.events(namespace, JOB) if e["reason"] == "RetryableFailure")
    assert "mnv2-1" in message and "76" in message


def test_permanent_exit_code_fails_at_once(kube, namespace, sim, operator, job_factory):
    sim.plan(namespace, JOB, outcomes=[{0: 65}])  # rank 0: dataset missing; rank 1 keeps running
    job_factory(JOB, runPolicy={"backoffLimit": 3})
    job = wait_state(kube, namespace, "Failed")
    failed = cond(job, "Failed")
    assert failed["reason"] == "PodFailed"
    assert "mnv2-0" in failed["message"] and "65" in failed["message"] and "InvalidInput" in failed["message"]
    assert job["status"]["restartCount"] == 0
    assert sim.creations("v1/pods", namespace, "mnv2-0") == 1
    # cleanPodPolicy Running (default): the still-running rank is deleted, the failed one kept for its logs.
    wait_for(lambda: pod_names(kube, namespace) == ["mnv2-0"], what="running pod cleaned up")


def test_backoff_limit_exhausted(kube, namespace, sim, operator, job_factory):
    sim.plan(namespace, JOB, outcomes=[{0: 137}, {0: 137}, {0: 0, 1: 0}])
    job_factory(JOB, runPolicy={"backoffLimit": 1, "restartPolicy": "ExitCode"})
    job = wait_state(kube, namespace, "Failed")
    failed = cond(job, "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert "137" in failed["message"] and "backoffLimit is 1" in failed["message"]
    assert job["status"]["restartCount"] == 1
    assert sim.creations("v1/pods", namespace, "mnv2-0") == 2


def test_restart_policy_never_fails_on_a_retryable_code(kube, namespace, sim, operator, job_factory):
    sim.plan(namespace, JOB, outcomes=[{1: 76}])
    job_factory(JOB, runPolicy={"restartPolicy": "Never"})
    job = wait_state(kube, namespace, "Failed")
    assert cond(job, "Failed")["reason"] == "RestartPolicyNever"


def test_kubelet_eviction_is_a_disruption(kube, namespace, sim, operator, job_factory):
    sim.plan(namespace, JOB, outcomes=[None, {0: 0, 1: 0}])
    job_factory(JOB)
    wait_state(kube, namespace, "Running")
    sim.evict(namespace, "mnv2-0")
    job = wait_state(kube, namespace, "Succeeded")
    # Kubelet eviction marks the pod DisruptionTarget (TerminationByKubelet, Kubernetes >= 1.31):
    # a disruption, which restarts the job without counting against backoffLimit.
    assert job["status"]["restartCount"] == 1 and job["status"]["disruptionCount"] == 1
    message = next(e["message"] for e in sim.events(namespace, JOB) if e["reason"] == "PodDisrupted")
    assert "TerminationByKubelet" in message and "low on resource" in message


def test_pending_timeout_fails_with_the_schedulers_message(kube, namespace, sim, operator, job_factory):
    sim.plan(
        namespace,
        JOB,
        schedulable=False,
        unschedulable_message="0/4 nodes are available: 4 Insufficient huawei.com/Ascend910.",
    )
    job_factory(JOB, platform="Ascend", runPolicy={"pendingTimeoutSeconds": 2})
    job = wait_state(kube, namespace, "Failed")
    # On the way it was Pending with the scheduler's reason (the transition left an Event).
    assert ("Warning", "Unschedulable") in event_reasons(sim, namespace)
    failed = cond(job, "Failed")
    assert failed["reason"] == "PendingTimeout"
    assert "4 Insufficient huawei.com/Ascend910" in failed["message"]
    wait_for(lambda: pod_names(kube, namespace) == [], what="pending pods cleaned up")


def test_active_deadline_fails_a_running_job(kube, namespace, sim, operator, job_factory):
    sim.plan(namespace, JOB, outcomes=[None])
    job_factory(JOB, runPolicy={"activeDeadlineSeconds": 2})
    wait_state(kube, namespace, "Running")
    job = wait_state(kube, namespace, "Failed")
    assert cond(job, "Failed")["reason"] == "DeadlineExceeded"
    wait_for(lambda: pod_names(kube, namespace) == [], what="running pods deleted")


# --- suspend, TTL, cleanup --------------------------------------------------------------------------------


def test_suspend_deletes_pods_and_podgroup_and_resume_restarts(kube, namespace, sim, operator, job_factory):
    """batch/v1 Job suspend (REFERENCE §7): pods deleted, startTime cleared and set afresh on resume;
    the Volcano PodGroup is deleted (its minResources stay reserved otherwise) and created again;
    scheduling directives may change while suspended (the CRD's transition rule and the operator
    agree) and the resumed pods carry them."""
    sim.plan(namespace, JOB, outcomes=[None, None])
    job_factory(JOB, scheduling={"gang": True, "gangScheduler": "volcano", "queue": "research"})
    running = wait_state(kube, namespace, "Running")
    assert kube.get(k8s.PODGROUPS, namespace, names.podgroup_name(JOB)) is not None
    kube.patch(k8s.JOBS, namespace, JOB, {"spec": {"runPolicy": {"suspend": True}}})
    suspended = wait_state(kube, namespace, "Suspended")
    wait_for(lambda: pod_names(kube, namespace) == [], what="pods deleted on suspend")
    wait_for(
        lambda: kube.get(k8s.PODGROUPS, namespace, names.podgroup_name(JOB)) is None,
        what="PodGroup deleted on suspend",
    )
    assert cond(suspended, "Suspended")["status"] == "True"
    assert "startTime" not in suspended["status"]
    assert kube.get(k8s.SERVICES, namespace, JOB) is not None  # the Service stays
    kube.patch(
        k8s.JOBS,
        namespace,
        JOB,
        {"spec": {"scheduling": {"queue": "urgent"}, "template": {"nodeSelector": {"pool": "b"}}}},
    )
    kube.patch(k8s.JOBS, namespace, JOB, {"spec": {"runPolicy": {"suspend": False}}})
    resumed = wait_state(kube, namespace, "Running")
    assert cond(resumed, "Suspended")["status"] == "False"
    assert resumed["status"]["startTime"] >= running["status"]["startTime"]
    assert (condition(resumed["status"], "SpecChangeRejected") or {}).get("status") != "True"
    assert sim.creations("v1/pods", namespace, "mnv2-0") == 2
    pods = pods_of(kube, namespace)
    assert all(training_config(p)["resume"] is True for p in pods)
    assert all(p["spec"]["nodeSelector"].get("pool") == "b" for p in pods)
    podgroup = kube.get(k8s.PODGROUPS, namespace, names.podgroup_name(JOB))
    assert podgroup is not None and podgroup["spec"]["queue"] == "urgent"


def test_ttl_deletes_the_finished_job_even_across_an_operator_restart(
    kube, namespace, sim, operator, job_factory
):
    sim.plan(namespace, JOB, outcomes=[{0: 0, 1: 0}])
    job_factory(JOB, runPolicy={"ttlSecondsAfterFinished": 2})
    done = wait_state(kube, namespace, "Succeeded")
    assert done["status"]["completionTime"]
    operator.stop()  # the TTL is computed from completionTime, not from an in-memory timer
    restarted = OperatorRunner([namespace]).start()
    try:
        wait_for(lambda: kube.get(k8s.JOBS, namespace, JOB) is None, timeout=60, what="job deleted by TTL")
        wait_for(lambda: pod_names(kube, namespace) == [], what="children garbage-collected")
        assert kube.get(k8s.SERVICES, namespace, JOB) is None
    finally:
        restarted.stop()


@pytest.mark.parametrize(
    ("policy", "left"), [("All", []), ("Running", ["mnv2-0"]), ("None", ["mnv2-0", "mnv2-1"])]
)
def test_clean_pod_policy(kube, namespace, sim, operator, job_factory, policy, left):
    sim.plan(namespace, JOB, outcomes=[{0: 65}])  # rank 0 fails for good, rank 1 is still running
    job_factory(JOB, runPolicy={"cleanPodPolicy": policy})
    wait_state(kube, namespace, "Failed")
    wait_for(lambda: pod_names(kube, namespace) == left, what=f"pods left by cleanPodPolicy {policy}")


# --- spec problems ---------------------------------------------------------------------------------


def test_invalid_spec_gets_a_failed_condition_naming_the_field(
    kube, namespace, operator, job_factory, cluster
):
    try:
        job_factory(JOB, training={"epochs": 2, "warmupEpochs": 5})
    except k8s.ApiError as error:  # a real API server may refuse it at admission (CEL): also fine
        assert "warmupEpochs" in str(error)
        return
    job = wait_state(kube, namespace, "Failed")
    failed = cond(job, "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert "spec.training.warmupEpochs" in failed["message"]
    assert pod_names(kube, namespace) == []


def test_immutable_change_is_refused_and_the_job_keeps_running(kube, namespace, sim, operator, job_factory):
    sim.plan(namespace, JOB, outcomes=[None])
    job_factory(JOB, replicas=2)
    wait_state(kube, namespace, "Running")
    # The CRD's transition rules refuse what they can bound (422, like kube-apiserver) ...
    with pytest.raises(k8s.ApiError) as refused:
        kube.patch(k8s.JOBS, namespace, JOB, {"spec": {"replicas": 3}})
    assert refused.value.status == 422 and "spec.replicas" in str(refused.value)
    # ... and the operator refuses what CEL cannot bound (template.volumes: arbitrary sources).
    volumes = [{"name": "extra", "persistentVolumeClaim": {"claimName": "x"}}]
    kube.patch(
        k8s.JOBS,
        namespace,
        JOB,
        {"spec": {"template": {"volumes": volumes}, "runPolicy": {"backoffLimit": 5}}},
    )
    job = wait_for(
        lambda: (
            condition(get_job(kube, namespace).get("status") or {}, "SpecChangeRejected")
            and get_job(kube, namespace)
        ),
        what="SpecChangeRejected",
    )
    rejected = cond(job, "SpecChangeRejected")
    assert rejected["status"] == "True" and "spec.template.volumes" in rejected["message"]
    assert "backoffLimit" not in rejected["message"]  # mutable: accepted
    assert job["status"]["state"] == "Running" and pod_names(kube, namespace) == ["mnv2-0", "mnv2-1"]
    refusal = ("Warning", "ImmutableFieldChanged")
    assert wait_event(sim, namespace, *refusal).count(refusal) == 1


# --- operator restarts ---------------------------------------------------------------------------------


def test_operator_killed_mid_creation_creates_nothing_twice(kube, namespace, sim, job_factory):
    sim.plan(namespace, JOB, outcomes=[{0: 0, 1: 0, 2: 0}])
    gate = sim.gate_pod_creation(namespace)  # the first pod creation hangs in the API server
    first = OperatorRunner([namespace]).start()
    job_factory(JOB, replicas=3)
    wait_for(lambda: kube.get(k8s.SERVICES, namespace, JOB), what="service created before the pods")
    first.signal_stop()  # killed while its pod creation is in flight
    gate.set()  # ... which the API server still completes
    first.stop()
    second = OperatorRunner([namespace]).start()
    try:
        wait_state(kube, namespace, "Succeeded")
    finally:
        second.stop()
    for index in range(3):
        assert sim.creations("v1/pods", namespace, f"mnv2-{index}") == 1
    assert sim.creations("v1/services", namespace, JOB) == 1


def test_a_service_deleted_by_hand_is_created_again(kube, namespace, sim, operator, job_factory):
    """Passes trust that a job's children stay (no GET per child per pass, issue 16); the operator's
    Service watch (ours only, by label) says otherwise. Without the headless Service the replicas'
    names <job>-<i>.<job> stop resolving."""
    job_factory(JOB)
    wait_state(kube, namespace, "Running")
    assert kube.delete(k8s.SERVICES, namespace, JOB)
    wait_for(lambda: sim.creations("v1/services", namespace, JOB) == 2, what="the Service created again")
    assert kube.get(k8s.SERVICES, namespace, JOB) is not None


# --- progress ---------------------------------------------------------------------------------------


def test_progress_is_read_from_rank_zero_metrics(kube, namespace, sim, operator, job_factory):
    """status.progress (printer columns Progress, Top-1) comes from rank 0's real /metrics page."""
    import http.server
    import threading

    from mnv2.trainer_metrics import TrainerMetrics
    from prometheus_client import generate_latest

    metrics = TrainerMetrics(port=0, rank=0, job=JOB)
    metrics.set_plan(epochs=2, steps_per_epoch=50, batch_size=8, world_size=2)
    for step in range(25):
        metrics.on_step(
            epoch=0,
            step=step,
            global_step=step + 1,
            loss=2.5,
            lr=0.1,
            step_seconds=0.1,
            data_wait_seconds=0.0,
            images=16,
        )
    metrics.on_eval(top1=0.625, top5=0.9)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = generate_latest(metrics.registry)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sim.plan(namespace, JOB, outcomes=[None], pod_ip="127.0.0.1")
        job_factory(JOB, metrics={"port": server.server_address[1]})
        job = wait_for(
            lambda: (
                (get_job(kube, namespace).get("status") or {}).get("progress") and get_job(kube, namespace)
            ),
            what="status.progress",
        )
    finally:
        server.shutdown()
        metrics.close()
    progress = job["status"]["progress"]
    assert progress["step"] == 25 and progress["totalSteps"] == 100 and progress["percent"] == 25.0
    assert progress["top1"] == 0.625


# --- refusals from the cluster and from the operator's configuration ---------------------------------


def test_refused_creation_is_reported_and_retried(cluster, kube, namespace, sim, operator, job_factory):
    import kmock

    refusals = []

    def refuse_once(request):
        refusals.append(request)
        if len(refusals) == 1:  # an admission webhook says no, once
            raise kmock.KubernetesError(
                status=403, reason="Forbidden", message="services is forbidden: denied by policy"
            )
        return None  # from then on the stored-object handler serves the request

    async def inject():
        cluster.double[f"post /api/v1/namespaces/{namespace}/services"] << refuse_once

    cluster.call(inject())
    sim.plan(namespace, JOB, outcomes=[None])
    job_factory(JOB)
    wait_state(kube, namespace, "Running")
    failed = [e for e in sim.events(namespace, JOB) if e["reason"] == "CreateFailed"]
    assert len(failed) == 1 and failed[0]["type"] == "Warning"
    assert "Service mnv2" in failed[0]["message"] and "denied by policy" in failed[0]["message"]


def test_profile_limit_fails_the_job_naming_the_field(tmp_path, kube, namespace, job_factory):
    config = tmp_path / "operator.yaml"
    config.write_text("profiles:\n  GPU:\n    maxDevicesPerReplica: 2\n")
    runner = OperatorRunner([namespace], config_path=str(config)).start()
    try:
        job_factory(JOB, platform="GPU", devicesPerReplica=4)
        job = wait_state(kube, namespace, "Failed")
    finally:
        runner.stop()
    failed = cond(job, "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert "spec.devicesPerReplica" in failed["message"] and "at most 2" in failed["message"]
    assert pod_names(kube, namespace) == []


# --- objects the job does not own ---------------------------------------------------------------------


def foreign_pod(name: str, namespace: str, labels: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]},
    }


def test_a_name_taken_by_a_foreign_pod_is_explained_then_resolved(
    kube, namespace, sim, operator, job_factory
):
    squatter = kube.create(foreign_pod("mnv2-0", namespace, {"team": "other"}))
    sim.plan(namespace, JOB, outcomes=[None])
    job_factory(JOB, runPolicy={"cleanPodPolicy": "All"})
    job = wait_for(
        lambda: (
            (get_job(kube, namespace).get("status") or {}).get("reason") == "NameConflict"
            and get_job(kube, namespace)
        ),
        what="NameConflict",
    )
    assert job["status"]["state"] == "Pending" and "Pod mnv2-0" in job["status"]["message"]
    assert ("Warning", "NameConflict") in event_reasons(sim, namespace)
    assert kube.get(k8s.PODS, namespace, "mnv2-0")["metadata"]["uid"] == squatter["metadata"]["uid"]
    kube.delete(k8s.PODS, namespace, "mnv2-0")  # the owner of the squatter gives the name back
    wait_state(kube, namespace, "Running")
    assert all(
        p["metadata"]["ownerReferences"][0]["kind"] == "MobileNetV2TrainJob" for p in pods_of(kube, namespace)
    )


def test_foreign_pods_with_the_jobs_label_are_never_counted_or_deleted(
    kube, namespace, sim, operator, job_factory
):
    intruder = kube.create(foreign_pod("intruder", namespace, {names.LABEL_JOB_NAME: JOB}))
    sim.plan(namespace, JOB, outcomes=[None])
    job_factory(JOB)
    running = wait_state(kube, namespace, "Running")
    assert running["status"]["replicas"]["running"] == 2  # the intruder is not one of ours
    kube.patch(k8s.JOBS, namespace, JOB, {"spec": {"runPolicy": {"suspend": True}}})
    wait_state(kube, namespace, "Suspended")
    wait_for(lambda: pod_names(kube, namespace) == ["intruder"], what="only our pods deleted")
    assert kube.get(k8s.PODS, namespace, "intruder")["metadata"]["uid"] == intruder["metadata"]["uid"]
