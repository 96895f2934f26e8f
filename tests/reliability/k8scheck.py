"""Checks every rendered object must pass: the Kubernetes 1.37 schema (strict), name and label limits,
and no shell in any container (values reach pods only through fields).

`kubernetes_validate.validate` re-reads its JSON schemas on every call (~8 ms per object); the
fuzzers call it thousands of times, so the schema loader is memoised. The validation itself is the
library's own.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils as _kv_utils

if not hasattr(_kv_utils.schema_contents, "cache_info"):
    _kv_utils.schema_contents = functools.lru_cache(maxsize=None)(_kv_utils.schema_contents)

K8S_VERSION = "1.37"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
SHELL_META = re.compile(r"[$`;|&<>(){}'\"\\\s*?~!#]")
SHELLS = frozenset({"sh", "bash", "dash", "ash", "zsh", "ksh", "busybox"})

# Kinds whose names become DNS labels (Service hostnames, namespaces) and so must be <= 63.
LABEL_NAMED_KINDS = frozenset({"Service", "Namespace"})
# Custom resources with no schema in kubernetes-validate: only metadata is checked for them.
CUSTOM_KINDS = frozenset(
    {"KopfPeering", "ClusterKopfPeering", "ServiceMonitor", "PodMonitor", "PrometheusRule", "PodGroup",
     "MobileNetV2TrainJob", "CustomResourceDefinition"}
)


def qualified_key_problem(key: str) -> str | None:
    """Why a label/annotation key is invalid (prefix/name rules), or None."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)):
        return f"key {key!r}: prefix must be a DNS subdomain"
    if not name or len(name) > 63 or not QUALIFIED_NAME.fullmatch(name):
        return f"key {key!r}: name must be 1-63 alphanumerics, '-', '_' or '.'"
    return None


def metadata_problems(obj: dict[str, Any]) -> list[str]:
    kind = obj.get("kind", "?")
    meta = obj.get("metadata") or {}
    name = meta.get("name") if "name" in meta else meta.get("generateName", "")
    where = f"{kind}/{name}"
    problems = []
    limit = 63 if kind in LABEL_NAMED_KINDS else 253
    pattern = DNS_LABEL if kind in LABEL_NAMED_KINDS else DNS_SUBDOMAIN
    if not isinstance(name, str) or not name or len(name) > limit or not pattern.match(name):
        problems.append(f"{where}: metadata.name {name!r} is not a valid {kind} name (<= {limit})")
    namespace = meta.get("namespace")
    if namespace is not None and (not isinstance(namespace, str) or len(namespace) > 63
                                  or not DNS_LABEL.match(namespace)):
        problems.append(f"{where}: metadata.namespace {namespace!r} is not a DNS label")
    for field in ("labels", "annotations"):
        for key, value in (meta.get(field) or {}).items():
            if (problem := qualified_key_problem(str(key))) is not None:
                problems.append(f"{where}: metadata.{field}: {problem}")
            if field == "labels" and (not isinstance(value, str) or len(value) > 63
                                      or not LABEL_VALUE.fullmatch(value)):
                problems.append(f"{where}: metadata.labels[{key!r}]: value {value!r} is not a label value")
            if field == "annotations" and not isinstance(value, str):
                problems.append(f"{where}: metadata.annotations[{key!r}]: value is not a string")
    return problems


def pod_specs(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The pod specs inside an object: a Pod's own, or a workload's template."""
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Pod":
        yield spec
    template = spec.get("template") or (spec.get("jobTemplate") or {}).get("spec", {}).get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        yield template["spec"]


def containers(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for spec in pod_specs(obj):
        for field in ("initContainers", "containers", "ephemeralContainers"):
            yield from spec.get(field) or []


def shell_problems(obj: dict[str, Any], user_strings: Iterable[str] = ()) -> list[str]:
    """No container runs a shell (`sh -c <string>`), and no user string is spliced into a longer argv
    element other than a `--flag=<value>` pair whose value is exactly the user's string."""
    problems = []
    # Only strings a shell would treat specially: ordinary words can occur in argv by coincidence.
    user = [s for s in user_strings if isinstance(s, str) and len(s) >= 2 and SHELL_META.search(s)]
    for container in containers(obj):
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        name = container.get("name")
        if argv and str(argv[0]).rsplit("/", 1)[-1] in SHELLS:
            problems.append(f"{obj.get('kind')}: container {name}: runs a shell: {argv[:3]}")
        if "-c" in argv[:3] and argv and str(argv[0]).rsplit("/", 1)[-1] in SHELLS | {"env"}:
            problems.append(f"{obj.get('kind')}: container {name}: shell -c form: {argv[:3]}")
        for element in argv:
            element = str(element)
            for s in user:
                if s in element and element != s and element.partition("=")[2] != s:
                    problems.append(
                        f"{obj.get('kind')}: container {name}: user string {s!r} spliced into {element!r}"
                    )
    return problems


def validate_object(obj: dict[str, Any], user_strings: Iterable[str] = ()) -> list[str]:
    """Every problem of one rendered object; empty when it would be accepted by a 1.37 API server."""
    if not isinstance(obj, dict) or "kind" not in obj or "apiVersion" not in obj:
        return [f"not a Kubernetes object: {str(obj)[:80]}"]
    problems = metadata_problems(obj)
    if obj["kind"] not in CUSTOM_KINDS:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(p) for p in error.absolute_path)
            problems.append(f"{obj['kind']}/{obj.get('metadata', {}).get('name')}: {path}: "
                            f"{error.message[:200]}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{obj['kind']} {obj['apiVersion']}: no schema in Kubernetes {K8S_VERSION}")
    problems += shell_problems(obj, user_strings)
    return problems


def strings_in(value: Any) -> Iterator[str]:
    """Every string (keys and values) inside a nested structure."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings_in(item)


def keys_in(value: Any) -> Iterator[str]:
    """Every mapping key inside a nested structure (the names an error message may cite)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from keys_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from keys_in(item)
