"""The chart's generated parts equal the code they come from: CRD, RBAC rules, operator-config schema.

One list, checked both ways: the chart grants exactly `mnv2_operator.rbac.RULES` in every value set,
and `RULES` needs nothing the chart does not grant. Regenerate with
`.venv/bin/python charts/mobilenetv2-operator/hack/generate.py`.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml
from chartlib import CHART, CI_VALUES, by_kind, helm, load_values, render, render_objects

REGENERATE = "run .venv/bin/python charts/mobilenetv2-operator/hack/generate.py"


def _generator():
    spec = importlib.util.spec_from_file_location("chart_generate", CHART / "hack" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _grants(rules: list[dict]) -> set[tuple[str, str, str]]:
    """Rules flattened to (apiGroup, resource, verb) triples: equal sets mean equal permissions."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_crd_equals_the_generated_one():
    crd_module = pytest.importorskip("mnv2_operator.crd", reason="mnv2_operator.crd not written yet")
    committed = yaml.safe_load((CHART / "crds" / "mobilenetv2trainjobs.yaml").read_text())
    assert committed == crd_module.generate_crd(), f"crds/mobilenetv2trainjobs.yaml is stale: {REGENERATE}"
    assert (CHART / "crds" / "mobilenetv2trainjobs.yaml").read_text() == _generator().crd_text()


