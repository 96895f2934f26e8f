"""The chart lints clean, every CI value set renders valid objects, and the values schema is strict."""

from __future__ import annotations

import copy
import re

import kubernetes_validate
import pytest
import yaml
from chartlib import (
    CHART,
    CI_VALUES,
    NAMESPACE,
    RELEASE,
    by_kind,
    helm,
    load_values,
    render,
    render_objects,
    restricted_problems,
)

KUBE_VERSION = "1.37"
# Kinds without an upstream schema in kubernetes-validate: checked structurally below.
STRUCTURAL = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("kopf.dev/v1", "KopfPeering"),
    ("kopf.dev/v1", "ClusterKopfPeering"),
}


def _values_ids(path):
    return path.name.removesuffix("-values.yaml")


@pytest.fixture(scope="module", params=CI_VALUES, ids=_values_ids)
def rendered(request) -> tuple[dict, list[dict]]:
    values = load_values(request.param)
    return values, render_objects(values)


def test_ci_value_sets_cover_the_required_cases():
    assert {_values_ids(p) for p in CI_VALUES} >= {"default", "single-namespace", "ha", "monitoring"}


def test_lint_is_clean():
    report = helm.lint(str(CHART), strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("path", CI_VALUES, ids=_values_ids)
def test_lint_is_clean_with_each_value_set(path):
    report = helm.lint(str(CHART), load_values(path), strict=True)
    assert [m for m in report["messages"] if m["severity"] >= 2] == [] and report["errors"] == [], report


def test_every_object_passes_strict_upstream_schemas(rendered):
    _, objects = rendered
    assert objects
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in STRUCTURAL:
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {error}")


def test_objects_without_upstream_schema_are_well_formed(rendered):
    _, objects = rendered
    for obj in objects:
        key = (obj["apiVersion"], obj["kind"])
        if key not in STRUCTURAL:
            continue
        assert set(obj) <= {"apiVersion", "kind", "metadata", "spec"}, obj
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"]), obj["metadata"]
        if obj["kind"] == "ServiceMonitor":
            assert obj["spec"]["selector"]["matchLabels"]
            assert all(e.get("port") for e in obj["spec"]["endpoints"])
        elif obj["kind"] == "PodMonitor":
            assert obj["spec"]["selector"]["matchLabels"]
            for endpoint in obj["spec"]["podMetricsEndpoints"]:
                # a named port, a port number, or a relabeling that keeps the wanted ports
                keeps = any(r.get("action") == "keep" for r in endpoint.get("relabelings", []))
                assert endpoint.get("port") or endpoint.get("portNumber") or keeps, endpoint
        elif obj["kind"] == "PrometheusRule":
            for group in obj["spec"]["groups"]:
                assert group["name"] and group["rules"]
                for rule in group["rules"]:
                    assert ("alert" in rule) != ("record" in rule) and rule["expr"], rule


def test_every_object_has_the_standard_labels(rendered):
    values, objects = rendered
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "mobilenetv2-operator", obj["metadata"]
        assert labels.get("app.kubernetes.io/instance") == RELEASE
        assert labels.get("app.kubernetes.io/managed-by") == "Helm"
        assert labels.get("helm.sh/chart", "").startswith("mobilenetv2-operator-")
        for key, value in values.get("commonLabels", {}).items():
            assert labels.get(key) == value, f"{obj['kind']} lacks commonLabels {key}"


def _selectors(obj: dict) -> list[dict]:
    spec = obj.get("spec", {})
    found = []
    if obj["kind"] == "Service":
        found.append(spec.get("selector", {}))
    elif isinstance(spec.get("selector"), dict):
        found.append(spec["selector"].get("matchLabels", {}))
    return found


USER_LABELS = {
    "commonLabels": {"team": "vision", "env": "prod"},
    "podLabels": {"cost-center": "research"},
    "monitoring": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
        "podMonitor": {"enabled": True, "labels": {"release": "prom"}},
    },
    "replicaCount": 2,
}


def test_selectors_never_contain_user_labels():
    objects = render_objects(USER_LABELS)
    user_keys = {"team", "env", "cost-center", "release"}
    selectors = [(obj["kind"], s) for obj in objects for s in _selectors(obj)]
    kinds = {kind for kind, _ in selectors}
    assert {"Deployment", "Service", "PodDisruptionBudget"} <= kinds
    for kind, selector in selectors:
        assert selector, f"{kind} has an empty selector"
        assert not user_keys & set(selector), f"{kind} selects on user labels: {selector}"


