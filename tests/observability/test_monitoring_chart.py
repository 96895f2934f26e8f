"""The chart's monitoring templates, rendered with Helm's Go SDK: toggles, selectors that match the
objects they watch, the PrometheusRule being the promtool-checked file, the dashboard ConfigMap."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from obs_helpers import ALERTS, CHART, DASHBOARD, ROOT
from obs_tools import require

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (test extra) is not installed")

ALL_ON = {
    "monitoring": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
        "podMonitor": {"enabled": True, "interval": "10s", "labels": {"release": "kps"}},
        "prometheusRule": {
            "enabled": True,
            "labels": {"release": "kps"},
            "noProgressMinutes": 7,
            "pendingMinutes": 9,
        },
        "grafanaDashboard": {"enabled": True, "labels": {"grafana_dashboard": "1", "team": "ml"}},
    }
}
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def render(values: dict) -> list[dict]:
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values, name="mnv2", namespace="mnv2-system")
    return [
        doc
        for path, text in sorted(out.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def one(objects: list[dict], kind: str, name_suffix: str = "") -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"{kind}*{name_suffix}: {[o['metadata']['name'] for o in found]}"
    return found[0]


@pytest.fixture(scope="module")
def all_on() -> list[dict]:
    return render(ALL_ON)


def test_off_by_default() -> None:
    objects = render({})
    assert not [o for o in objects if o["kind"] in MONITORING_KINDS]
    assert not [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")
    ]


def test_service_monitor_selects_the_metrics_service(all_on: list[dict]) -> None:
    sm = one(all_on, "ServiceMonitor")
    svc = one(all_on, "Service", "-metrics")
    assert sm["metadata"]["labels"]["release"] == "kps"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [svc["metadata"]["namespace"]]}
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    # ...and no other Service of the chart.
    others = [o for o in all_on if o["kind"] == "Service" and o is not svc]
    for other in others:
        assert not sm["spec"]["selector"]["matchLabels"].items() <= other["metadata"]["labels"].items()
    [endpoint] = sm["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}


def test_service_monitor_needs_the_metrics_service() -> None:
    values = {**ALL_ON, "metrics": {"enabled": False, "port": 8080}}
    assert not [o for o in render(values) if o["kind"] == "ServiceMonitor"]


def test_pod_monitor_matches_the_trainer_pods_the_operator_renders(all_on: list[dict]) -> None:
    from mnv2_operator.api import load_job_file
    from mnv2_operator.profiles import load_operator_config
    from mnv2_operator.render import render_job

    pm = one(all_on, "PodMonitor")
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    [endpoint] = pm["spec"]["podMetricsEndpoints"]
    assert endpoint["honorLabels"] is True  # keeps the trainer's `job` label (alerts use it)
    assert endpoint["interval"] == "10s"
    [keep] = [r for r in endpoint["relabelings"] if r["action"] == "keep"]
    assert keep["sourceLabels"] == ["__meta_kubernetes_pod_container_port_name"]
    port_re = re.compile(keep["regex"])  # Prometheus anchors relabel regexes: fullmatch

    job = load_job_file(ROOT / "examples" / "gpu-finetune.yaml")
    pods = [o for o in render_job(job, load_operator_config(None)) if o["kind"] == "Pod"]
    assert pods
    for pod in pods:
        assert pm["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        for key in pm["spec"]["podTargetLabels"]:
            assert key in pod["metadata"]["labels"]
        ports = [p for c in pod["spec"]["containers"] for p in c.get("ports", [])]
        scraped = {p["name"] for p in ports if port_re.fullmatch(p["name"])}
        metric_ports = {p["name"] for p in ports if p["name"].startswith("metrics")}
        assert scraped == metric_ports and len(scraped) == 4  # one per GPU process, not the scheduler


def test_pod_monitor_follows_watch_namespaces() -> None:
    pm = one(render({**ALL_ON, "watchNamespaces": ["ml-a", "ml-b"]}), "PodMonitor")
    assert pm["spec"]["namespaceSelector"] == {"matchNames": ["ml-a", "ml-b"]}


def test_prometheus_rule_is_the_checked_file_with_values_applied(all_on: list[dict], tmp_path: Path) -> None:
    rule = one(all_on, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    source = yaml.safe_load(ALERTS.read_text())
    rendered = rule["spec"]["groups"]
    fors = {r["alert"]: r.get("for") for g in rendered for r in g["rules"]}
    assert fors["MNV2NoProgress"] == "7m"
    assert fors["MNV2PodsPendingTooLong"] == "9m"
    # Everything else is the file, verbatim (Prometheus templates in annotations untouched).
    for group in source["groups"]:
        for r in group["rules"]:
            if r["alert"] in {"MNV2NoProgress", "MNV2PodsPendingTooLong"}:
                r["for"] = fors[r["alert"]]
    assert rendered == source["groups"]
    # What the cluster would load passes promtool too.
    out = tmp_path / "rendered-rules.yaml"
    out.write_text(yaml.safe_dump({"groups": rendered}))
    r = subprocess.run(
        [require("promtool"), "check", "rules", str(out)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_dashboard_configmap(all_on: list[dict]) -> None:
    cm = one(all_on, "ConfigMap", "-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["labels"]["team"] == "ml"
    [(key, text)] = cm["data"].items()
    assert key.endswith(".json")
    assert json.loads(text) == json.loads(DASHBOARD.read_text())


def test_ci_monitoring_values_render_every_monitoring_object() -> None:
    values = yaml.safe_load((CHART / "ci" / "monitoring-values.yaml").read_text())
    kinds = {o["kind"] for o in render(values)}
    assert kinds >= MONITORING_KINDS | {"ConfigMap"}
