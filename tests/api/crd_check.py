"""Checking manifests the way the API server would with the generated CRD: its OpenAPI schema (as
JSON Schema, unknown fields rejected like `kubectl --validate=strict`), its defaults, and its CEL
rules (evaluated with cel-python)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from mnv2_operator.crd import generate_crd

SCHEMA = generate_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def draft4(node: Any) -> Any:
    """OpenAPI v3 (structural) -> JSON Schema draft 4, closing objects like strict field validation."""
    if isinstance(node, list):
        return [draft4(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {
        k: draft4(v)
        for k, v in node.items()
        if not k.startswith("x-kubernetes-") and k not in ("default", "description", "format")
    }
    if node.get("x-kubernetes-int-or-string"):
        out.pop("anyOf", None)
        out["type"] = ["integer", "string"]
    if (
        node.get("type") == "object"
        and "properties" in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def apply_defaults(value: Any, node: dict[str, Any]) -> Any:
    """The API server's structural defaulting: fill missing properties with their defaults, recursively."""
    if isinstance(value, dict) and "properties" in node:
        out = dict(value)
        for name, sub in node["properties"].items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
            if name in out:
                out[name] = apply_defaults(out[name], sub)
        return out
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [apply_defaults(v, node["items"]) for v in value]
    return value


def typed(value: Any, node: dict[str, Any]) -> Any:
    """JSON numbers as CEL sees them: `number` fields are doubles even when written as integers."""
    if node.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict) and "properties" in node:
        return {k: typed(v, node["properties"].get(k, {})) for k, v in value.items()}
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [typed(v, node["items"]) for v in value]
    return value


class Cel:
    def __init__(self, functions: dict[str, Any] | None = None):
        self.celpy = pytest.importorskip("celpy", reason="cel-python (test extra) is not installed")
        self.env = self.celpy.Environment()
        self.functions = functions or {}
        self.programs: dict[str, Any] = {}

    def value(self, expression: str, activation: dict[str, Any]) -> Any:
        """The CEL value of `expression`; activation values are JSON (or already CEL values)."""
        if expression not in self.programs:
            ast = self.env.compile(expression)
            self.programs[expression] = self.env.program(ast, functions=self.functions)
        return self.programs[expression].evaluate({k: self._cel(v) for k, v in activation.items()})

    def _cel(self, value: Any) -> Any:
        """JSON to CEL; CEL values pass unchanged (json_to_cel would turn a BoolType into an IntType)."""
        if type(value).__module__ == self.celpy.celtypes.__name__:
            return value
        return self.celpy.json_to_cel(value)

    def evaluate(self, rule: str, activation: dict[str, Any]) -> bool:
        result = self.value(rule, activation)
        assert isinstance(result, self.celpy.celtypes.BoolType), (rule, result)
        return bool(result)


def cel_failures(cel: Cel, obj: dict[str, Any], old: dict[str, Any] | None = None) -> set[str]:
    """Field paths (spec.x.y) of the CEL rules the object fails, transition rules only with `old`."""
    new = typed(apply_defaults(pruned(obj), SCHEMA), SCHEMA)
    old = typed(apply_defaults(pruned(old), SCHEMA), SCHEMA) if old is not None else None
    failures: set[str] = set()

    def visit(node: dict[str, Any], value: Any, old_value: Any, path: str) -> None:
        for rule in node.get("x-kubernetes-validations", []):
            transition = "oldSelf" in rule["rule"]
            if transition and old_value is None:
                continue
            activation = {"self": value, "oldSelf": old_value} if transition else {"self": value}
            if not cel.evaluate(rule["rule"], activation):
                failures.add(path + rule.get("fieldPath", ""))
        if isinstance(value, dict):
            for name, sub in node.get("properties", {}).items():
                if name in value:
                    old_sub = old_value.get(name) if isinstance(old_value, dict) else None
                    visit(sub, value[name], old_sub, f"{path}.{name}" if path else name)

    visit(SCHEMA, new, old, "")
    return failures


_VALIDATOR = None


def schema_errors(obj: dict[str, Any]) -> list[str]:
    """What the CRD's OpenAPI schema (strict about unknown fields) says about a whole manifest."""
    global _VALIDATOR
    if _VALIDATOR is None:
        import jsonschema

        _VALIDATOR = jsonschema.Draft4Validator(draft4(SCHEMA))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in _VALIDATOR.iter_errors(obj)]


def cel_or_none() -> Cel | None:
    """A CEL evaluator, or None where cel-python is not installed."""
    try:
        import celpy  # noqa: F401
    except ImportError:
        return None
    return Cel()


def pruned(node: Any) -> Any:
    """The manifest after the API server drops null values (no field of the CRD is nullable)."""
    if isinstance(node, dict):
        return {k: pruned(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [pruned(v) for v in node]
    return node