def test_selectors_match_the_operator_pods():
    objects = render_objects(USER_LABELS)
    (deployment,) = by_kind(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["cost-center"] == "research"
    for obj in objects:
        if obj["kind"] in {"Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor"}:
            for selector in _selectors(obj):
                target = pod_labels
                if obj["kind"] == "ServiceMonitor":
                    (service,) = by_kind(objects, "Service")
                    target = service["metadata"]["labels"]
                assert selector.items() <= target.items(), f"{obj['kind']} selects nothing: {selector}"


def _container(objects: list[dict]) -> dict:
    (deployment,) = by_kind(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_deployment_security_probes_and_resources(rendered):
    _, objects = rendered
    (deployment,) = by_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = _container(objects)
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert f"--liveness=http://0.0.0.0:{ports['health']}/healthz" in container["args"]
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_config_checksum_follows_the_config():
    def checksum(values):
        (deployment,) = by_kind(render_objects(values), "Deployment")
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = checksum({})
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum({"replicaCount": 2}) == base
    assert checksum({"operatorConfig": _changed_config()}) != base


def _changed_config() -> dict:
    """The default operator config with one harmless change (a different CPU image)."""
    config = copy.deepcopy(load_values(CHART / "values.yaml")["operatorConfig"])
    profiles = config.get("profiles", {})
    if "CPU" in profiles:
        profiles["CPU"]["image"] = "registry.example/mnv2-trainer-cpu:other"
        return config
    return {**config, "profiles": {"CPU": {"image": "registry.example/mnv2-trainer-cpu:other"}}}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, ["--all-namespaces"]),
        ({"watchNamespaces": ["ml"]}, ["--namespace=ml"]),
        ({"watchNamespaces": ["a", "b"]}, ["--namespace=a", "--namespace=b"]),
    ],
)
def test_watched_namespaces_become_operator_flags(values, expected):
    args = _container(render_objects(values))["args"]
    assert [a for a in args if a == "--all-namespaces" or a.startswith("--namespace=")] == expected


