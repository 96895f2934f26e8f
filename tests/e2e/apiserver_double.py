"""An in-process Kubernetes API-server double: KMock's `KubernetesEmulator`, as strict as kube-apiserver
for what the operator uses.

KMock 0.8 gives the HTTP server, request parsing, API discovery, Kubernetes-shaped error bodies and its
reaction DSL (tests inject faults with `double['post /api/v1/namespaces/x/pods'] << 500`; reactions take
priority over the stored-object handlers here, so a fault really prevents the write). What a controller
meets on a real cluster is added here (REFERENCE §6, §7), each with the Kubernetes page it follows:

- Objects (API Concepts): uid, creationTimestamp, a resourceVersion bumped on every write, 409 on a stale
  resourceVersion or an existing name, no-op writes change nothing; merge / JSON / strategic-merge (as
  merge) patches and PUT; label and field selectors (answered from a namespace and label index, so a
  labelled LIST does not copy every object of the type); `generation` bumped by spec changes and when
  deletion starts; the status subresource ignores everything but status, the main resource ignores status.
- CRDs (Custom Resources): a created CustomResourceDefinition is served with its structural schema:
  unknown fields pruned (spec, and status through /status) unless x-kubernetes-preserve-unknown-fields,
  defaults filled, schema and CEL rules (transition rules with oldSelf) checked -> 422 Invalid with
  `details.causes[].field`; `?fieldValidation=Strict` refuses unknown fields with 400 instead.
- Deletion (Finalizers; Pod lifecycle: termination of pods; Garbage collection): finalizers hold an
  object with deletionTimestamp; a scheduled running pod is deleted gracefully (deletionTimestamp +
  deletionGracePeriodSeconds, Terminating until the kubelet confirms with grace period 0 -- the
  simulator does, unless its node is lost); `gracePeriodSeconds=0` (query or DeleteOptions) removes it
  at once; background garbage collection by ownerReferences; namespace deletion (Namespaces: Terminating,
  content deleted, the namespace goes once it is empty, 403 for new content meanwhile).
- Authorization (RBAC; admission plugins): bearer tokens map to users; RBAC rules come from the stored
  ClusterRole/Role(Binding) objects (so the harness grants the operator the chart's rules the same way
  on the double and on a real cluster); no token = cluster-admin (raw-HTTP tests of the double itself).
  Admission: OwnerReferencesPermissionEnforcement (blockOwnerDeletion needs `update` on the owner's
  `<plural>/finalizers`), pods' schedulingGates (PodScheduled=False/SchedulingGated, gates may only be
  removed), a pod-count ResourceQuota (`set_pod_quota`), the Eviction API (`pods/<name>/eviction`).
- Watches (API Concepts: Efficient detection of changes): replay after `resourceVersion=N` from a bounded
  per-resource history (`history_limit`); older than that -> an ERROR event with a 410 Expired Status;
  BOOKMARK events every `bookmark_interval` s when `allowWatchBookmarks=true`; events are serialized once
  and shared by all watchers; objects that stop (start) matching a watch's selector are sent as DELETED
  (ADDED) to it.

Public API for tests (coroutines run in the double's event loop; from a test thread use the harness:
`cluster.call(coro)`, or `cluster.sim` (`SimHandle`) whose methods wrap the common ones):
- writes through the server's own rules: `create(resource, namespace, body)`, `update(resource, namespace,
  name, change, subresource=None)`, `delete(resource, namespace, name, grace_period=None)`,
  `evict(namespace, pod, reason, message)` (DisruptionTarget, then graceful deletion);
- reads (deep copies): `get_object`, `live_objects(resource, namespace)`, `select(resource, namespace,
  "k=v")`, `creations(resource, namespace, name)` (how often a name was created), `events_for`;
  `objects['v1/pods', ns, name].history` (KMock: every stored version, deletions included);
- switches: `set_pod_quota(namespace, limit | None)`, `history_limit` (watch events kept per resource),
  `bookmark_interval`, `gc_delay`;
- identities: `tokens` (bearer token -> `User`; "admin" is cluster-admin, `User.service_account(ns, name)`
  is authorized by the stored RBAC objects), `request_token(namespace, account)`, `can(user, verb, group,
  resource, namespace)`;
- observation: `calls` ((client, group, resource, verb) served: the RBAC audit), `listeners` (called with
  (event type, resource, stored object) after every change: read, never mutate).
Helpers: `disruption(reason, message)` and `add_condition(obj, condition)` build pod conditions;
`kubeconfig_for(url, token)`. Stored objects are never mutated in place: every write stores a new dict, so
the HTTP handlers hand stored dicts to the JSON encoder uncopied.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import datetime
import importlib.util
import itertools
import json
import re
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import attrs
import jsonpatch
import kmock
from kmock._internal import apps, dicts, parsing


def _crd_check() -> Any:
    """tests/api/crd_check (one CRD-checking implementation), loaded by path: putting tests/api on
    sys.path would make its conftest shadow tests/e2e's for `import conftest` users."""
    if "crd_check" not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "api" / "crd_check.py"
        spec = importlib.util.spec_from_file_location("crd_check", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["crd_check"] = module
        spec.loader.exec_module(module)
    return sys.modules["crd_check"]


crd_check = _crd_check()

NAMESPACE_RES = kmock.resource("", "v1", "namespaces")

_kmock_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    """KMock 0.8 reads `/api/v1/namespaces[/NAME[/status]]` as a namespace prefix with nothing after it
    and fails; those URLs address the Namespace objects themselves."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and (
        len(parts) <= 4 or parts[4:] in (["status"], ["finalize"])
    ):
        name = parts[3] if len(parts) >= 4 else None
        sub = parts[4] if len(parts) == 5 else None
        return parsing.ParsedPath("", "v1", "namespaces", None, name, sub)
    return _kmock_parse_path(path)


parsing.parse_path = _parse_path
POD_RES = kmock.resource("", "v1", "pods")
NODE_RES = kmock.resource("", "v1", "nodes")
CRD_RES = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
RBAC = "rbac.authorization.k8s.io"

# (group, version, plural): kind, namespaced, subresources. What the operator, kopf and the harness use.
RESOURCES: dict[tuple[str, str, str], tuple[str, bool, set[str]]] = {
    ("", "v1", "namespaces"): ("Namespace", False, {"status", "finalize"}),
    ("", "v1", "pods"): ("Pod", True, {"status", "eviction"}),
    ("", "v1", "nodes"): ("Node", False, {"status"}),
    ("", "v1", "services"): ("Service", True, set()),
    ("", "v1", "configmaps"): ("ConfigMap", True, set()),
    ("", "v1", "serviceaccounts"): ("ServiceAccount", True, {"token"}),
    ("", "v1", "events"): ("Event", True, set()),
    ("events.k8s.io", "v1", "events"): ("Event", True, set()),
    ("coordination.k8s.io", "v1", "leases"): ("Lease", True, set()),
    (RBAC, "v1", "clusterroles"): ("ClusterRole", False, set()),
    (RBAC, "v1", "clusterrolebindings"): ("ClusterRoleBinding", False, set()),
    (RBAC, "v1", "roles"): ("Role", True, set()),
    (RBAC, "v1", "rolebindings"): ("RoleBinding", True, set()),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions"): (
        "CustomResourceDefinition",
        False,
        {"status"},
    ),
    ("scheduling.volcano.sh", "v1beta1", "podgroups"): ("PodGroup", True, {"status"}),
    ("kopf.dev", "v1", "kopfpeerings"): ("KopfPeering", True, set()),
    ("kopf.dev", "v1", "clusterkopfpeerings"): ("ClusterKopfPeering", False, set()),
}
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
ADMIN_TOKEN = "admin"
SCHEDULING_GATED = "Scheduling is blocked due to non-empty scheduling gates"


def now_iso(offset: float = 0.0) -> str:
    moment = datetime.datetime.now(tz=datetime.UTC) + datetime.timedelta(seconds=offset)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(
    status: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> kmock.KubernetesError:
    return kmock.KubernetesError(
        status=status, reason=reason, message=message, details=details or {"causes": []}
    )


def _plural_group(resource: kmock.resource) -> str:
    return f"{resource.plural}.{resource.group}" if resource.group else resource.plural


def forbidden(resource: kmock.resource, name: str | None, why: str) -> kmock.KubernetesError:
    """403 as kube-apiserver words it: `pods "x" is forbidden: <why>` (admission, RBAC, quota)."""
    subject = f'{_plural_group(resource)} "{name}"' if name else _plural_group(resource)
    return _error(
        403,
        "Forbidden",
        f"{subject} is forbidden: {why}",
        {"name": name or "", "group": resource.group, "kind": resource.plural},
    )


def invalid(
    kind: str, resource: kmock.resource, name: str, causes: list[dict[str, str]]
) -> kmock.KubernetesError:
    """422 Invalid with one cause per field, as kube-apiserver's NewInvalid renders field errors."""
    texts = [f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    qualified = f"{kind}.{resource.group}" if resource.group else kind
    return _error(
        422,
        "Invalid",
        f'{qualified} "{name}" is invalid: {joined}',
        {"name": name, "group": resource.group, "kind": kind, "causes": causes},
    )


# --- selectors ---------------------------------------------------------------------------------

_SET_RE = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(text: str) -> list[str]:
    """Split on commas that are not inside a set's parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


@dataclasses.dataclass(frozen=True)
class Selector:
    """A parsed label selector: equality terms (answered from the label index) and a full matcher."""

    text: str
    terms: tuple[tuple[str, str, Any], ...]

    @property
    def equalities(self) -> list[tuple[str, str]]:
        return [(key, value) for op, key, value in self.terms if op == "="]

    def matches(self, labels: dict[str, str]) -> bool:
        for op, key, value in self.terms:
            if op == "=" and labels.get(key) != value:
                return False
            if op == "!=" and labels.get(key) == value:
                return False
            if op == "in" and labels.get(key) not in value:
                return False
            if op == "notin" and key in labels and labels[key] in value:
                return False
            if op == "exists" and key not in labels:
                return False
            if op == "!exists" and key in labels:
                return False
        return True


_SELECTORS: dict[str, Selector] = {}


def parse_selector(text: str | None) -> Selector:
    """Equality-, set- and existence-based label selectors, as `kubectl -l` understands them."""
    text = text or ""
    if text in _SELECTORS:
        return _SELECTORS[text]
    terms: list[tuple[str, str, Any]] = []
    for term in _split_selector(text):
        if match := _SET_RE.match(term):
            values = frozenset(v.strip() for v in match[3].split(",") if v.strip())
            terms.append((match[2], match[1], values))
        elif "!=" in term:
            key, value = term.split("!=", 1)
            terms.append(("!=", key.strip(), value.strip()))
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            terms.append(("=", key.strip(), value.strip()))
        elif term.startswith("!"):
            terms.append(("!exists", term[1:].strip(), None))
        else:
            terms.append(("exists", term, None))
    if len(_SELECTORS) < 10000:
        _SELECTORS[text] = Selector(text, tuple(terms))
    return Selector(text, tuple(terms))


def label_selector_matches(selector: str | None, labels: dict[str, str]) -> bool:
    return parse_selector(selector).matches(labels)


def field_selector_matches(selector: str | None, obj: dict[str, Any]) -> bool:
    for term in _split_selector(selector or ""):
        negate = "!=" in term
        path, value = term.replace("==", "=").split("!=" if negate else "=", 1)
        actual: Any = obj
        for part in path.strip().split("."):
            actual = actual.get(part) if isinstance(actual, dict) else None
        if (str(actual if actual is not None else "") == value.strip()) == negate:
            return False
    return True


# --- CRD structural schemas ---------------------------------------------------------------------
# Order as in the real server (Custom Resources: "Specifying a structural schema", "Field pruning",
# "Defaulting", "Validation rules"): nulls of non-nullable fields dropped, unknown fields pruned, defaults
# filled, then the OpenAPI schema and the CEL rules checked. JSON-Schema translation, defaulting, CEL
# typing and the evaluator are tests/api/crd_check's; the walk below adds items/additionalProperties,
# ratcheting, and causes shaped like kube-apiserver's.


def _render(value: Any) -> str:
    """How field.Invalid prints a value: scalars as JSON, objects and arrays by their type."""
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return json.dumps(value)


def _field(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def prune(value: Any, node: dict[str, Any], path: str = "", dropped: list[str] | None = None) -> Any:
    """Drop what the schema does not declare, and nulls of non-nullable fields; `dropped` gets the paths."""
    if isinstance(value, dict):
        props = node.get("properties") or {}
        extra = node.get("additionalProperties")
        keep_unknown = bool(node.get("x-kubernetes-preserve-unknown-fields")) or extra is True
        out = {}
        for key, sub in value.items():
            where = f"{path}.{key}" if path else key
            schema = props[key] if key in props else (extra if isinstance(extra, dict) else None)
            if sub is None and not (schema or {}).get("nullable"):
                continue
            if schema is not None:
                out[key] = prune(sub, schema, where, dropped)
            elif keep_unknown:
                out[key] = sub
            elif dropped is not None:
                dropped.append(where)
        return out
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [prune(v, node["items"], f"{path}[{i}]", dropped) for i, v in enumerate(value)]
    return value


def _schema_cause(error: Any) -> dict[str, str]:
    """A jsonschema error as kube-apiserver's field error: reason, message (without the field), field."""
    field, value, kind, bound = (
        _field(error.absolute_path),
        error.instance,
        error.validator,
        error.validator_value,
    )
    if kind == "required":
        return {
            "reason": "FieldValueRequired",
            "message": "Required value",
            "field": _field([*error.absolute_path, error.message.split("'")[1]]),
        }
    if kind == "enum":
        supported = ", ".join(json.dumps(v) for v in bound)
        return {
            "reason": "FieldValueNotSupported",
            "message": f"Unsupported value: {_render(value)}: supported values: {supported}",
            "field": field,
        }
    if kind == "type":
        expected = bound if isinstance(bound, str) else " or ".join(bound)
        actual = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer"}.get(
            type(value), "number"
        )
        message = f'Invalid value: "{actual}": {field} in body must be of type {expected}: "{actual}"'
        return {"reason": "FieldValueTypeInvalid", "message": message, "field": field}
    if kind == "maxLength":
        return {
            "reason": "FieldValueTooLong",
            "message": f"Too long: may not be more than {bound} bytes",
            "field": field,
        }
    if kind in ("maxItems", "maxProperties"):
        return {
            "reason": "FieldValueTooMany",
            "message": f"Too many: {len(value)}: must have at most {bound} items",
            "field": field,
        }
    detail = {
        "minimum": f"should be greater than or equal to {bound}",
        "maximum": f"should be less than or equal to {bound}",
        "exclusiveMinimum": f"should be greater than {error.schema.get('minimum')}",
        "exclusiveMaximum": f"should be less than {error.schema.get('maximum')}",
        "minLength": f"should be at least {bound} chars long",
        "pattern": f"should match '{bound}'",
        "minItems": f"should have at least {bound} items",
    }.get(kind, error.message)
    return {
        "reason": "FieldValueInvalid",
        "message": f"Invalid value: {_render(value)}: {field} in body {detail}",
        "field": field,
    }


_MISSING = object()


def _at(obj: Any, parts: Iterable[Any]) -> Any:
    for part in parts:
        try:
            obj = obj[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return obj


def _cel_view(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a root CEL rule sees: metadata reduced to name and generateName (Validation rules)."""
    if obj is None:
        return None
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k in ("name", "generateName")}
    return {**obj, "metadata": meta}


class CrdSchema:
    """One served version's structural schema: `admit(new, old)` -> (stored object, causes, pruned paths)."""

    def __init__(self, schema: dict[str, Any]):
        import jsonschema

        self.schema = schema
        self.validator = jsonschema.Draft4Validator(crd_check.draft4(schema))
        self._cel: crd_check.Cel | None = None
        self._memo: dict[tuple[str, int, str], tuple[bool, str]] = {}

    def admit(
        self, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> tuple[dict, list[dict[str, str]], list[str]]:
        dropped: list[str] = []
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        body = crd_check.apply_defaults(prune(body, self.schema, "", dropped), self.schema)
        new = {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "metadata": obj.get("metadata") or {},
            **body,
        }
        causes = [
            _schema_cause(error)
            for error in self.validator.iter_errors({k: v for k, v in new.items() if k != "metadata"})
            if old is None or _at(new, error.absolute_path) != _at(old, error.absolute_path)  # ratcheting
        ]
        if not causes:
            causes = self._cel_causes(new, old)
        return new, causes, dropped

    def _cel_causes(self, new: dict[str, Any], old: dict[str, Any] | None) -> list[dict[str, str]]:
        causes: list[dict[str, str]] = []

        def visit(node: dict[str, Any], value: Any, old_value: Any, path: str) -> None:
            if old_value is not None and value == old_value:
                return  # ratcheting: an unchanged subtree stays valid
            for rule in node.get("x-kubernetes-validations", []):
                transition = "oldSelf" in rule["rule"]
                if transition and old_value is None:
                    continue  # transition rules run only when an old value exists
                ok, error = self._evaluate(rule["rule"], node, value, old_value if transition else None)
                if not ok:
                    causes.append(self._rule_cause(rule, value, path, error))
            if isinstance(value, dict):
                props, extra = node.get("properties") or {}, node.get("additionalProperties")
                for key, sub in value.items():
                    schema = props.get(key) or (extra if isinstance(extra, dict) else None)
                    if schema is None or (not path and key == "metadata"):
                        continue
                    old_sub = old_value.get(key) if isinstance(old_value, dict) else None
                    visit(schema, sub, old_sub, f"{path}.{key}" if path else key)
            elif isinstance(value, list) and isinstance(node.get("items"), dict):
                keys = (
                    node.get("x-kubernetes-list-map-keys")
                    if node.get("x-kubernetes-list-type") == "map"
                    else None
                )
                olds = {}
                if keys:
                    olds = {tuple(o.get(k) for k in keys): o for o in old_value or [] if isinstance(o, dict)}
                for i, item in enumerate(value):
                    old_item = (
                        olds.get(tuple(item.get(k) for k in keys))
                        if keys and isinstance(item, dict)
                        else None
                    )
                    visit(node["items"], item, old_item, f"{path}[{i}]")

        visit(self.schema, _cel_view(new), _cel_view(old), "")
        return causes

    def _evaluate(self, rule: str, node: dict[str, Any], value: Any, old_value: Any) -> tuple[bool, str]:
        """CEL in pure Python is slow; identical (rule, value) pairs recur (every job of a benchmark)."""
        key = (rule, id(node), json.dumps([value, old_value], sort_keys=True, default=str))
        if key not in self._memo:
            if self._cel is None:
                self._cel = crd_check.Cel()
            activation = {"self": crd_check.typed(value, node)}
            if old_value is not None:
                activation["oldSelf"] = crd_check.typed(old_value, node)
            try:
                result = (self._cel.evaluate(rule, activation), "")
            except Exception as error:  # a runtime error fails the rule, as in kube-apiserver
                result = (False, f"{rule}: evaluation error: {error}")
            if len(self._memo) > 50000:
                self._memo.clear()
            self._memo[key] = result
        return self._memo[key]

    @staticmethod
    def _rule_cause(rule: dict[str, Any], value: Any, path: str, error: str) -> dict[str, str]:
        message = error or rule.get("message") or f"failed rule: {rule['rule']}"
        reason = rule.get("reason", "FieldValueInvalid")
        prefix = {
            "FieldValueForbidden": "Forbidden",
            "FieldValueRequired": "Required value",
            "FieldValueDuplicate": f"Duplicate value: {_render(value)}",
        }.get(reason, f"Invalid value: {_render(value)}")
        return {
            "reason": reason,
            "message": f"{prefix}: {message}",
            "field": path + rule.get("fieldPath", ""),
        }


# --- metadata validation (API Concepts: object names; Labels and Selectors: syntax) -------------------

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def metadata_causes(resource: kmock.resource, meta: dict[str, Any]) -> list[dict[str, str]]:
    """Name and label syntax kube-apiserver enforces on every object."""
    causes = []
    name = meta.get("name") or ""
    if resource.plural in ("namespaces",):
        pattern, limit, what = _DNS_LABEL, 63, "RFC 1123 label"
    elif resource.plural == "services":
        pattern, limit, what = _DNS_1035, 63, "RFC 1035 label"
    elif resource.group == RBAC:
        pattern, limit, what = re.compile(r"^[^/%]+$"), 10**6, "path segment name"
    else:
        pattern, limit, what = _DNS_SUBDOMAIN, 253, "RFC 1123 subdomain"
    if len(name) > limit:
        causes.append(
            {
                "reason": "FieldValueInvalid",
                "message": f"Invalid value: {json.dumps(name)}: must be no more than {limit} characters",
                "field": "metadata.name",
            }
        )
    elif not pattern.match(name):
        causes.append(
            {
                "reason": "FieldValueInvalid",
                "message": f"Invalid value: {json.dumps(name)}: a lowercase {what} must match the regex",
                "field": "metadata.name",
            }
        )
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, local = key.rpartition("/")
        if len(local) > 63 or not _LABEL_NAME.match(local) or (prefix and not _DNS_SUBDOMAIN.match(prefix)):
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "message": f"Invalid value: {json.dumps(key)}: name part must consist of alphanumeric "
                    "characters, '-', '_' or '.'",
                    "field": "metadata.labels",
                }
            )
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            why = (
                "must be no more than 63 characters"
                if isinstance(value, str) and len(value) > 63
                else "a valid label must be an empty string or consist of alphanumeric characters, "
                "'-', '_' or '.'"
            )
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "message": f"Invalid value: {json.dumps(value)}: {why}",
                    "field": "metadata.labels",
                }
            )
    return causes