def test_crd_is_a_valid_custom_resource_definition():
    pytest.importorskip("mnv2_operator.crd", reason="mnv2_operator.crd (API helper) not written yet")
    import kubernetes_validate

    for path in sorted((CHART / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(doc, "1.37", strict=True)


def test_rules_file_equals_rbac_rules():
    from mnv2_operator.rbac import RULES

    committed = yaml.safe_load((CHART / "rbac-rules.yaml").read_text())
    assert committed == RULES, f"rbac-rules.yaml is stale: {REGENERATE}"


def test_cluster_rules_file_is_the_cluster_scoped_part_of_rbac_rules():
    from mnv2_operator.rbac import CLUSTER_SCOPED, RULES

    text = (CHART / "rbac-cluster-rules.yaml").read_text()
    assert text == _generator().cluster_rules_text(), f"rbac-cluster-rules.yaml is stale: {REGENERATE}"
    cluster = _grants(yaml.safe_load(text))
    assert cluster == {(g, r, v) for g, r, v in _grants(RULES) if (g, r) in CLUSTER_SCOPED}
    assert ("", "nodes", "get") in cluster  # force-deleting a pod stuck on a lost node reads its node


@pytest.mark.parametrize("path", CI_VALUES, ids=lambda p: p.name)
def test_rendered_roles_grant_exactly_rbac_rules(path):
    """All of the chart's roles together grant RULES, no more, no less; one watched namespace splits
    them into a Role (namespaced resources only) and a ClusterRole (cluster-scoped ones only), since a
    Role's rules on cluster-scoped resources are never in effect (Kubernetes RBAC docs, "Role and
    ClusterRole": a Role grants access within its namespace; nodes, CRDs and namespaces need a
    ClusterRole)."""
    from mnv2_operator.rbac import CLUSTER_SCOPED, RULES

    values = load_values(path)
    objects = render_objects(values)
    roles = [o for o in objects if o["kind"] in {"Role", "ClusterRole"}]
    granted = set().union(*(_grants(role["rules"]) for role in roles))
    needed = _grants(RULES)
    assert granted - needed == set(), f"the chart grants more than the operator uses: {granted - needed}"
    assert needed - granted == set(), f"the operator needs what the chart does not grant: {needed - granted}"
    if len(values.get("watchNamespaces") or []) == 1:
        (role,) = by_kind(objects, "Role")
        (cluster_role,) = by_kind(objects, "ClusterRole")
        assert {(g, r) for g, r, _ in _grants(role["rules"])}.isdisjoint(CLUSTER_SCOPED)
        assert {(g, r) for g, r, _ in _grants(cluster_role["rules"])} <= CLUSTER_SCOPED
        (binding,) = by_kind(objects, "ClusterRoleBinding")
        assert binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
        (account,) = by_kind(objects, "ServiceAccount")
        assert [(s["name"], s["namespace"]) for s in binding["subjects"]] == [
            (account["metadata"]["name"], account["metadata"]["namespace"])
        ]
    else:
        assert [r["kind"] for r in roles] == ["ClusterRole"]


def test_grant_comparison_sees_a_missing_or_extra_verb():
    """The both-ways check above would notice one verb more or less."""
    from mnv2_operator.rbac import RULES

    fewer = [dict(rule, verbs=rule["verbs"][1:]) if i == 0 else rule for i, rule in enumerate(RULES)]
    more = [*RULES, {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    assert _grants(fewer) < _grants(RULES) < _grants(more)


def test_rules_have_no_wildcards():
    from mnv2_operator.rbac import RULES

    for group, resource, verb in _grants(RULES):
        assert "*" not in group + resource + verb


def test_operator_config_schema_is_generated_from_the_model():
    generated_config, generated_defs = _generator().operator_config_schema()
    schema = json.loads((CHART / "values.schema.json").read_text())
    stale = f"values.schema.json is stale: {REGENERATE}"
    assert schema["properties"]["operatorConfig"] == generated_config, stale
    for name, definition in generated_defs.items():
        assert schema["definitions"].get(name) == definition, f"{name}: {stale}"


@pytest.mark.parametrize("path", CI_VALUES, ids=lambda p: p.name)
def test_rendered_config_map_loads_as_the_operator_config(path, tmp_path):
    from mnv2_operator.profiles import load_operator_config

    values = load_values(path)
    objects = render_objects(values)
    (config_map,) = [o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-config")]
    config_file = tmp_path / "operator.yaml"
    config_file.write_text(config_map["data"]["operator.yaml"])
    config = load_operator_config(config_file)
    assert config.namespaces == values.get("watchNamespaces", [])
    chart_profiles = load_values(CHART / "values.yaml")["operatorConfig"]["profiles"]
    for platform, profile in chart_profiles.items():
        assert config.profile(platform).image == profile["image"]
        assert config.profile(platform).device_resource == profile.get("deviceResource")


def test_deployment_mounts_the_config_where_the_operator_reads_it():
    objects = render_objects({})
    (deployment,) = by_kind(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert f"--config={mount['mountPath']}/operator.yaml" in container["args"]


@pytest.mark.parametrize("path", CI_VALUES, ids=lambda p: p.name)
def test_deployment_args_parse_with_the_operators_own_command_line(path):
    """The flags the chart passes are the ones `mnv2 operator` defines, with the meaning intended."""
    import argparse

    from mnv2_operator.commands import operator as command

    values = load_values(path)
    (deployment,) = by_kind(render_objects(values), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    parser = argparse.ArgumentParser(exit_on_error=False)
    command.add_arguments(parser)
    settings = command.settings_from_args(parser.parse_args(container["args"]))
    watched = values.get("watchNamespaces", [])
    assert settings.namespaces == watched and settings.clusterwide == (not watched)
    assert settings.peering == "mnv2-operator"
    # kopf looks for a ClusterKopfPeering when cluster-wide, else a KopfPeering per watched namespace
    objects = render_objects(values)
    if settings.clusterwide:
        assert [p["metadata"]["name"] for p in by_kind(objects, "ClusterKopfPeering")] == [settings.peering]
    else:
        peerings = by_kind(objects, "KopfPeering")
        assert {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings} == {
            (namespace, settings.peering) for namespace in settings.namespaces
        }
    assert settings.config_path == "/etc/mnv2/operator.yaml"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert settings.liveness_url == f"http://0.0.0.0:{ports['health']}/healthz"
    assert settings.metrics_port == ports["metrics"]
    _assert_tuning(settings, values)


# values key -> OperatorSettings field: the operator's tuning flags the Deployment passes.
TUNING = {
    "apiQps": "api_qps",
    "apiBurst": "api_burst",
    "createConcurrency": "create_concurrency",
    "resyncSeconds": "resync_seconds",
    "restartBackoffSeconds": "restart_backoff_seconds",
    "restartBackoffMaxSeconds": "restart_backoff_max_seconds",
}


def _parsed_args(values: dict):
    import argparse

    from mnv2_operator.commands import operator as command

    (deployment,) = by_kind(render_objects(values), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    parser = argparse.ArgumentParser(exit_on_error=False)
    command.add_arguments(parser)
    return container["args"], command.settings_from_args(parser.parse_args(container["args"]))


def _assert_tuning(settings, values: dict) -> None:
    chart_defaults = load_values(CHART / "values.yaml")
    for key, field in TUNING.items():
        expected = values.get(key, chart_defaults[key])
        assert getattr(settings, field) == expected, f"{key} -> {field}"


def test_tuning_defaults_are_the_operators_own():
    """The chart's defaults equal `mnv2 operator`'s, so leaving a value out changes nothing."""
    import argparse

    from mnv2_operator.commands import operator as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    defaults = command.settings_from_args(parser.parse_args([]))
    chart_defaults = load_values(CHART / "values.yaml")
    assert {k: chart_defaults[k] for k in TUNING} == {k: getattr(defaults, f) for k, f in TUNING.items()}


@pytest.mark.parametrize(
    "values",
    [
        {"apiQps": 0.5, "apiBurst": 7, "createConcurrency": 1, "resyncSeconds": 2.5,
         "restartBackoffSeconds": 0.25, "restartBackoffMaxSeconds": 1_000_000},
        {"apiQps": 0, "apiBurst": 123456789, "createConcurrency": 512, "resyncSeconds": 86400,
         "restartBackoffSeconds": 0, "restartBackoffMaxSeconds": 7200},
    ],
    ids=["fractions-and-large", "unlimited-qps"],
)
def test_tuning_values_reach_the_operator_exactly(values):
    args, settings = _parsed_args(values)
    flags = {"--api-qps", "--api-burst", "--create-concurrency", "--resync-seconds",
             "--restart-backoff-seconds", "--restart-backoff-max-seconds"}
    assert {a.split("=", 1)[0] for a in args} >= flags, args
    _assert_tuning(settings, values)


@pytest.mark.parametrize(
    "values",
    [{"apiQps": -1}, {"apiBurst": 0}, {"apiBurst": 1.5}, {"createConcurrency": 0},
     {"resyncSeconds": 0}, {"restartBackoffSeconds": -1}, {"restartBackoffMaxSeconds": "6m"}],
    ids=lambda v: next(iter(v)),
)
def test_schema_rejects_bad_tuning(values):
    with pytest.raises(helm.HelmError):
        render(values)


def test_helm_installs_both_crds_before_the_templates():
    """Helm installs what Chart.crds lists: the job CRD and kopf's peering CRDs the templates use."""
    from chartlib import helm

    with helm.Chart.load(str(CHART)) as chart:
        names = {
            doc["metadata"]["name"]
            for crd in chart.crds
            for doc in yaml.safe_load_all(crd["data"] if isinstance(crd["data"], str) else bytes(crd["data"]))
            if doc
        }
    assert names == {
        "mobilenetv2trainjobs.training.mindspore.io", "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"
    }


def test_chart_readme_is_generated_from_values_and_rules():
    generator = _generator()
    assert (CHART / "README.md").read_text() == generator.readme_text(), f"README.md is stale: {REGENERATE}"
    keys = [key for key, _, _ in generator.documented_values((CHART / "values.yaml").read_text())]
    assert "monitoring.serviceMonitor.interval" in keys and "operatorConfig" in keys
    assert len(keys) == len(set(keys))


def test_admission_policy_file_equals_the_policy_module():
    """files/admission-policy.yaml carries mnv2_operator.policy's CEL rules and defaults unchanged."""
    assert (CHART / "files" / "admission-policy.yaml").read_text() == _generator().admission_text(), (
        f"files/admission-policy.yaml is stale: {REGENERATE}"
    )