@pytest.mark.parametrize(
    ("values", "kind", "namespace"),
    [
        ({}, "ClusterRole", None),
        ({"watchNamespaces": ["ml-team"]}, "Role", "ml-team"),
        ({"watchNamespaces": ["a", "b"]}, "ClusterRole", None),
    ],
)
def test_role_or_cluster_role_per_watched_namespaces(values, kind, namespace):
    objects = render_objects(values)
    roles = [o for o in objects if o["kind"] in {"Role", "ClusterRole"}]
    bindings = [o for o in objects if o["kind"] in {"RoleBinding", "ClusterRoleBinding"}]
    # A Role also needs a small ClusterRole for the cluster-scoped rules (test_generated checks them).
    extra = ["ClusterRole"] if kind == "Role" else []
    assert [r["kind"] for r in roles] == [kind, *extra]
    assert [b["kind"] for b in bindings] == [f"{kind}Binding", *(f"{k}Binding" for k in extra)]
    assert roles[0]["metadata"].get("namespace") == namespace
    assert bindings[0]["metadata"].get("namespace") == namespace
    assert bindings[0]["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": roles[0]["metadata"]["name"]
    }
    (account,) = by_kind(objects, "ServiceAccount")
    assert bindings[0]["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]


def test_no_wildcards_in_rbac(rendered):
    _, objects = rendered
    for role in (o for o in objects if o["kind"] in {"Role", "ClusterRole"}):
        assert role["rules"]
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(key, []), f"wildcard {key} in {rule}"
                assert not any("*" in item for item in rule.get(key, [])), rule


def test_rbac_can_be_left_to_the_user():
    objects = render_objects({"rbac": {"create": False}, "serviceAccount": {"create": False}})
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ServiceAccount"}


def test_ha_adds_a_disruption_budget_and_peering():
    single = render_objects({})
    assert by_kind(single, "PodDisruptionBudget") == []
    objects = render_objects({"replicaCount": 2})
    (deployment,) = by_kind(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    (pdb,) = by_kind(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert any(a.startswith("--peering=") for a in _container(objects)["args"])
    assert len(by_kind(objects, "ClusterKopfPeering")) == 1
    assert by_kind(objects, "KopfPeering") == []


def test_peering_object_follows_the_rbac_scope():
    objects = render_objects({"watchNamespaces": ["ml-team"]})
    (peering,) = by_kind(objects, "KopfPeering")
    assert peering["metadata"]["namespace"] == "ml-team"
    assert by_kind(objects, "ClusterKopfPeering") == []
    several = render_objects({"watchNamespaces": ["ml-a", "ml-b"]})
    assert sorted(p["metadata"]["namespace"] for p in by_kind(several, "KopfPeering")) == ["ml-a", "ml-b"]
    assert by_kind(several, "ClusterKopfPeering") == []
    standalone = render_objects({"peering": {"enabled": False}})
    assert "--standalone" in _container(standalone)["args"]
    assert not by_kind(standalone, "ClusterKopfPeering")


def test_metrics_service_follows_the_toggle():
    (service,) = by_kind(render_objects({"metrics": {"port": 9100}}), "Service")
    assert service["spec"]["ports"][0]["port"] == 9100
    disabled = render_objects({"metrics": {"enabled": False}})
    assert by_kind(disabled, "Service") == []
    assert not any(a.startswith("--metrics-port") for a in _container(disabled)["args"])


def test_notes_name_the_release_and_the_namespace():
    notes = render({"watchNamespaces": ["ml-team"]})["mobilenetv2-operator/templates/NOTES.txt"]
    assert "kubectl get mnv2job" in notes and "ml-team" in notes and NAMESPACE in notes


@pytest.mark.parametrize(
    "values",
    [
        {"bogus": 1},
        {"metrics": {"enabled": True, "prot": 8080}},
        {"monitoring": {"serviceMonitor": {"enable": True}}},
        {"image": {"repository": "x", "pullPolicy": "Sometimes"}},
        {"replicaCount": 0},
        {"watchNamespaces": ["Not_A_Namespace"]},
        {"peering": {"enabled": "yes"}},
    ],
    ids=lambda v: yaml.safe_dump(v, default_flow_style=True).strip(),
)
def test_schema_rejects_unknown_keys_and_bad_values(values):
    with pytest.raises(helm.HelmError):
        render(values)


def test_values_keys_shared_with_observability_are_exact():
    values = load_values(CHART / "values.yaml")
    assert values["metrics"] == {"enabled": True, "port": 8080}
    assert values["monitoring"] == {
        "serviceMonitor": {"enabled": False, "interval": "30s", "labels": {}},
        "podMonitor": {"enabled": False, "interval": "30s", "labels": {}},
        "prometheusRule": {"enabled": False, "labels": {}, "noProgressMinutes": 15, "pendingMinutes": 15},
        "grafanaDashboard": {"enabled": False, "labels": {"grafana_dashboard": "1"}},
    }


def _leaf_paths(node, prefix=()):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaf_paths(value, (*prefix, key))
    else:
        yield prefix


def test_every_value_has_a_doc_comment():
    """helm-docs style: every key has a `# --` comment above it, or is a parent all of whose children do.

    A commented key documents its whole value (e.g. `resources`), so its children need none.
    """
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    covered_below: int | None = None  # indent under which a documented parent covers its children
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z_][\w.-]*):(.*)$", line)
        if not match:
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3)
        if covered_below is not None and indent > covered_below:
            continue
        covered_below = None
        above = index - 1
        while above >= 0 and re.match(r"^\s*#(?! --)", lines[above]):
            above -= 1
        documented = above >= 0 and lines[above].strip().startswith("# --")
        has_children = not rest.strip() and index + 1 < len(lines) and re.match(
            rf"^\s{{{indent + 1},}}\S", lines[index + 1]
        )
        if documented:
            covered_below = indent
        elif not has_children:
            undocumented.append(key)
    assert not undocumented, f"values without a `# --` comment: {undocumented}"


def test_the_doc_comment_check_can_fail(tmp_path, monkeypatch):
    """The check above reads values.yaml; point it at a file with one undocumented leaf."""
    chart = tmp_path / "chart"
    chart.mkdir()
    (chart / "values.yaml").write_text("# -- documented\na: 1\nparent:\n  # -- fine\n  b: 2\n  c: 3\n")
    monkeypatch.setitem(globals(), "CHART", chart)
    with pytest.raises(AssertionError, match=r"\['c'\]"):
        test_every_value_has_a_doc_comment()