# --- users and RBAC (Using RBAC Authorization) -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class User:
    """Who a bearer token authenticates as."""

    name: str
    groups: tuple[str, ...] = ("system:authenticated",)

    @property
    def admin(self) -> bool:
        return "system:masters" in self.groups

    @classmethod
    def service_account(cls, namespace: str, name: str) -> User:
        return cls(
            f"system:serviceaccount:{namespace}:{name}",
            ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
        )


ADMIN = User("admin", ("system:masters", "system:authenticated"))


def rule_allows(rule: dict[str, Any], group: str, resource: str, verb: str, name: str | None) -> bool:
    groups, resources, verbs = (
        rule.get("apiGroups") or [],
        rule.get("resources") or [],
        rule.get("verbs") or [],
    )
    base = resource.split("/")[0]
    return (
        (group in groups or "*" in groups)
        and (resource in resources or "*" in resources or (resource == base and f"{base}/*" in resources))
        and (verb in verbs or "*" in verbs)
        and (not rule.get("resourceNames") or (name is not None and name in rule["resourceNames"]))
    )


# --- the double ----------------------------------------------------------------------------------


class _History:
    """One resource's recent changes for watches: entries [rv, type, object, previous, bytes | None]."""

    __slots__ = ("base", "changed", "compacted", "entries")

    def __init__(self) -> None:
        self.entries: list[list[Any]] = []
        self.base = 0  # absolute position of entries[0]
        self.compacted = 0  # resourceVersion of the newest event no longer kept
        self.changed: asyncio.Event | None = None

    def append(self, entry: list[Any], limit: int) -> None:
        self.entries.append(entry)
        if len(self.entries) > limit:
            drop = len(self.entries) - limit
            self.compacted = self.entries[drop - 1][0]
            del self.entries[:drop]
            self.base += drop
        if self.changed is not None:
            self.changed.set()
            self.changed = None

    def wait_event(self) -> asyncio.Event:
        if self.changed is None:
            self.changed = asyncio.Event()
        return self.changed


