"""The PromQL the chart ships (alert rules and dashboard), collected for the drift and live tests."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from obs_helpers import ALERTS, DASHBOARD

NAME_RE = re.compile(r"\bmnv2_[a-z0-9_]+\b")
SELECTOR_RE = re.compile(r"\b(mnv2_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER_RE = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def alert_exprs() -> dict[str, str]:
    doc = yaml.safe_load(ALERTS.read_text())
    return {f"alert {r['alert']}": r["expr"] for g in doc["groups"] for r in g["rules"]}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> dict[str, str]:
    """Every query in the dashboard: panel targets and template-variable queries."""
    out: dict[str, str] = {}
    dash = dashboard()

    def walk(panels: list[dict]) -> None:
        for p in panels:
            for t in p.get("targets", []):
                out[f"panel {p['title']!r} target {t['refId']}"] = t["expr"]
            walk(p.get("panels", []))

    walk(dash["panels"])
    for var in dash["templating"]["list"]:
        q = var.get("query")
        if isinstance(q, dict):
            out[f"variable ${var['name']}"] = q["query"]
    return out


def metric_names(promql: str) -> set[str]:
    return set(NAME_RE.findall(promql))


def selector_labels(promql: str) -> set[tuple[str, str]]:
    """(metric, label) for every label matcher written inside a metric's braces."""
    return {
        (metric, label) for metric, body in SELECTOR_RE.findall(promql) for label in MATCHER_RE.findall(body)
    }