def test_monitoring_toggles_render_their_objects():
    objects = render_objects(load_values(CHART / "ci" / "monitoring-values.yaml"))
    kinds = {o["kind"] for o in objects}
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule"} <= kinds
    configmaps = by_kind(objects, "ConfigMap")
    dashboards = [o for o in configmaps if o["metadata"]["labels"].get("grafana_dashboard")]
    assert len(dashboards) == 1
    defaults = {o["kind"] for o in render_objects({})}
    assert not defaults & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


@pytest.mark.parametrize(
    "values",
    [
        {"commonLabels": {"app.kubernetes.io/name": "x"}},
        {"podLabels": {"helm.sh/chart": "x"}},
        {"commonLabels": {"team": "has space"}},
        {"podAnnotations": {"checksum/config": "0"}},
        {"resources": {"limits": {"memory": "1 Gi"}}},
        {"tolerations": [{"operator": "Bogus"}]},
        {"podDisruptionBudget": {"minAvailable": "x"}},
        {"fullnameOverride": "Upper_Case"},
    ],
    ids=lambda v: yaml.safe_dump(v, default_flow_style=True).strip(),
)
def test_schema_rejects_values_that_would_render_invalid_objects(values):
    with pytest.raises(helm.HelmError):
        render(values)


@pytest.mark.parametrize(
    ("release", "values"),
    [
        ("0", {}), ("a.b", {}), ("x" * 53, {}),
        ("mnv2", {"fullnameOverride": "0"}), ("7", {"nameOverride": "9lives"}),
        ("x" * 53, {"watchNamespaces": ["ml"]}),
    ],
)
def test_odd_release_names_still_render_valid_names(release, values):
    objects = render_objects(values, name=release)
    (service,) = by_kind(objects, "Service")
    name = service["metadata"]["name"]
    assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name), name
    for obj in objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == release
        if obj["apiVersion"] not in {"kopf.dev/v1", "monitoring.coreos.com/v1"}:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_operator_pod_meets_the_restricted_pod_security_standard(rendered):
    _, objects = rendered
    (deployment,) = by_kind(objects, "Deployment")
    assert restricted_problems(deployment["spec"]["template"]["spec"]) == []


def test_the_restricted_check_notices_violations():
    (deployment,) = by_kind(render_objects({}), "Deployment")
    pod = copy.deepcopy(deployment["spec"]["template"]["spec"])
    pod["hostNetwork"] = True
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    pod["containers"][0]["securityContext"]["capabilities"] = {"drop": [], "add": ["SYS_ADMIN"]}
    assert len(restricted_problems(pod)) == 5


def test_user_strings_keep_their_type_and_large_numbers_stay_integers():
    """Found by tests/reliability's fuzzing: YAML-ish strings and big ids must survive rendering."""
    tricky = {"a": "=", "b": "yes", "c": "1e3", "d": "null", "e": "0x1F"}
    objects = render_objects({
        "podAnnotations": tricky, "serviceAccount": {"annotations": tricky},
        "commonLabels": {"level": "1e3", "flag": "on"}, "runAsUser": 5_000_000,
    })
    (deployment,) = by_kind(objects, "Deployment")
    template = deployment["spec"]["template"]
    assert {k: template["metadata"]["annotations"][k] for k in tricky} == tricky
    (account,) = by_kind(objects, "ServiceAccount")
    assert account["metadata"]["annotations"] == tricky
    labels = deployment["metadata"]["labels"]
    assert (labels["level"], labels["flag"]) == ("1e3", "on")
    assert template["spec"]["securityContext"]["runAsUser"] == 5_000_000
    kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


def test_null_values_fall_back_to_the_defaults():
    """`--set watchNamespaces=null` deletes the key in Helm; the chart then watches everything."""
    objects = render_objects({"watchNamespaces": None, "podAnnotations": None, "resources": None})
    assert "--all-namespaces" in _container(objects)["args"]
    assert [o["kind"] for o in objects if o["kind"] in {"Role", "ClusterRole"}] == ["ClusterRole"]
