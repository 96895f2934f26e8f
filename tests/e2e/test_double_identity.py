"""The operator's identity in the e2e harness is the chart's ServiceAccount, on the double and on a real
cluster alike (Using RBAC Authorization; Service account tokens): what the chart's rules grant is
allowed, anything else is 403 Forbidden, so a permission the operator lacks fails the suite."""

from __future__ import annotations

import yaml
from harness import OPERATOR_ACCOUNT, OPERATOR_NAMESPACE, RBAC_RULES, http
from mnv2_operator import k8s


def operator_token(cluster) -> str:
    config = yaml.safe_load(cluster.operator_kubeconfig.read_text())
    return config["users"][0]["user"]["token"]


def test_the_operator_runs_with_exactly_the_charts_rules(cluster, namespace):
    rules = yaml.safe_load(RBAC_RULES.read_text())
    assert any("pods" in r["resources"] and "list" in r["verbs"] for r in rules)
    assert not any("secrets" in r["resources"] or "*" in r["resources"] for r in rules)
    kube = k8s.Kube.from_environment(str(cluster.operator_kubeconfig))
    try:
        assert kube.list(k8s.PODS, namespace) == []  # granted by the chart: list pods
        try:
            kube._call("GET", f"/api/v1/namespaces/{namespace}/secrets")
        except k8s.ApiError as error:
            assert error.status == 403
            assert f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}" in str(error)
        else:
            raise AssertionError("the operator's identity may read secrets: the chart grants no such rule")
    finally:
        kube.close()
    if cluster.simulated:  # the double's own record of who is asking
        code, status = http(
            cluster.url, "DELETE", f"/api/v1/namespaces/{namespace}", token=operator_token(cluster)
        )
        assert code == 403 and status["reason"] == "Forbidden"
