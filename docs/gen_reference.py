"""Generate docs/reference.md, the resource reference, from the models themselves.

Why generated: the pydantic models are the one definition of the MobileNetV2TrainJob resource, its
status and the operator configuration (the CRD schema is generated from the same models), so the
reference cannot drift from what the API server and the operator accept. tests/docs fails when the
committed file differs from what this script prints.

    .venv/bin/python docs/gen_reference.py            # rewrite docs/reference.md
    .venv/bin/python docs/gen_reference.py --check    # exit 1 when docs/reference.md is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "reference.md"


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _non_null(options: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in options if o.get("type") != "null"]


class _Renderer:
    """Walks one model's JSON schema; every nested object model gets its own section, once."""

    def __init__(self, schema: dict[str, Any], root_path: str):
        self.defs: dict[str, Any] = schema.get("$defs", {})
        self.root = schema
        self.root_path = root_path
        self.sections: list[tuple[str, str, dict[str, Any]]] = []  # (path, model name, schema)
        self.section_of: dict[str, str] = {}  # model name -> path of its section

    def _resolve(self, node: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        if "$ref" in node:
            name = _ref_name(node["$ref"])
            return self.defs[name], name
        return node, None

    def _is_object_model(self, node: dict[str, Any]) -> bool:
        return node.get("type") == "object" and bool(node.get("properties"))

    def type_of(self, node: dict[str, Any], path: str) -> str:
        """A short type description; object models link to (and queue) their section."""
        if "anyOf" in node:
            options = _non_null(node["anyOf"])
            if len(options) == 1:
                return self.type_of(options[0], path)
            kinds = {o.get("type") for o in options}
            if node.get("x-kubernetes-int-or-string") or kinds == {"integer", "string"}:
                return "integer or string (quantity)"
            return " or ".join(self.type_of(o, path) for o in options)
        target, name = self._resolve(node)
        if "enum" in target:
            return "enum: " + ", ".join(f"`{v}`" for v in target["enum"])
        if "const" in target:
            return f"`{target['const']}`"
        if self._is_object_model(target):
            model = name or path.rsplit(".", 1)[-1]
            if model not in self.section_of:
                self.section_of[model] = path
                self.sections.append((path, model, target))
            return f"[{model}](#{self.anchor(self.section_of[model])})"
        kind = target.get("type")
        if kind == "array":
            return f"list of {self.type_of(target.get('items', {}), path + '[]')}"
        if kind == "object":
            values = target.get("additionalProperties")
            if isinstance(values, dict) and values:
                keys = target.get("propertyNames")
                named = isinstance(keys, dict) and ("$ref" in keys or "enum" in keys)
                key_type = self.type_of(keys, path) if named else "string"
                return f"map {key_type} → {self.type_of(values, path + '.*')}"
            return "object"
        if target.get("x-kubernetes-int-or-string"):
            return "integer or string (quantity)"
        return str(kind or "any")

    @staticmethod
    def anchor(path: str) -> str:
        return path.lower().replace(".", "").replace("[]", "").replace("*", "")

    @staticmethod
    def constraints(node: dict[str, Any]) -> str:
        if "anyOf" in node:
            options = _non_null(node["anyOf"])
            if len(options) == 1:
                node = {**options[0], **{k: v for k, v in node.items() if k != "anyOf"}}
        parts = []
        for key, text in (("minimum", "≥ {}"), ("exclusiveMinimum", "> {}"), ("maximum", "≤ {}"),
                          ("exclusiveMaximum", "< {}"), ("minLength", "length ≥ {}"),
                          ("maxLength", "length ≤ {}"), ("minItems", "items ≥ {}")):
            if key in node:
                parts.append(text.format(node[key]))
        return ", ".join(parts)

    @staticmethod
    def default(node: dict[str, Any], required: bool) -> str:
        if required:
            return "required"
        if "default" not in node or node["default"] is None:
            return ""
        return f"`{json.dumps(node['default'])}`"

    def table(self, path: str, schema: dict[str, Any]) -> list[str]:
        lines = ["| Field | Type | Default | Description |", "|---|---|---|---|"]
        required = set(schema.get("required", []))
        for field, node in schema.get("properties", {}).items():
            description = node.get("description") or self._resolve(node)[0].get("description", "")
            limits = self.constraints(node)
            if limits:
                description = f"{description} ({limits})" if description else limits
            description = description.replace("|", "\\|").replace("\n", " ")
            kind = self.type_of(node, f"{path}.{field}").replace("|", "\\|")
            lines.append(f"| `{field}` | {kind} | {self.default(node, field in required)} | {description} |")
        return lines

    def render(self, title: str, intro: str) -> list[str]:
        """The root model's table, then every nested model's, in the order they were first met."""
        out = [f"## {title}", "", intro, ""]
        out += [f"### `{self.root_path}`", ""]
        out += self.table(self.root_path, self.root)
        index = 0
        while index < len(self.sections):
            path, _model, schema = self.sections[index]
            index += 1
            out += ["", f"### `{path}`", ""]
            if schema.get("description"):
                out += [schema["description"].strip(), ""]
            out += self.table(path, schema)
        return [*out, ""]


def _printer_columns() -> list[str]:
    from mnv2_operator.crd import generate_crd

    version = generate_crd()["spec"]["versions"][0]
    lines = ["| Column | Field | Description |", "|---|---|---|"]
    for column in version.get("additionalPrinterColumns", []):
        lines.append(f"| {column['name']} | `{column['jsonPath']}` | {column.get('description', '')} |")
    return lines


def _presets() -> list[str]:
    from mnv2.config import PRESETS, Platform
    from pydantic.alias_generators import to_camel

    platforms = [Platform.ASCEND, Platform.GPU, Platform.CPU]
    header = "| Field | " + " | ".join(p.value for p in platforms) + " |"
    lines = [header, "|---" * (len(platforms) + 1) + "|"]
    for key in PRESETS[Platform.CPU]:
        values = [PRESETS[p][key] for p in platforms]
        cells = [str(getattr(v, "value", v)) for v in values]
        lines.append(f"| `{to_camel(key)}` | " + " | ".join(cells) + " |")
    return lines


def _exit_codes() -> list[str]:
    from mnv2.exitcodes import EXIT_TABLE

    lines = ["| Code | Reason | Retried by `restartPolicy: ExitCode` | Meaning |", "|---|---|---|---|"]
    for code, info in sorted(EXIT_TABLE.items()):
        lines.append(f"| {code} | {info.reason} | {'yes' if info.retryable else 'no'} | {info.meaning} |")
    lines += ["", "Codes not in the table: 1-127 are permanent, 128 and above (signals) are retried."]
    return lines


def generate() -> str:
    """The whole reference page as Markdown."""
    from mnv2_operator import api
    from mnv2_operator.profiles import OperatorConfig

    out = [
        "# Reference",
        "",
        "<!-- Generated by docs/gen_reference.py from the models; do not edit by hand. -->",
        "",
        f"`apiVersion: {api.API_VERSION}`, `kind: {api.KIND}`, plural `{api.PLURAL}`, "
        f"short names {', '.join(f'`{n}`' for n in api.SHORT_NAMES)}; namespaced, with a status subresource.",
        "",
        "`kubectl get mnv2job` prints:",
        "",
        *_printer_columns(),
        "",
    ]
    spec = _Renderer(api.JobSpec.model_json_schema(by_alias=True, mode="validation"), "spec")
    out += spec.render(
        "MobileNetV2TrainJob spec",
        "What a job asks for. Unknown fields are rejected; every problem is reported at once with its "
        "field path (`mnv2 validate job.yaml`).",
    )
    out += [
        "### Platform presets of `spec.training`",
        "",
        "Training fields left unset take the seed's recipe for the job's platform:",
        "",
        *_presets(),
        "",
    ]
    status = _Renderer(api.JobStatus.model_json_schema(by_alias=True, mode="validation"), "status")
    out += status.render("MobileNetV2TrainJob status", "Written by the operator only.")
    config = _Renderer(OperatorConfig.model_json_schema(by_alias=True, mode="validation"), "operatorConfig")
    out += config.render(
        "Operator configuration",
        "The file given to `mnv2 operator --config` (the chart's `operatorConfig` value), merged over the "
        "packaged defaults key by key; lists are replaced.",
    )
    out += ["## Trainer exit codes", "", *_exit_codes(), ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/reference.md is stale")
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is stale: run python docs/gen_reference.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
