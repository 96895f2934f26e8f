"""Write the chart's generated files from the code they must equal; tests/chart fails when they drift.

- crds/mobilenetv2trainjobs.yaml   = mnv2_operator.crd.generate_crd() (what `mnv2 crd` prints)
- rbac-rules.yaml                  = mnv2_operator.rbac.RULES (the Role/ClusterRole's only rules)
- values.schema.json's operatorConfig part = mnv2_operator.profiles.OperatorConfig's JSON schema,
  every field optional (the operator merges the ConfigMap over its packaged defaults)

Run after changing any of those: `.venv/bin/python charts/mobilenetv2-operator/hack/generate.py`.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1]
CRD_FILE = CHART / "crds" / "mobilenetv2trainjobs.yaml"
RULES_FILE = CHART / "rbac-rules.yaml"
SCHEMA_FILE = CHART / "values.schema.json"
DEF_PREFIX = "operatorConfig."
# Set by the chart from other values, so not settable under operatorConfig.
CHART_OWNED_CONFIG_KEYS = ("namespaces",)


class _Dumper(yaml.SafeDumper):
    """Block-style YAML with indented lists, as kubectl and helm print it."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)


def crd_text() -> str:
    from mnv2_operator.crd import generate_crd

    header = "# Generated from mnv2_operator.crd.generate_crd() (`mnv2 crd`): do not edit; see hack/.\n"
    return header + dump_yaml(generate_crd())


def rules_text() -> str:
    from mnv2_operator.rbac import RULES

    header = (
        "# Generated from mnv2_operator.rbac.RULES: do not edit; run hack/generate.py.\n"
        "# templates/rbac.yaml renders these, unchanged, into the Role or ClusterRole.\n"
    )
    return header + dump_yaml([dict(rule) for rule in RULES])


def _relaxed(node: Any) -> Any:
    """Drop `required` and defaults everywhere: a partial config is valid (merged over defaults)."""
    if isinstance(node, dict):
        return {k: _relaxed(v) for k, v in node.items() if k not in ("required", "default", "title")}
    if isinstance(node, list):
        return [_relaxed(v) for v in node]
    return node


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
                out[key] = "#/definitions/" + DEF_PREFIX + value.removeprefix("#/$defs/")
            else:
                out[key] = _rewrite_refs(value)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


def operator_config_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """(schema of values.operatorConfig, definitions it refers to), from OperatorConfig."""
    from mnv2_operator.profiles import OperatorConfig

    schema = OperatorConfig.model_json_schema(by_alias=True, mode="validation")
    defs = schema.pop("$defs", {})
    schema = _relaxed(_rewrite_refs(schema))
    for key in CHART_OWNED_CONFIG_KEYS:
        schema["properties"].pop(key, None)
    schema["description"] = (
        "mnv2_operator.profiles.OperatorConfig (camelCase), merged over the operator's packaged defaults."
    )
    definitions = {DEF_PREFIX + name: _relaxed(_rewrite_refs(d)) for name, d in sorted(defs.items())}
    return schema, definitions


def values_schema_text(current: dict[str, Any]) -> str:
    """values.schema.json with its operatorConfig part regenerated (the rest is hand-written)."""
    schema = copy.deepcopy(current)
    config, definitions = operator_config_schema()
    kept = {k: v for k, v in schema.get("definitions", {}).items() if not k.startswith(DEF_PREFIX)}
    schema["definitions"] = {**kept, **definitions}
    schema["properties"]["operatorConfig"] = config
    return json.dumps(schema, indent=2) + "\n"


def main() -> int:
    RULES_FILE.write_text(rules_text())
    print(f"wrote {RULES_FILE.relative_to(CHART)}")
    SCHEMA_FILE.write_text(values_schema_text(json.loads(SCHEMA_FILE.read_text())))
    print(f"wrote {SCHEMA_FILE.relative_to(CHART)}")
    try:
        text = crd_text()
    except ImportError as error:
        print(f"skipped {CRD_FILE.relative_to(CHART)}: {error}", file=sys.stderr)
        return 1
    CRD_FILE.write_text(text)
    print(f"wrote {CRD_FILE.relative_to(CHART)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
