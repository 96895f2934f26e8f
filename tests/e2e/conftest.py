"""Fixtures: the cluster (double + simulator, or MNV2_E2E_KUBECONFIG), a namespace per test, the operator."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from harness import (
    DoubleCluster,
    OperatorRunner,
    RealCluster,
    create_namespace,
    delete_namespace,
    job_manifest,
)
from mnv2_operator import k8s

REAL_KUBECONFIG = os.environ.get("MNV2_E2E_KUBECONFIG")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """The double (default) or the real cluster of MNV2_E2E_KUBECONFIG, with the operator's identity."""
    previous = os.environ.get("KUBECONFIG")
    if REAL_KUBECONFIG:
        started = RealCluster(REAL_KUBECONFIG, tmp_path_factory.mktemp("real")).start()
    else:
        started = DoubleCluster(tmp_path_factory.mktemp("double")).start()
    # The operator (OperatorRunner reads KUBECONFIG) runs as the chart's ServiceAccount; tests use
    # `kube`, an administrator.
    os.environ["KUBECONFIG"] = str(started.operator_kubeconfig)
    yield started
    started.stop()
    if previous is None:
        os.environ.pop("KUBECONFIG", None)
    else:
        os.environ["KUBECONFIG"] = previous


@pytest.fixture
def kube(cluster) -> k8s.Kube:
    client = k8s.Kube.from_environment(str(cluster.kubeconfig), user_agent="mnv2-e2e")
    yield client
    client.close()


@pytest.fixture
def sim(cluster):
    """The kubelet/scheduler simulator; scenarios that need it skip on a real cluster."""
    if cluster.sim is None:
        pytest.skip("needs the kubelet simulator: pods on a real cluster run real images")
    return cluster.sim


@pytest.fixture
def namespace(cluster, kube: k8s.Kube) -> str:
    name = create_namespace(kube)
    yield name
    delete_namespace(kube, name)
    errors = cluster.errors()
    assert not errors, f"the kubelet simulator failed: {errors!r}"


@pytest.fixture
def operator(namespace: str):
    """The real kopf operator watching this test's namespace (harness.OperatorRunner.FAST settings)."""
    runner = OperatorRunner([namespace]).start()
    yield runner
    runner.stop()


@pytest.fixture
def job_factory(kube: k8s.Kube, namespace: str):
    def make(name: str = "mnv2", **kwargs: Any) -> dict:
        return kube.create(job_manifest(name, namespace, **kwargs))

    return make


def here() -> Path:
    return Path(__file__).parent
