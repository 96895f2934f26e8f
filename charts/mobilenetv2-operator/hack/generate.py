"""Write the chart's generated files from the code they must equal; tests/chart fails when they drift.

- crds/mobilenetv2trainjobs.yaml   = mnv2_operator.crd.generate_crd() (what `mnv2 crd` prints)
- rbac-rules.yaml                  = mnv2_operator.rbac.RULES (the Role/ClusterRole's only rules)
- rbac-cluster-rules.yaml          = the part of RULES on cluster-scoped resources (rbac.CLUSTER_SCOPED),
  which a Role cannot grant: with one watched namespace the chart adds a ClusterRole of just these
- values.schema.json's operatorConfig part = mnv2_operator.profiles.OperatorConfig's JSON schema,
  every field optional (the operator merges the ConfigMap over its packaged defaults)
- README.md                        = the values table, from values.yaml's `# --` comments (helm-docs style)
- files/admission-policy.yaml      = mnv2_operator.policy's admission rules (CEL) and the defaults the
  template merges values over (templates/admission-policy.yaml renders the policy's data from values)

Run after changing any of those: `.venv/bin/python charts/mobilenetv2-operator/hack/generate.py`.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1]
CRD_FILE = CHART / "crds" / "mobilenetv2trainjobs.yaml"
RULES_FILE = CHART / "rbac-rules.yaml"
CLUSTER_RULES_FILE = CHART / "rbac-cluster-rules.yaml"
SCHEMA_FILE = CHART / "values.schema.json"
VALUES_FILE = CHART / "values.yaml"
README_FILE = CHART / "README.md"
ADMISSION_FILE = CHART / "files" / "admission-policy.yaml"
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


def cluster_scoped_rules() -> list[dict[str, list[str]]]:
    """RULES narrowed to cluster-scoped resources (rules left empty dropped), order kept."""
    from mnv2_operator.rbac import CLUSTER_SCOPED, RULES

    narrowed = []
    for rule in RULES:
        resources = [
            r for r in rule["resources"] if any((g, r) in CLUSTER_SCOPED for g in rule["apiGroups"])
        ]
        if resources:
            narrowed.append({**rule, "resources": resources})
    return narrowed


def cluster_rules_text() -> str:
    header = (
        "# Generated from mnv2_operator.rbac.RULES and CLUSTER_SCOPED: do not edit; run hack/generate.py.\n"
        "# The rules on cluster-scoped resources, which a Role cannot grant: with one watched namespace\n"
        "# templates/rbac.yaml renders them into a small ClusterRole and the rest into the Role.\n"
    )
    return header + dump_yaml(cluster_scoped_rules())


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


def documented_values(text: str) -> list[tuple[str, str, str]]:
    """(dotted key, description, default as YAML) for each `# --` comment in values.yaml.

    A comment documents the key below it and that key's whole value; continuation lines are the
    `#` lines right after it.
    """
    lines = text.splitlines()
    data = yaml.safe_load(text)
    rows: list[tuple[str, str, str]] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    comment: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = [stripped.removeprefix("# --").strip()]
            continue
        if stripped.startswith("#") and comment:
            comment.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r"^(\s*)([A-Za-z_][\w.-]*):", line)
        if not match:
            comment = [] if stripped else comment
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack] + [key]
        stack.append((indent, key))
        if comment:
            value: Any = data
            for part in path:
                value = value[part]
            default = f"`{json.dumps(value)}`"
            if len(default) > 60:
                default = "see values.yaml"
            rows.append((".".join(path), " ".join(comment), default))
            comment = []
    return rows


def admission_data() -> dict[str, Any]:
    """What templates/admission-policy.yaml needs besides values: the fixed CEL and every default."""
    from mnv2_operator import names, policy
    from mnv2_operator.api import GROUP, PLURAL, VERSION
    from mnv2_operator.profiles import OperatorConfig, default_config_dict

    defaults = OperatorConfig.model_validate(default_config_dict())
    return {
        "resource": {"group": GROUP, "version": VERSION, "plural": PLURAL},
        "policyDefaults": policy.Policy().model_dump(by_alias=True, mode="json"),
        "operatorLabelPrefixes": list(names.RESERVED_LABEL_PREFIXES),
        "operatorAnnotationPrefixes": list(names.RESERVED_ANNOTATION_PREFIXES),
        "driverHostPaths": list(policy.DRIVER_HOST_PATHS),
        "profileDefaults": {
            platform.value: {
                "image": profile.image,
                "volumes": [v.model_dump(mode="json", exclude_none=True) for v in profile.volumes],
            }
            for platform, profile in defaults.profiles.items()
        },
        "tagOrDigestSuffix": policy.TAG_OR_DIGEST_SUFFIX,
        "namespaceLabel": policy.NAMESPACE_NAME_LABEL,
        "matchConditions": policy.MATCH_CONDITIONS,
        "derivedVariables": [{"name": n, "expression": e} for n, e in policy.DERIVED_VARIABLES],
        "validations": policy.admission_validations(),
    }


def admission_text() -> str:
    header = (
        "# Generated from mnv2_operator.policy by hack/generate.py: do not edit.\n"
        "# templates/admission-policy.yaml merges values.operatorConfig over these defaults and renders\n"
        "# the ValidatingAdmissionPolicy that policy.admission_policy() builds from the same config.\n"
    )
    return header + dump_yaml(admission_data())


def readme_text() -> str:
    """The chart's README: what it installs and every value, from values.yaml."""
    from mnv2_operator.rbac import RULES

    cluster_resources = ", ".join(
        f"`{r}`" for rule in cluster_scoped_rules() for r in rule["resources"]
    )
    out = [
        "# mobilenetv2-operator",
        "",
        "<!-- Generated by hack/generate.py from values.yaml and mnv2_operator.rbac: do not edit. -->",
        "",
        "Installs the mnv2 operator, which runs `MobileNetV2TrainJob` resources (MindSpore MobileNetV2",
        "training on Ascend, GPU or CPU): the CRD and kopf's peering CRDs (`crds/`), the operator",
        "Deployment, its ServiceAccount and RBAC, its configuration (platform profiles), a metrics Service",
        "and, when enabled, a ServiceMonitor, PodMonitor, PrometheusRule and Grafana dashboard.",
        "",
        "```bash",
        "helm install mnv2 charts/mobilenetv2-operator --namespace mnv2-system --create-namespace",
        "```",
        "",
        "## Values",
        "",
        "| Key | Default | Description |",
        "|---|---|---|",
    ]
    for key, description, default in documented_values(VALUES_FILE.read_text()):
        cell, text = default.replace("|", "\\|"), description.replace("|", "\\|")
        out.append(f"| `{key}` | {cell} | {text} |")
    out += [
        "",
        "## Permissions",
        "",
        "A ClusterRole with exactly these rules (`rbac-rules.yaml`, from `mnv2_operator.rbac.RULES`).",
        "When `watchNamespaces` has exactly one entry they are split: a Role in that namespace gets the",
        "rules on namespaced resources, and a small ClusterRole only those on cluster-scoped resources,",
        "which a Role cannot grant (`rbac-cluster-rules.yaml`: " + cluster_resources + ").",
        "",
        "| API group | Resources | Verbs |",
        "|---|---|---|",
    ]
    for rule in RULES:
        groups = ", ".join(g or '"" (core)' for g in rule["apiGroups"])
        out.append(f"| {groups} | {', '.join(rule['resources'])} | {', '.join(rule['verbs'])} |")
    return "\n".join(out) + "\n"


def main() -> int:
    RULES_FILE.write_text(rules_text())
    print(f"wrote {RULES_FILE.relative_to(CHART)}")
    CLUSTER_RULES_FILE.write_text(cluster_rules_text())
    print(f"wrote {CLUSTER_RULES_FILE.relative_to(CHART)}")
    SCHEMA_FILE.write_text(values_schema_text(json.loads(SCHEMA_FILE.read_text())))
    print(f"wrote {SCHEMA_FILE.relative_to(CHART)}")
    README_FILE.write_text(readme_text())
    print(f"wrote {README_FILE.relative_to(CHART)}")
    ADMISSION_FILE.write_text(admission_text())
    print(f"wrote {ADMISSION_FILE.relative_to(CHART)}")
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
