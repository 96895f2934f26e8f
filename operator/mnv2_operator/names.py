"""Names and labels of everything the operator creates for a job, derived in one place.

Every child name must stay a DNS-1035 label (<= 63 characters) because pods use their name as
hostname and the Service's name is a DNS label; `derived_names` lists them all so validation can
check the longest one for a given replica count.
"""

from __future__ import annotations

import re

from mnv2_operator.api import GROUP

APP_NAME = "mobilenetv2-trainjob"
MANAGED_BY = "mnv2-operator"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_JOB_NAME = f"{GROUP}/job-name"
LABEL_REPLICA_INDEX = f"{GROUP}/replica-index"

# Keys users may not set through spec.template.labels (the operator's own selectors and bookkeeping).
RESERVED_LABEL_PREFIXES = (f"{GROUP}/", "app.kubernetes.io/", "kueue.x-k8s.io/", "volcano.sh/")
RESERVED_ANNOTATION_PREFIXES = (
    f"{GROUP}/",
    "prometheus.io/",
    "scheduling.k8s.io/",
    "kueue.x-k8s.io/",
    "scheduling.volcano.sh/",
)

RANK_TABLE_SUFFIX = "-ranktable"
DNS_LABEL_MAX = 63
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def pod_name(job: str, index: int) -> str:
    return f"{job}-{index}"


def service_name(job: str) -> str:
    return job


def rank_table_configmap_name(job: str) -> str:
    return f"{job}{RANK_TABLE_SUFFIX}"


def podgroup_name(job: str) -> str:
    return job


def pod_dns_name(job: str, index: int, namespace: str, cluster_domain: str = "") -> str:
    """Stable DNS name of a replica through the headless Service (hostname + subdomain)."""
    name = f"{pod_name(job, index)}.{service_name(job)}.{namespace}.svc"
    return f"{name}.{cluster_domain}" if cluster_domain else name


def derived_names(job: str, replicas: int) -> dict[str, str]:
    """Every DNS-label-constrained name for a job of `replicas` pods (the longest pod name suffices)."""
    return {
        "service": service_name(job),
        "pod": pod_name(job, max(replicas - 1, 0)),
        "configmap": rank_table_configmap_name(job),
        "podgroup": podgroup_name(job),
    }


def max_job_name_length(replicas: int) -> int:
    """The longest job name whose derived names all fit a DNS label."""
    return DNS_LABEL_MAX - max(len(RANK_TABLE_SUFFIX), len(f"-{max(replicas - 1, 0)}"))


def job_labels(job: str) -> dict[str, str]:
    """Labels on every child object (and the selector basis)."""
    return {
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: job,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_JOB_NAME: job,
    }


def selector_labels(job: str) -> dict[str, str]:
    """What the Service selects on: never user labels, only the job name."""
    return {LABEL_JOB_NAME: job}


def pod_labels(job: str, index: int) -> dict[str, str]:
    return {**job_labels(job), LABEL_REPLICA_INDEX: str(index)}


def is_label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.fullmatch(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(QUALIFIED_NAME.fullmatch(name))


def is_label_value(value: str) -> bool:
    return len(value) <= 63 and bool(LABEL_VALUE.fullmatch(value))
