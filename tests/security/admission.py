"""Evaluating a ValidatingAdmissionPolicy the way kube-apiserver does, with cel-python.

kube-apiserver (admissionregistration.k8s.io/v1, "Validating Admission Policy" in the Kubernetes
docs): the object it checks is the one after defaulting and schema validation; matchConditions
decide whether the policy applies at all; `variables` are evaluated in order and each may use the
earlier ones as `variables.<name>`; every validation whose expression is false denies the request
with its messageExpression (or message). The project's CEL evaluator is tests/api/crd_check.py's;
`join` is Kubernetes' CEL strings library function (list.join(separator)), not in cel-python.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

API_TESTS = Path(__file__).resolve().parents[1] / "api"
if str(API_TESTS) not in sys.path:
    sys.path.insert(0, str(API_TESTS))

import crd_check  # noqa: E402


def _join(items: Any, separator: Any = "") -> Any:
    from celpy import celtypes

    return celtypes.StringType(str(separator).join(str(item) for item in items))


def cel() -> crd_check.Cel:
    return crd_check.Cel(functions={"join": _join})


def stored(job: dict[str, Any]) -> dict[str, Any]:
    """The job as admission sees it: nulls pruned and the CRD's defaults applied (crd_check)."""
    return crd_check.apply_defaults(crd_check.pruned(job), crd_check.SCHEMA)


def denials(
    evaluator: crd_check.Cel,
    policy: dict[str, Any],
    job: dict[str, Any],
    old: dict[str, Any] | None = None,
) -> list[tuple[int, str]]:
    """(index of the validation, its message) for every validation that denies `job`; [] when admitted."""
    spec = policy["spec"]
    request = {"operation": "UPDATE" if old is not None else "CREATE"}
    activation: dict[str, Any] = {"object": stored(job), "oldObject": stored(old) if old else None}
    activation["request"] = request
    for condition in spec.get("matchConditions", []):
        if not evaluator.evaluate(condition["expression"], activation):
            return []
    from celpy import celtypes

    variables = celtypes.MapType({})
    for variable in spec.get("variables", []):
        value = evaluator.value(variable["expression"], {**activation, "variables": variables})
        variables = celtypes.MapType({**variables, celtypes.StringType(variable["name"]): value})
    activation["variables"] = variables
    out = []
    for index, validation in enumerate(spec["validations"]):
        if not evaluator.evaluate(validation["expression"], activation):
            message = validation.get("message", "")
            if "messageExpression" in validation:
                message = str(evaluator.value(validation["messageExpression"], activation))
            out.append((index, message))
    return out
