"""Render the chart with Helm's own Go SDK (PyPI helm-python-sdk): no helm binary, no cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "mobilenetv2-operator"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "mnv2"
NAMESPACE = "mnv2-system"

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (test extra) is not installed")


def render(values: dict | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE) -> dict[str, str]:
    """{template path: manifest text}, exactly as `helm template` would produce them."""
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values or {}, name=name, namespace=namespace)


def render_objects(values: dict | None = None, **kwargs) -> list[dict]:
    """Every Kubernetes object the chart renders (NOTES.txt left out), in template order."""
    objects = []
    for path, text in sorted(render(values, **kwargs).items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects


def load_values(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == kind]
