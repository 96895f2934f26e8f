"""Pure parts of the operator around compute_status: adoption, attempts, accepted specs, events,
settings and the command's flags."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

import pytest
from mnv2 import launchenv
from mnv2_operator import events, rbac
from mnv2_operator.commands import operator as command
from mnv2_operator.reconcile import LEGACY_ACCEPTED_SPEC_ANNOTATION, adopt, effective_job, for_attempt
from mnv2_operator.settings import OperatorSettings
from mnv2_operator.status import ATTEMPT_LABEL

JOB = {
    "apiVersion": "training.mindspore.io/v1alpha1",
    "kind": "MobileNetV2TrainJob",
    "metadata": {"name": "j", "namespace": "ns", "uid": "uid-1", "resourceVersion": "7"},
    "spec": {"platform": "CPU", "replicas": 2, "runPolicy": {"backoffLimit": 3}},
}


def pod() -> dict:
    config = json.dumps({"epochs": 3, "resume": False})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "j-0", "labels": {"a": "b"}},
        "spec": {
            "containers": [{"name": "trainer", "env": [{"name": launchenv.TRAINING_CONFIG, "value": config}]}]
        },
    }


def test_adopt_sets_the_job_as_the_only_controller():
    foreign = {"apiVersion": "v1", "kind": "X", "name": "x", "uid": "other", "controller": True}
    obj = adopt({"metadata": {"name": "s", "ownerReferences": [foreign]}}, JOB)
    assert obj["metadata"]["namespace"] == "ns"
    (ref,) = obj["metadata"]["ownerReferences"]
    assert ref == {
        "apiVersion": JOB["apiVersion"],
        "kind": JOB["kind"],
        "name": "j",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_for_attempt_labels_and_resumes_only_when_asked():
    first = for_attempt(pod(), 0, resume=False)
    assert first["metadata"]["labels"] == {"a": "b", ATTEMPT_LABEL: "0"}
    assert json.loads(first["spec"]["containers"][0]["env"][0]["value"])["resume"] is False
    again = for_attempt(pod(), 2, resume=True)
    assert again["metadata"]["labels"][ATTEMPT_LABEL] == "2"
    assert json.loads(again["spec"]["containers"][0]["env"][0]["value"]) == {"epochs": 3, "resume": True}


@pytest.mark.parametrize("recorded_in", ["status", "legacy annotation"])
def test_effective_job_keeps_the_accepted_spec_but_takes_mutable_fields(recorded_in):
    accepted = dict(JOB["spec"])
    job = json.loads(json.dumps(JOB))
    if recorded_in == "status":
        job["status"] = {"acceptedSpec": accepted}
    else:  # jobs accepted by operators before status.acceptedSpec still run their accepted spec
        job["metadata"]["annotations"] = {LEGACY_ACCEPTED_SPEC_ANNOTATION: json.dumps(accepted)}
    assert effective_job(job) == (job, [])
    job["spec"]["replicas"] = 4
    job["spec"]["runPolicy"] = {"backoffLimit": 9, "suspend": True}
    running, refused = effective_job(job)
    assert refused == ["spec.replicas"]
    assert running["spec"]["replicas"] == 2
    assert running["spec"]["runPolicy"] == {"backoffLimit": 9, "suspend": True}


def test_event_shape():
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    event = events.build_event(JOB, "Warning", "PodFailed", "x" * 2000, now)
    assert event["involvedObject"]["uid"] == "uid-1" and event["involvedObject"]["kind"] == JOB["kind"]
    assert event["type"] == "Warning" and event["reason"] == "PodFailed" and len(event["message"]) == 1024
    assert event["metadata"]["namespace"] == "ns" and event["metadata"]["name"].startswith("j.")
    assert event["firstTimestamp"] == "2026-01-02T03:04:05Z"


def test_settings_from_environment():
    settings = OperatorSettings.from_env(
        {
            "MNV2_OPERATOR_NAMESPACES": "a, b",
            "MNV2_OPERATOR_CLUSTERWIDE": "false",
            "MNV2_OPERATOR_WATCH_SERVER_TIMEOUT": "60",
            "MNV2_OPERATOR_RESYNC_SECONDS": "2.5",
            "MNV2_OPERATOR_METRICS_PORT": "8080",
            "MNV2_OPERATOR_PEERING": "p",
        }
    )
    assert settings.namespaces == ["a", "b"] and settings.clusterwide is False
    assert settings.watch_server_timeout == 60 and settings.resync_seconds == 2.5
    assert settings.metrics_port == 8080 and settings.peering == "p"


def test_watch_timeouts_are_always_set_on_kopf():
    import kopf

    kopf_settings = kopf.OperatorSettings()
    OperatorSettings(peering="mnv2", priority=7).apply(kopf_settings)
    assert kopf_settings.watching.server_timeout and kopf_settings.watching.client_timeout
    assert kopf_settings.watching.client_timeout > kopf_settings.watching.server_timeout
    assert kopf_settings.peering.name == "mnv2" and kopf_settings.peering.priority == 7
    assert kopf_settings.peering.standalone is False
    OperatorSettings().apply(kopf_settings)
    assert kopf_settings.peering.standalone is True


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(argv)


def test_command_flags_map_to_settings():
    chart = command.settings_from_args(
        parse(
            "--config=/etc/mnv2/operator.yaml",
            "--log-level=info",
            "--liveness=http://0.0.0.0:8081/healthz",
            "--metrics-port=8080",
            "--namespace=a",
            "--namespace=b",
            "--peering=mnv2-operator",
        )
    )
    assert chart.namespaces == ["a", "b"] and chart.clusterwide is False
    assert chart.peering == "mnv2-operator" and chart.metrics_port == 8080
    assert (
        chart.liveness_url == "http://0.0.0.0:8081/healthz" and chart.config_path == "/etc/mnv2/operator.yaml"
    )
    assert chart.priority > 0  # random, so identical replicas are never equal peers
    everywhere = command.settings_from_args(parse("--all-namespaces", "--standalone"))
    assert everywhere.clusterwide is True and everywhere.peering is None
    assert command.settings_from_args(parse()).clusterwide is True


def test_rbac_allows():
    assert rbac.allows("", "pods", "create")
    assert not rbac.allows("", "pods", "update")
    assert not rbac.allows("", "secrets", "get")


def test_error_backoff_is_exponential_capped_and_jittered():
    """Issue 12 (8): failed passes were retried every 2 s for ever; now 1 s doubling, capped, with
    +-50% jitter so that jobs failing together (an API outage) spread their retries."""
    from mnv2_operator.handlers import error_backoff

    middle = [error_backoff(n, 1.0, 120.0, rand=lambda: 0.5) for n in range(1, 10)]
    assert middle == [1, 2, 4, 8, 16, 32, 64, 120, 120]
    assert error_backoff(3, 1.0, 120.0, rand=lambda: 0.0) == 2.0
    assert error_backoff(3, 1.0, 120.0, rand=lambda: 0.999) == pytest.approx(5.996)
    assert error_backoff(50, 1.0, 120.0, rand=lambda: 0.999) == 120.0


def test_a_cancelled_daemon_ends_only_after_its_pass():
    """kopf cancels a daemon whose filter stops matching (kopf/_core/engines/daemons.py,
    stop_daemons: `daemon.task.cancel()` once cancellation_timeout is set). A pass runs in a thread,
    which cancellation cannot interrupt: the daemon must not end, and a new one start for the job,
    while that pass still runs (the flake in CI: one pass counted after the daemon had ended)."""
    import asyncio
    import threading

    from mnv2_operator.handlers import _to_the_end

    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow_pass() -> str:
        started.set()
        release.wait(10)
        finished.set()
        return "done"

    async def scenario() -> tuple[bool, bool]:
        daemon = asyncio.ensure_future(_to_the_end(asyncio.to_thread(slow_pass)))
        await asyncio.to_thread(started.wait, 10)
        daemon.cancel()
        for _ in range(20):  # a cancellation that is not held up completes within a loop cycle or two
            await asyncio.sleep(0)
        ended_while_running = daemon.done()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await daemon
        return ended_while_running, finished.is_set()

    ended_while_running, pass_finished = asyncio.run(scenario())
    assert not ended_while_running
    assert pass_finished


def test_restart_backoff_flags_map_to_settings():
    settings = command.settings_from_args(
        parse("--restart-backoff-seconds=2", "--restart-backoff-max-seconds=30")
    )
    assert (settings.restart_backoff_seconds, settings.restart_backoff_max_seconds) == (2.0, 30.0)
    assert command.settings_from_args(parse()).restart_backoff_seconds == 10.0


def test_the_pod_watch_is_filtered_by_the_api_server():
    """Issue 16: settings.watching.label_selectors (kopf 1.45) applies to the pod watch only."""
    import kopf
    from kopf._cogs.structs import references

    kopf_settings = kopf.OperatorSettings()
    OperatorSettings().apply(kopf_settings)

    def selectors(group: str, version: str, plural: str) -> list[str]:
        resource = references.Resource(group=group, version=version, plural=plural, namespaced=True)
        return list(kopf_settings.watching.label_selectors.collect(resource))

    assert selectors("", "v1", "pods") == ["app.kubernetes.io/managed-by=mnv2-operator"]
    assert selectors("training.mindspore.io", "v1alpha1", "mobilenetv2trainjobs") == []


def test_rate_limiter_is_a_token_bucket_like_client_gos():
    """Issue 16: QPS/burst like client-go's flowcontrol token bucket: a burst goes at once, then
    one request every 1/qps seconds."""
    from mnv2_operator.k8s import RateLimiter

    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(qps=10, burst=3, clock=lambda: now[0], sleep=sleep)
    waits = [limiter.acquire() for _ in range(5)]
    assert waits[:3] == [0, 0, 0] and waits[3] == pytest.approx(0.1) and waits[4] == pytest.approx(0.1)
    now[0] += 10  # idle: the bucket refills, up to the burst only
    assert [limiter.acquire() for _ in range(3)] == [0, 0, 0]
    assert limiter.acquire() == pytest.approx(0.1)
    assert RateLimiter(qps=0, burst=1).acquire() == 0.0  # unlimited


def test_scale_flags_map_to_settings():
    settings = command.settings_from_args(parse("--api-qps=5", "--api-burst=10", "--create-concurrency=4"))
    assert (settings.api_qps, settings.api_burst, settings.create_concurrency) == (5.0, 10, 4)
    assert command.settings_from_args(parse()).resync_seconds == 300.0