def _event_bytes(entry: list[Any]) -> bytes:
    if entry[4] is None:
        entry[4] = json.dumps({"type": entry[1], "object": entry[2]}).encode() + b"\n"
    return entry[4]


def _verb(request: kmock.Request) -> str | None:
    method = str(request.method.value).upper()
    if method == "GET":
        return (
            "watch" if request.params.get("watch") in ("true", "1") else ("get" if request.name else "list")
        )
    if method == "POST":
        return "create"
    return {
        "PATCH": "patch",
        "PUT": "update",
        "DELETE": "delete" if request.name else "deletecollection",
    }.get(method)


@attrs.define(kw_only=True)
class ApiServerDouble(kmock.KubernetesEmulator):
    """KMock's emulator with a kube-apiserver-grade object store (see the module docstring)."""

    _rv: itertools.count = attrs.field(factory=lambda: itertools.count(1), init=False)
    _current_rv: int = attrs.field(default=0, init=False)
    _index: dict[Any, dict[str | None, dict[str, dict[str, Any]]]] = attrs.field(
        factory=lambda: defaultdict(dict), init=False
    )
    _labels: dict[Any, dict[tuple[str, str], set[tuple[str | None, str]]]] = attrs.field(
        factory=lambda: defaultdict(lambda: defaultdict(set)), init=False
    )
    _dependents: dict[str, set[tuple[Any, str | None, str]]] = attrs.field(
        factory=lambda: defaultdict(set), init=False
    )
    _histories: dict[Any, _History] = attrs.field(factory=lambda: defaultdict(_History), init=False)
    _schemas: dict[Any, CrdSchema] = attrs.field(factory=dict, init=False)
    _quotas: dict[str, tuple[str, int]] = attrs.field(factory=dict, init=False)
    _tasks: set[asyncio.Task] = attrs.field(factory=set, init=False)
    _infos: dict[Any, kmock.ResourceInfo] = attrs.field(factory=dict, init=False)  # KMock's lookup is slow
    # Replaced by a fresh event on every change (any resource): the namespace controller waits on it.
    _changed: asyncio.Event | None = attrs.field(default=None, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    gc_delay: float = 0.0
    history_limit: int = 20000  # watch events kept per resource; older resourceVersions get 410 Gone
    bookmark_interval: float = 5.0  # seconds without events before a BOOKMARK (when asked for)
    tokens: dict[str, User] = attrs.field(factory=lambda: {ADMIN_TOKEN: ADMIN})
    # Every (client, apiGroup, resource, verb) served: the operator's RBAC rules are checked against it.
    calls: set[tuple[str, str, str, str]] = attrs.field(factory=set)
    # Called (in the server's loop) after every stored change with the stored object (do not mutate it).
    listeners: list[Callable[[str, kmock.resource, dict[str, Any]], None]] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.fallback[kmock.method.PUT] << self._serve_replace
        self.fallback[kmock.method.POST] << self._serve_post_subresource
        for (group, version, plural), (kind, namespaced, subresources) in RESOURCES.items():
            self.add_resource(
                group, version, plural, kind=kind, namespaced=namespaced, subresources=subresources
            )

    def _audit(self, request: kmock.Request) -> None:
        """Record (client, apiGroup, resource[/subresource], verb) for the RBAC check."""
        if request.resource is None or request.resource.plural is None:
            return  # discovery
        verb = _verb(request)
        if verb is None:
            return
        client = (request.headers.get("User-Agent") or "").split("/")[0]
        resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
        self.calls.add((client, request.resource.group or "", resource, verb))

    def add_resource(
        self,
        group: str,
        version: str,
        plural: str,
        *,
        kind: str,
        namespaced: bool,
        subresources: Iterable[str] = (),
    ) -> None:
        """Make a resource discoverable and servable (CRDs are served by creating them instead)."""
        info = kmock.ResourceInfo(
            kind=kind,
            namespaced=namespaced,
            verbs=VERBS,
            subresources=set(subresources),
            singular=kind.lower(),
        )
        self.resources[kmock.resource(group, version, plural)] = info
        self._infos[kmock.resource(group, version, plural)] = info

    # KMock's emulator mutates its store in `_handle` before any reaction runs; we mutate inside the
    # fallback handlers instead, so that an injected fault (a reaction) really prevents the write.
    # KMock also keeps every request for assertions and matches each new request against reactions by
    # scanning that history, which is quadratic over a long test session: keep only requests in flight.
    async def _handle(self, request: kmock.Request):  # type: ignore[override]
        self._audit(request)
        try:
            return await apps.RawHandler._handle(self, request)
        finally:
            with contextlib.suppress(ValueError):
                self._requests.remove(request)

    # -- authentication and authorization --------------------------------------------------------

    def _user(self, request: kmock.Request) -> User:
        auth = request.headers.get("Authorization") or ""
        if not auth:
            return ADMIN  # the double's own raw-HTTP tests; every client of the harness sends a token
        user = self.tokens.get(auth.removeprefix("Bearer ").strip())
        if user is None:
            raise _error(401, "Unauthorized", "Unauthorized")
        return user

    def rules_for(self, user: User, namespace: str | None) -> list[dict[str, Any]]:
        """The RBAC rules bound to `user` (cluster-wide, plus `namespace`'s RoleBindings)."""

        def bound(binding: dict[str, Any]) -> bool:
            for subject in binding.get("subjects") or []:
                kind, name = subject.get("kind"), subject.get("name")
                if (kind == "User" and name == user.name) or (kind == "Group" and name in user.groups):
                    return True
                if (
                    kind == "ServiceAccount"
                    and user.name == f"system:serviceaccount:{subject.get('namespace')}:{name}"
                ):
                    return True
            return False

        def role(kind: str, ns: str | None, name: str) -> list[dict[str, Any]]:
            plural = "clusterroles" if kind == "ClusterRole" else "roles"
            obj = self._live(kmock.resource(RBAC, "v1", plural), ns if kind == "Role" else None, name)
            return list((obj or {}).get("rules") or [])

        rules: list[dict[str, Any]] = []
        for binding in self._index[kmock.resource(RBAC, "v1", "clusterrolebindings")].get(None, {}).values():
            if bound(binding):
                rules += role("ClusterRole", None, binding["roleRef"]["name"])
        if namespace is not None:
            for binding in (
                self._index[kmock.resource(RBAC, "v1", "rolebindings")].get(namespace, {}).values()
            ):
                if bound(binding):
                    rules += role(binding["roleRef"]["kind"], namespace, binding["roleRef"]["name"])
        return rules

    def can(
        self, user: User, verb: str, group: str, resource: str, namespace: str | None, name: str | None = None
    ) -> bool:
        return user.admin or any(
            rule_allows(r, group, resource, verb, name) for r in self.rules_for(user, namespace)
        )

    def _authorize(self, request: kmock.Request, user: User, verb: str | None = None) -> None:
        """RBAC (Using RBAC Authorization), with kube-apiserver's 403 message."""
        resource = request.resource
        if user.admin or resource is None or resource.plural is None:
            return
        verb = verb or _verb(request) or "get"
        plural = resource.plural + (f"/{request.subresource}" if request.subresource else "")
        if self.can(user, verb, resource.group or "", plural, request.namespace, request.name):
            return
        where = f'in the namespace "{request.namespace}"' if request.namespace else "at the cluster scope"
        group = resource.group or ""
        why = f'User "{user.name}" cannot {verb} resource "{plural}" in API group "{group}" {where}'
        raise forbidden(resource, request.name, why)

    # -- the store ----------------------------------------------------------------------------------

    def _info(self, resource: kmock.resource | None) -> kmock.ResourceInfo:
        info = self._infos.get(resource)
        if info is None:
            raise _error(404, "NotFound", f"the server could not find the requested resource {resource}")
        return info

    def _kind(self, resource: kmock.resource) -> str:
        return self._info(resource).kind or resource.plural.capitalize()

    def _api_version(self, resource: kmock.resource) -> str:
        return resource.version if not resource.group else f"{resource.group}/{resource.version}"

    def _live(self, resource: kmock.resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self._index[resource].get(namespace, {}).get(name)

    def _query(
        self, resource: kmock.resource, namespace: str | None, selector: Selector
    ) -> list[dict[str, Any]]:
        """Stored objects matching (not copies): candidates from the label index, else the namespace."""
        by_ns = self._index[resource]
        equalities = selector.equalities
        if equalities:
            index = self._labels[resource]
            sets = sorted((index.get(term, set()) for term in equalities), key=len)
            keys = set(sets[0]).intersection(*sets[1:]) if sets[0] else set()
            found = [by_ns[ns][name] for ns, name in keys if namespace is None or ns == namespace]
        elif namespace is not None:
            found = list(by_ns.get(namespace, {}).values())
        else:
            found = [obj for objs in by_ns.values() for obj in objs.values()]
        matches = [o for o in found if selector.matches(o["metadata"].get("labels") or {})]
        matches.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        return matches

    def live_objects(
        self, resource: kmock.resource | str, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """Current objects of a resource (all namespaces when namespace is None), deep copies."""
        return copy.deepcopy(self._query(kmock.resource(resource), namespace, parse_selector("")))

    def select(
        self, resource: kmock.resource | str, namespace: str | None, labels: str
    ) -> list[dict[str, Any]]:
        """Current objects matching a label selector, from the index (deep copies)."""
        return copy.deepcopy(self._query(kmock.resource(resource), namespace, parse_selector(labels)))

    def get_object(self, resource: kmock.resource | str, namespace: str | None, name: str) -> dict | None:
        obj = self._live(kmock.resource(resource), namespace, name)
        return copy.deepcopy(obj) if obj is not None else None

    def creations(self, resource: kmock.resource | str, namespace: str | None, name: str) -> int:
        """How many times an object of this name was created (deleted versions included)."""
        key = (kmock.resource(resource), namespace, name)
        if key not in self.objects:
            return 0
        history = self.objects[key].history.raw
        return sum(1 for i, v in enumerate(history) if v is not None and (i == 0 or history[i - 1] is None))

    def _bump(self, obj: dict[str, Any]) -> None:
        self._current_rv = next(self._rv)
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._current_rv)

    def _unindex(self, resource: kmock.resource, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        key = (meta.get("namespace"), meta["name"])
        for item in (meta.get("labels") or {}).items():
            self._labels[resource].get(item, set()).discard(key)
        for ref in meta.get("ownerReferences") or []:
            self._dependents.get(ref.get("uid"), set()).discard((resource, *key))

    def _put(
        self, kind: str, resource: kmock.resource, obj: dict[str, Any], previous: dict[str, Any] | None
    ) -> None:
        """Store a new version (or a deletion), tell watchers and listeners; `obj` is never mutated again."""
        meta = obj["metadata"]
        namespace, name = meta.get("namespace"), meta["name"]
        if previous is not None:
            self._unindex(resource, previous)
        key = (resource, namespace, name)
        if kind == "DELETED":
            self._index[resource].get(namespace, {}).pop(name, None)
            self.objects[key].history.append(obj)
            self.objects[key].delete()
        else:
            self._index[resource].setdefault(namespace, {})[name] = obj
            for item in (meta.get("labels") or {}).items():
                self._labels[resource][item].add((namespace, name))
            for ref in meta.get("ownerReferences") or []:
                self._dependents[ref.get("uid")].add(key)
            if key not in self.objects:
                self.objects[key] = obj
            else:
                self.objects[key].history.append(obj)
        self._histories[resource].append(
            [int(meta["resourceVersion"]), kind, obj, previous, None], self.history_limit
        )
        for listener in self.listeners:
            listener(kind, resource, obj)
        previous_event, self._changed = self._changed, None
        if previous_event is not None:
            previous_event.set()

    async def _wait_change(self, timeout: float) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- admission -----------------------------------------------------------------------------------

    def _resource_of(self, api_version: str, kind: str) -> kmock.resource | None:
        group, _, version = api_version.rpartition("/")
        for resource, info in self.resources.items():
            if info.kind == kind and resource.group == group and resource.version == version:
                return resource
        return None

    def _admit_owner_references(
        self,
        resource: kmock.resource,
        namespace: str | None,
        name: str,
        obj: dict,
        old: dict | None,
        user: User,
    ) -> None:
        """OwnerReferencesPermissionEnforcement: blockOwnerDeletion needs `update` on `<owner>/finalizers`."""
        if user.admin:
            return
        before = {
            json.dumps(r, sort_keys=True)
            for r in ((old or {}).get("metadata") or {}).get("ownerReferences") or []
        }
        for ref in obj["metadata"].get("ownerReferences") or []:
            if not ref.get("blockOwnerDeletion") or json.dumps(ref, sort_keys=True) in before:
                continue
            owner = self._resource_of(ref.get("apiVersion", ""), ref.get("kind", ""))
            group = owner.group if owner is not None else ref.get("apiVersion", "").rpartition("/")[0]
            plural = f"{owner.plural}/finalizers" if owner is not None else "*/finalizers"
            if owner is not None and self.can(user, "update", group, plural, namespace, ref.get("name")):
                continue
            raise forbidden(
                resource,
                name,
                "cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set "
                "finalizers on: , <nil>",
            )

    def set_pod_quota(self, namespace: str, limit: int | None, name: str = "pods") -> None:
        """A ResourceQuota `pods: limit` in `namespace` (None removes it): creations beyond are refused."""
        if limit is None:
            self._quotas.pop(namespace, None)
        else:
            self._quotas[namespace] = (name, limit)

    def _admit_pod(self, namespace: str, obj: dict[str, Any]) -> None:
        meta, spec = obj["metadata"], obj.setdefault("spec", {})
        if namespace in self._quotas:
            quota, limit = self._quotas[namespace]
            used = sum(
                1
                for pod in self._index[POD_RES].get(namespace, {}).values()
                if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            )
            if used + 1 > limit:
                raise forbidden(
                    POD_RES,
                    meta.get("name") or meta.get("generateName"),
                    f"exceeded quota: {quota}, requested: pods=1, used: pods={used}, limited: pods={limit}",
                )
        obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        if spec.get("schedulingGates"):
            obj["status"]["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "SchedulingGated",
                    "message": SCHEDULING_GATED,
                    "lastProbeTime": None,
                    "lastTransitionTime": now_iso(),
                }
            ]

    @staticmethod
    def _pod_update_causes(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, str]]:
        """Pod spec updates kube-apiserver allows: images, activeDeadlineSeconds, added tolerations, removed
        scheduling gates, and (while gated) added node selector / affinity (Pod scheduling readiness)."""
        before, after = copy.deepcopy(old.get("spec") or {}), copy.deepcopy(new.get("spec") or {})
        gated = bool(before.get("schedulingGates"))
        old_gates = [g.get("name") for g in before.pop("schedulingGates", None) or []]
        new_gates = [g.get("name") for g in after.pop("schedulingGates", None) or []]
        if any(g not in old_gates for g in new_gates):
            return [
                {
                    "reason": "FieldValueForbidden",
                    "message": "Forbidden: only deletion is allowed, but found new scheduling gate",
                    "field": "spec.schedulingGates",
                }
            ]
        old_tolerations, new_tolerations = (
            before.pop("tolerations", None) or [],
            after.pop("tolerations", None) or [],
        )
        ok = all(t in new_tolerations for t in old_tolerations)
        if gated:
            old_selector, new_selector = (
                before.pop("nodeSelector", None) or {},
                after.pop("nodeSelector", None) or {},
            )
            ok = ok and all(new_selector.get(k) == v for k, v in old_selector.items())
            before.pop("affinity", None), after.pop("affinity", None)
        for spec in (before, after):
            spec.pop("activeDeadlineSeconds", None)
            for group in ("containers", "initContainers"):
                for container in spec.get(group) or []:
                    container.pop("image", None)
        if ok and before == after:
            return []
        return [
            {
                "reason": "FieldValueForbidden",
                "message": "Forbidden: pod updates may not change fields other than "
                "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
                "`spec.tolerations` (only additions to existing tolerations),"
                "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously "
                "negative)",
                "field": "spec",
            }
        ]

    # -- writes (also used directly by the kubelet simulator and the harness) ------------------------

    def _admit_schema(
        self, resource: kmock.resource, name: str, obj: dict, old: dict | None, strict: bool
    ) -> dict[str, Any]:
        """A custom resource through its CRD's structural schema (prune, default, validate)."""
        schema = self._schemas.get(resource)
        if schema is None:
            return obj
        admitted, causes, dropped = schema.admit(obj, old)
        if strict and dropped:
            unknown = ", ".join(f'unknown field "{path}"' for path in dropped)
            raise _error(400, "BadRequest", f"strict decoding error: {unknown}")
        if causes:
            raise invalid(self._kind(resource), resource, name, causes)
        return admitted

    async def create(
        self,
        resource: kmock.resource,
        namespace: str | None,
        body: dict[str, Any],
        *,
        user: User = ADMIN,
        strict: bool = False,
        owned: bool = False,
    ) -> dict:
        """Create as kube-apiserver does; `owned`: the body is ours (a decoded request) and the stored
        object is returned as is (it is never mutated), which spares two deep copies per request."""
        info = self._info(resource)
        obj = body if owned else copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name")
        if not name:
            raise invalid(
                self._kind(resource),
                resource,
                "",
                [
                    {
                        "reason": "FieldValueRequired",
                        "message": "Required value: name or generateName is required",
                        "field": "metadata.name",
                    }
                ],
            )
        namespace = (namespace or meta.get("namespace")) if info.namespaced else None
        if info.namespaced and not namespace:
            raise _error(422, "Invalid", "metadata.namespace: Required value")
        if meta.get("namespace") not in (None, namespace) and info.namespaced:
            raise _error(
                400, "BadRequest", "the namespace of the object does not match the namespace on the request"
            )
        if namespace is not None:
            ns_obj = self._live(NAMESPACE_RES, None, namespace)
            if ns_obj is None:
                raise _error(
                    404,
                    "NotFound",
                    f'namespaces "{namespace}" not found',
                    {"name": namespace, "kind": "namespaces"},
                )
            if ns_obj["metadata"].get("deletionTimestamp"):
                raise forbidden(
                    resource,
                    name,
                    f"unable to create new content in namespace {namespace} because it is being terminated",
                )
        causes = metadata_causes(resource, meta)
        if causes:
            raise invalid(self._kind(resource), resource, name, causes)
        obj.setdefault("apiVersion", self._api_version(resource))
        obj.setdefault("kind", self._kind(resource))
        if "status" in info.subresources:
            obj.pop("status", None)
        obj = self._admit_schema(resource, name, obj, None, strict)
        meta = obj["metadata"]
        self._admit_owner_references(resource, namespace, name, obj, None, user)
        if resource == POD_RES:
            self._admit_pod(namespace, obj)
        if resource == NAMESPACE_RES:
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
        async with self._lock:
            if self._live(resource, namespace, name) is not None:
                raise _error(
                    409,
                    "AlreadyExists",
                    f'{_plural_group(resource)} "{name}" already exists',
                    {"name": name, "group": resource.group, "kind": resource.plural},
                )
            if namespace is not None:
                meta["namespace"] = namespace
            for field in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"):
                meta.pop(field, None)
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_iso(), generation=1)
            self._bump(obj)
            self._put("ADDED", resource, obj, None)
        if resource == CRD_RES:
            self._serve_crd(obj)
        return obj if owned else copy.deepcopy(obj)

    def _serve_crd(self, crd: dict[str, Any]) -> None:
        """A created CustomResourceDefinition is served at once (the real server takes a moment)."""
        spec = crd.get("spec") or {}
        for version in spec.get("versions") or []:
            if version.get("served", True):
                self.add_resource(
                    spec["group"],
                    version["name"],
                    spec["names"]["plural"],
                    kind=spec["names"]["kind"],
                    namespaced=spec.get("scope") == "Namespaced",
                    subresources=set(version.get("subresources") or {}),
                )
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                if schema:
                    self._schemas[kmock.resource(spec["group"], version["name"], spec["names"]["plural"])] = (
                        CrdSchema(schema)
                    )

    async def update(
        self,
        resource: kmock.resource,
        namespace: str | None,
        name: str,
        change: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        subresource: str | None = None,
        expected_rv: str | None = None,
        user: User = ADMIN,
        strict: bool = False,
        from_client: bool = False,
    ) -> dict:
        """Apply `change` (old -> new) with the API server's rules for subresources and versions.

        `from_client` marks a client's request (HTTP): pod spec immutability applies to it, not to the
        simulated scheduler's binding; its body is ours, and the stored object is returned uncopied."""
        owned = from_client
        info = self._info(resource)
        if subresource not in (None, "status") or (subresource and subresource not in info.subresources):
            raise _error(404, "NotFound", f"{resource.plural}/{subresource} is not served")
        async with self._lock:
            old = self._live(resource, namespace, name)
            if old is None:
                raise _error(
                    404,
                    "NotFound",
                    f'{_plural_group(resource)} "{name}" not found',
                    {"name": name, "group": resource.group, "kind": resource.plural},
                )
            if expected_rv and expected_rv != old["metadata"]["resourceVersion"]:
                raise _error(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {_plural_group(resource)} "{name}": '
                    "the object has been "
                    "modified; please apply your changes to the latest version and try again",
                    {"name": name, "group": resource.group, "kind": resource.plural},
                )
            new = change(copy.deepcopy(old))
            if not owned:
                new = copy.deepcopy(new)
            meta = new.setdefault("metadata", {})
            # Fields the server owns, whatever the client sent.
            for field in (
                "uid",
                "creationTimestamp",
                "namespace",
                "name",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ):
                if field in old["metadata"]:
                    meta[field] = old["metadata"][field]
                else:
                    meta.pop(field, None)
            if "status" in info.subresources:
                if subresource == "status":
                    new = {**old, "status": new.get("status", {}), "metadata": old["metadata"]}
                elif "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            new["apiVersion"], new["kind"] = old.get("apiVersion"), old.get("kind")
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            if old["metadata"].get("deletionTimestamp"):
                added = [
                    f
                    for f in new["metadata"].get("finalizers") or []
                    if f not in old["metadata"].get("finalizers") or []
                ]
                if added:
                    found = "[]string{" + ", ".join(json.dumps(f) for f in added) + "}"
                    raise invalid(
                        self._kind(resource),
                        resource,
                        name,
                        [
                            {
                                "reason": "FieldValueForbidden",
                                "message": "Forbidden: no new finalizers can be added if the object is being "
                                f"deleted, found new finalizers {found}",
                                "field": "metadata.finalizers",
                            }
                        ],
                    )
            causes = (
                metadata_causes(resource, new["metadata"])
                if new["metadata"].get("labels") != old["metadata"].get("labels")
                else []
            )
            if resource == POD_RES and from_client and subresource is None:
                causes += self._pod_update_causes(old, new)
            if causes:
                raise invalid(self._kind(resource), resource, name, causes)
            new = self._admit_schema(resource, name, new, old, strict)
            self._admit_owner_references(resource, namespace, name, new, old, user)
            if new == old:
                return old if owned else copy.deepcopy(old)  # a no-op write changes nothing
            if {k: v for k, v in new.items() if k not in ("metadata", "status")} != {
                k: v for k, v in old.items() if k not in ("metadata", "status")
            }:
                new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
            self._bump(new)
            meta = new["metadata"]
            gone = (
                meta.get("deletionTimestamp")
                and not meta.get("finalizers")
                and not meta.get("deletionGracePeriodSeconds")
            )
            if gone and resource != NAMESPACE_RES:
                self._put("DELETED", resource, new, old)
            else:
                self._put("MODIFIED", resource, new, old)
        if gone and resource != NAMESPACE_RES:
            self._collect_garbage(new)
        return new if owned else copy.deepcopy(new)

    async def delete(
        self,
        resource: kmock.resource,
        namespace: str | None,
        name: str,
        *,
        propagation: str = "Background",
        preconditions: dict[str, str] | None = None,
        grace_period: int | None = None,
    ) -> dict:
        """Delete as kube-apiserver does: finalizers hold, pods terminate gracefully (see the docstring)."""
        self._info(resource)
        async with self._lock:
            old = self._live(resource, namespace, name)
            if old is None:
                raise _error(
                    404,
                    "NotFound",
                    f'{_plural_group(resource)} "{name}" not found',
                    {"name": name, "group": resource.group, "kind": resource.plural},
                )
            for field, expected in (preconditions or {}).items():
                if expected and old["metadata"].get(field) != expected:
                    raise _error(
                        409,
                        "Conflict",
                        f"Precondition failed: {field} in precondition: {expected}, {field} in object meta: "
                        f"{old['metadata'].get(field)}",
                    )
            if resource == NAMESPACE_RES:
                return self._terminate_namespace(old)
            grace = 0
            if resource == POD_RES:
                spec, phase = old.get("spec") or {}, (old.get("status") or {}).get("phase")
                grace = (
                    spec.get("terminationGracePeriodSeconds", 30) if grace_period is None else grace_period
                )
                if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
                    grace = 0  # unscheduled or finished pods go at once (pod strategy CheckGracefulDelete)
            grace = max(int(grace), 0)
            meta = old["metadata"]
            held = bool(meta.get("finalizers"))
            if meta.get("deletionTimestamp"):
                current = meta.get("deletionGracePeriodSeconds") or 0
                if grace >= current or (held and current == 0):
                    return copy.deepcopy(old)  # already terminating, no shorter grace period asked for
                if grace > 0 or held:
                    obj = {**old, "metadata": dict(old["metadata"])}  # stored objects are never mutated
                    obj["metadata"].update(deletionTimestamp=now_iso(grace), deletionGracePeriodSeconds=grace)
                    self._bump(obj)
                    self._put("MODIFIED", resource, obj, old)
                    return copy.deepcopy(obj)
            elif grace > 0 or held:
                obj = {**old, "metadata": dict(old["metadata"])}  # stored objects are never mutated
                obj["metadata"].update(
                    deletionTimestamp=now_iso(grace),
                    deletionGracePeriodSeconds=grace,
                    generation=meta.get("generation", 1) + 1,  # deletion starts: the generation moves
                )
                self._bump(obj)
                self._put("MODIFIED", resource, obj, old)
                return copy.deepcopy(obj)
            obj = {**old, "metadata": dict(old["metadata"])}  # stored objects are never mutated
            self._bump(obj)
            self._put("DELETED", resource, obj, old)
        if propagation != "Orphan":
            self._collect_garbage(obj)
        return copy.deepcopy(obj)

    def _collect_garbage(self, owner: dict[str, Any]) -> None:
        """Delete dependents in the background, as the garbage collector does (not in the request)."""
        uid = owner["metadata"]["uid"]

        async def collect() -> None:
            if self.gc_delay:
                await asyncio.sleep(self.gc_delay)
            for resource, namespace, name in list(self._dependents.pop(uid, ())):
                with contextlib.suppress(kmock.KubernetesError):  # deleted meanwhile
                    await self.delete(resource, namespace, name)

        self._spawn(collect())

    def _terminate_namespace(self, old: dict[str, Any]) -> dict[str, Any]:
        """Namespace deletion: Terminating, its content deleted, then the namespace itself once empty."""
        name = old["metadata"]["name"]
        if old["metadata"].get("deletionTimestamp"):
            return copy.deepcopy(old)
        obj = {**old, "metadata": dict(old["metadata"])}  # stored objects are never mutated
        obj["metadata"]["deletionTimestamp"] = now_iso()
        obj["status"] = {**(obj.get("status") or {}), "phase": "Terminating"}
        self._bump(obj)
        self._put("MODIFIED", NAMESPACE_RES, obj, old)

        async def finish() -> None:
            for resource in list(self._index):
                for child in list(self._index[resource].get(name, {})):
                    with contextlib.suppress(kmock.KubernetesError):
                        await self.delete(resource, name, child)
            while not self._closing and any(self._index[r].get(name) for r in list(self._index)):
                await self._wait_change(1.0)
            current = self._live(NAMESPACE_RES, None, name)
            if current is not None and not current["metadata"].get("finalizers"):
                async with self._lock:
                    gone = copy.deepcopy(current)
                    gone.setdefault("spec", {})["finalizers"] = []
                    self._bump(gone)
                    self._put("DELETED", NAMESPACE_RES, gone, current)

        self._spawn(finish())
        return copy.deepcopy(obj)

    async def request_token(self, namespace: str, service_account: str) -> str:
        """TokenRequest: a bearer token authenticating as the ServiceAccount."""
        if self._live(kmock.resource("", "v1", "serviceaccounts"), namespace, service_account) is None:
            raise _error(404, "NotFound", f'serviceaccounts "{service_account}" not found')
        token = f"sa-{uuid.uuid4().hex}"
        self.tokens[token] = User.service_account(namespace, service_account)
        return token

    async def evict(
        self,
        namespace: str,
        name: str,
        reason: str = "EvictionByEvictionAPI",
        message: str = "Eviction API: evicting",
        grace_period: int | None = None,
    ) -> dict:
        """Mark a pod DisruptionTarget (Pod disruption conditions) and delete it gracefully."""
        await self.update(
            POD_RES,
            namespace,
            name,
            lambda pod: add_condition(pod, disruption(reason, message)),
            subresource="status",
        )
        return await self.delete(POD_RES, namespace, name, grace_period=grace_period)

    # -- HTTP handlers ---------------------------------------------------------------------------

    @staticmethod
    def _strict(request: kmock.Request) -> bool:
        return request.params.get("fieldValidation") == "Strict"

    async def _serve_create(self, request: kmock.Request) -> Any:
        user = self._user(request)
        self._authorize(request, user)
        if not isinstance(request.data, dict):
            raise _error(400, "BadRequest", "the body of the request was not a JSON object")
        strict = self._strict(request)
        obj = await self.create(
            request.resource, request.namespace, request.data, user=user, strict=strict, owned=True
        )
        return kmock.Response(status=201, payload=obj)

    async def _serve_post_subresource(self, request: kmock.Request) -> Any:
        """POST to a named object's subresource: pods/eviction, serviceaccounts/token."""
        user = self._user(request)
        self._authorize(request, user, "create")
        body = request.data if isinstance(request.data, dict) else {}
        if request.resource == POD_RES and request.subresource == "eviction":
            options = body.get("deleteOptions") or {}
            await self.evict(request.namespace, request.name, grace_period=options.get("gracePeriodSeconds"))
            return kmock.Response(
                status=201,
                payload={
                    "apiVersion": "v1",
                    "kind": "Status",
                    "metadata": {},
                    "status": "Success",
                    "code": 201,
                },
            )
        if request.resource == kmock.resource("", "v1", "serviceaccounts") and request.subresource == "token":
            token = await self.request_token(request.namespace, request.name)
            payload = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "metadata": {"name": request.name, "namespace": request.namespace},
                "spec": body.get("spec") or {},
                "status": {"token": token, "expirationTimestamp": now_iso(3600)},
            }
            return kmock.Response(status=201, payload=payload)
        raise _error(405, "MethodNotAllowed", f"POST is not supported on {request.path}")

    async def _serve_fetch(self, request: kmock.Request) -> Any:
        user = self._user(request)
        self._authorize(request, user)
        self._info(request.resource)
        obj = self._live(request.resource, request.namespace, request.name)
        if obj is None:
            raise _error(
                404,
                "NotFound",
                f'{_plural_group(request.resource)} "{request.name}" not found',
                {"name": request.name, "group": request.resource.group, "kind": request.resource.plural},
            )
        return obj

    async def _serve_update(self, request: kmock.Request) -> Any:
        user = self._user(request)
        self._authorize(request, user)
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        patch = request.data
        if content_type == "application/json-patch+json":
            if not isinstance(patch, list):
                raise _error(400, "BadRequest", "a JSON patch must be a list of operations")

            def change(old: dict) -> dict:
                try:
                    return jsonpatch.apply_patch(old, patch)
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
                    raise _error(422, "Invalid", f"the JSON patch cannot be applied: {error}") from error

            expected = None
        elif content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(patch, dict):
                raise _error(400, "BadRequest", "a merge patch must be a JSON object")

            def change(old: dict) -> dict:
                try:
                    return dict(dicts.merge_patch_dict(old, patch))
                except ValueError as error:
                    raise _error(422, "Invalid", str(error)) from error

            expected = (patch.get("metadata") or {}).get("resourceVersion")
        else:
            raise _error(
                415, "UnsupportedMediaType", f"the patch content type {content_type!r} is not supported"
            )
        return await self.update(
            request.resource,
            request.namespace,
            request.name,
            change,
            subresource=request.subresource,
            expected_rv=expected,
            user=user,
            strict=self._strict(request),
            from_client=True,
        )

    async def _serve_replace(self, request: kmock.Request) -> Any:
        if request.resource is None or request.name is None or not isinstance(request.data, dict):
            raise _error(405, "MethodNotAllowed", "PUT needs an object URL and a JSON object")
        user = self._user(request)
        self._authorize(request, user, "update")
        body = request.data
        if request.resource == NAMESPACE_RES and request.subresource == "finalize":
            return await self._finalize_namespace(request.name, body)
        return await self.update(
            request.resource,
            request.namespace,
            request.name,
            lambda old: body,
            subresource=request.subresource,
            expected_rv=(body.get("metadata") or {}).get("resourceVersion"),
            user=user,
            strict=self._strict(request),
            from_client=True,
        )

    async def _finalize_namespace(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT namespaces/<name>/finalize: replace spec.finalizers (the namespace controller's own call)."""

        def change(old: dict) -> dict:
            return {
                **old,
                "spec": {
                    **(old.get("spec") or {}),
                    "finalizers": (body.get("spec") or {}).get("finalizers") or [],
                },
            }

        return await self.update(NAMESPACE_RES, None, name, change)

    async def _serve_delete(self, request: kmock.Request) -> Any:
        user = self._user(request)
        self._authorize(request, user)
        options = request.data if isinstance(request.data, dict) else {}
        propagation = (
            options.get("propagationPolicy") or request.params.get("propagationPolicy") or "Background"
        )
        grace = options.get("gracePeriodSeconds", request.params.get("gracePeriodSeconds"))
        obj = await self.delete(
            request.resource,
            request.namespace,
            request.name,
            propagation=propagation,
            preconditions=options.get("preconditions"),
            grace_period=None if grace is None else int(grace),
        )
        held = obj["metadata"].get("finalizers") and self._live(
            request.resource, request.namespace, request.name
        )
        return kmock.Response(status=202 if held else 200, payload=obj)

    def _matches(
        self,
        obj: dict[str, Any],
        namespace: str | None,
        name: str | None,
        labels: Selector,
        fields: str | None,
    ) -> bool:
        meta = obj["metadata"]
        return (
            (namespace is None or meta.get("namespace") == namespace)
            and (name is None or meta.get("name") == name)
            and labels.matches(meta.get("labels") or {})
            and (not fields or field_selector_matches(fields, obj))
        )

    async def _serve_list(self, request: kmock.Request) -> Any:
        user = self._user(request)
        self._authorize(request, user)
        self._info(request.resource)
        fields = request.params.get("fieldSelector")
        items = self._query(
            request.resource, request.namespace, parse_selector(request.params.get("labelSelector"))
        )
        if fields:
            items = [o for o in items if field_selector_matches(fields, o)]
        return {
            "apiVersion": self._api_version(request.resource),
            "kind": f"{self._kind(request.resource)}List",
            "metadata": {"resourceVersion": str(self._current_rv)},
            "items": items,
        }

    def _gone(self, since: int, oldest: int) -> dict[str, Any]:
        """The ERROR event a watch from a compacted resourceVersion gets (API Concepts: 410 Gone)."""
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f"too old resource version: {since} ({oldest})",
            "reason": "Expired",
            "code": 410,
        }
        return {"type": "ERROR", "object": status}

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        user = self._user(request)
        self._authorize(request, user, "watch")
        resource = request.resource
        self._info(resource)
        history = self._histories[resource]
        labels, fields = (
            parse_selector(request.params.get("labelSelector")),
            request.params.get("fieldSelector"),
        )
        namespace, name = request.namespace, request.name
        bookmarks = request.params.get("allowWatchBookmarks") in ("true", "1")
        since_text = request.params.get("resourceVersion") or ""
        timeout = float(request.params.get("timeoutSeconds") or 0) or None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        yield b""  # send the headers now: the client waits for them before reading events
        if since_text in ("", "0"):
            initial = [
                o
                for o in self._query(resource, namespace, labels)
                if self._matches(o, namespace, name, labels, fields)
            ]
            position = history.base + len(history.entries)
            for obj in initial:
                yield {"type": "ADDED", "object": obj}
        else:
            since = int(since_text)
            if since < history.compacted:
                yield self._gone(since, history.compacted + 1)
                return
            import bisect

            position = history.base + bisect.bisect_right(history.entries, since, key=lambda e: e[0])
        quiet_since = loop.time()
        while not self._closing:
            if position < history.base:  # this watcher fell behind the kept history
                yield self._gone(int(history.entries[0][0]) - 1, history.compacted + 1)
                return
            fresh = history.entries[position - history.base :]
            position += len(fresh)
            for entry in fresh:
                event = self._watch_event(entry, namespace, name, labels, fields)
                if event is not None:
                    quiet_since = loop.time()
                    yield event
            now = loop.time()
            if deadline is not None and now >= deadline:
                if bookmarks:
                    yield self._bookmark(resource)
                return
            if bookmarks and now - quiet_since >= self.bookmark_interval:
                quiet_since = now
                yield self._bookmark(resource)
            wait = min(1.0, self.bookmark_interval) if bookmarks else 1.0
            if deadline is not None:
                wait = min(wait, deadline - now)
            changed = history.wait_event()
            if position == history.base + len(history.entries):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=max(wait, 0.001))

    def _watch_event(
        self, entry: list[Any], namespace: str | None, name: str | None, labels: Selector, fields: str | None
    ) -> Any:
        """What one watcher sees of a change: objects entering (leaving) its selection are ADDED (DELETED)."""
        _, kind, obj, previous, _ = entry
        now = self._matches(obj, namespace, name, labels, fields)
        if kind != "MODIFIED" or (not labels.terms and not fields):
            return _event_bytes(entry) if now else None
        before = previous is not None and self._matches(previous, namespace, name, labels, fields)
        if now and before:
            return _event_bytes(entry)
        if now:
            return {"type": "ADDED", "object": obj}
        if before:
            return {"type": "DELETED", "object": obj}
        return None

    def _bookmark(self, resource: kmock.resource) -> dict[str, Any]:
        return {
            "type": "BOOKMARK",
            "object": {
                "kind": self._kind(resource),
                "apiVersion": self._api_version(resource),
                "metadata": {"resourceVersion": str(self._current_rv)},
            },
        }

    async def close(self) -> None:
        """End open watch streams and background work so the server can stop."""
        self._closing = True
        for history in self._histories.values():
            if history.changed is not None:
                history.changed.set()
        if self._changed is not None:
            self._changed.set()
        for task in list(self._tasks):
            task.cancel()

    # -- conveniences for tests -----------------------------------------------------------------

    def events_for(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """Core/v1 Events whose involvedObject is `name` in `namespace`, oldest first."""
        events = [
            e
            for e in self.live_objects("v1/events", namespace)
            if (e.get("involvedObject") or e.get("regarding") or {}).get("name") == name
        ]
        return sorted(events, key=lambda e: int(e["metadata"]["resourceVersion"]))


def disruption(reason: str, message: str) -> dict[str, Any]:
    """The DisruptionTarget pod condition (Pod disruption conditions, Kubernetes 1.26+)."""
    return {
        "type": "DisruptionTarget",
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now_iso(),
    }


def add_condition(obj: dict[str, Any], condition: dict[str, Any]) -> dict[str, Any]:
    """Set a condition in status.conditions (replacing the one of the same type)."""
    status = obj.setdefault("status", {})
    status["conditions"] = [
        c for c in status.get("conditions") or [] if c.get("type") != condition["type"]
    ] + [condition]
    return obj


def kubeconfig_for(url: str, token: str = ADMIN_TOKEN) -> dict[str, Any]:
    """A kubeconfig that points clients (kopf, the kubernetes client, kubectl) at the double."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "double", "cluster": {"server": url}}],
        "users": [{"name": "double", "user": {"token": token}}],
        "contexts": [{"name": "double", "context": {"cluster": "double", "user": "double"}}],
        "current-context": "double",
    }


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)


def main() -> None:
    """Serve a bare double (no simulator) until interrupted: `python apiserver_double.py KUBECONFIG`.

    Point MNV2_E2E_KUBECONFIG at the file to run the e2e suite in its real-cluster mode against it
    (the CRD and the operator's ServiceAccount are installed over HTTP, simulator scenarios skip),
    which checks that mode's own code.
    """
    import yaml

    async def serve() -> None:
        double = ApiServerDouble()
        async with double, kmock.Server(double) as server:
            await double.create(NAMESPACE_RES, None, {"metadata": {"name": "default"}})
            with open(sys.argv[1], "w") as file:
                yaml.safe_dump(kubeconfig_for(str(server.url).rstrip("/")), file)
            print(f"serving on {server.url}, kubeconfig {sys.argv[1]}", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
