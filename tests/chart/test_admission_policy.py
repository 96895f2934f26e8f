"""The chart's ValidatingAdmissionPolicy is the operator's policy: rendered from the same values, it
equals `mnv2_operator.policy.admission_policy()` built from the configuration the operator loads.

The operator reads the chart's ConfigMap (`operator.yaml`) merged over its packaged defaults, so for
every value set the VAP and its binding must equal what policy.admission_policy() makes of that
file; tests/security then shows that this CEL refuses what policy.violations() refuses.
Kubernetes' own schema for admissionregistration.k8s.io/v1 checks the objects (kubernetes-validate).
"""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from chartlib import CHART, CI_VALUES, by_kind, helm, load_values, render_objects
from mnv2_operator import policy
from mnv2_operator.profiles import load_operator_config

KUBE_VERSION = "1.37"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DIGEST_IMAGE = "registry.example.internal:5000/mnv2/cpu@sha256:" + "0123456789abcdef" * 4
VALUE_SETS = {
    **{p.name.removesuffix("-values.yaml"): load_values(p) for p in CI_VALUES},
    "single-node example": {
        "operatorConfig": yaml.safe_load((EXAMPLES / "policy-single-node.yaml").read_text())
    },
    "no policy key": {"operatorConfig": {"profiles": {"GPU": {"image": "gpu.example/t:1"}}}},
    "image by digest": {"operatorConfig": {"profiles": {"CPU": {"image": DIGEST_IMAGE}}}},
}


def _loaded_config(objects: list[dict], tmp_path: Path):
    (configmap,) = [c for c in by_kind(objects, "ConfigMap") if "operator.yaml" in c.get("data", {})]
    path = tmp_path / "operator.yaml"
    path.write_text(configmap["data"]["operator.yaml"])
    return load_operator_config(path)


def _comparable(spec: dict) -> dict:
    """Variables compared by value: their expressions are JSON literals (Helm's toJson escapes <, >
    and & as \\u003c..., Python's json.dumps does not; both are the same CEL literal)."""
    out = dict(spec)
    out["variables"] = [
        {"name": v["name"], "value": _literal(v["expression"])} for v in spec.get("variables", [])
    ]
    return out


def _literal(expression: str):
    try:
        return json.loads(expression)
    except json.JSONDecodeError:
        return expression  # a derived variable: compared as text


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_chart_renders_the_policy_the_operator_applies(name, tmp_path):
    objects = render_objects(VALUE_SETS[name])
    (vap,) = by_kind(objects, "ValidatingAdmissionPolicy")
    (binding,) = by_kind(objects, "ValidatingAdmissionPolicyBinding")
    expected_vap, expected_binding = policy.admission_policy(_loaded_config(objects, tmp_path))
    assert _comparable(vap["spec"]) == _comparable(expected_vap["spec"])
    assert binding["spec"] == {**expected_binding["spec"], "policyName": vap["metadata"]["name"]}
    for obj in (vap, binding):
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_relaxed_values_reach_the_policy_data():
    objects = render_objects(VALUE_SETS["admission-policy"])
    (vap,) = by_kind(objects, "ValidatingAdmissionPolicy")
    data = {v["name"]: _literal(v["expression"]) for v in vap["spec"]["variables"]}
    assert "hostPath" in data["volumeTypes"] and data["singleNode"] is True
    assert data["hostPathPrefixes"] == ["/mnt/datasets", "/mnt/scratch"]
    assert data["readWritePrefixes"] == ["/mnt/scratch"]
    assert "registry.example.internal/mnv2/" in data["imageRepositories"]
    assert "ghcr.io/mnv2/mnv2-trainer-cpu" in data["imageRepositories"]  # the profile's, tag cut
    assert "/opt/ascend/driver" in data["driverHostPaths"]  # the profile's own host path
    assert "example.com/locked/" in data["reservedAnnotationPrefixes"]
    assert "training.mindspore.io/" in data["reservedAnnotationPrefixes"]  # the operator's, always


def test_a_digest_and_a_registry_port_leave_the_repository():
    (vap,) = by_kind(render_objects(VALUE_SETS["image by digest"]), "ValidatingAdmissionPolicy")
    data = {v["name"]: _literal(v["expression"]) for v in vap["spec"]["variables"]}
    assert "registry.example.internal:5000/mnv2/cpu" in data["imageRepositories"]


def test_the_switch_turns_the_policy_off():
    objects = render_objects({"admissionPolicy": {"enabled": False}})
    assert not by_kind(objects, "ValidatingAdmissionPolicy")
    assert not by_kind(objects, "ValidatingAdmissionPolicyBinding")


def test_the_policy_needs_the_api_or_kubernetes_1_30():
    """`helm template` offline knows API groups, not kinds: the template falls back to the version.
    Helm's default capabilities (Kubernetes 1.36 for Helm 4.2) include admissionregistration.k8s.io/v1."""
    text = (CHART / "templates" / "admission-policy.yaml").read_text()
    assert '.Capabilities.APIVersions.Has (printf "%s/ValidatingAdmissionPolicy" $vapApi)' in text
    assert 'semverCompare ">=1.30-0" .Capabilities.KubeVersion.Version' in text
    assert by_kind(render_objects({}), "ValidatingAdmissionPolicy")


@pytest.mark.parametrize(
    "policy_values",
    [
        {"volumeTypes": ["hostpath"]},
        {"hostPathPrefixes": [{"path": "/mnt/../etc"}]},
        {"hostPathPrefixes": [{"path": "/mnt/data/"}]},
        {"hostPathPrefixes": [{"path": "/mnt", "writable": True}]},
        {"singleNode": "yes"},
        {"imageRepositories": ["ghcr.io/team/trainer:1"]},
        {"imageRepositories": ["ghcr.io/team/../other"]},
        {"allowEverything": True},
    ],
)
def test_values_schema_checks_the_policy(policy_values):
    with helm.Chart.load(str(CHART)) as chart:
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema({"operatorConfig": {"policy": policy_values}})
        chart.validate_schema({"operatorConfig": {"policy": {"hostPathPrefixes": [{"path": "/mnt"}]}}})
