"""Kubernetes Events for the job's transitions, posted through the one client seam.

One Event per transition (state change, restart, refused spec change, TTL deletion), on the job,
with a CamelCase reason and a message that names the pod, exit code or field. Posting is best effort:
an Event that cannot be written never fails a reconciliation (the status carries the same facts).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from mnv2_operator import k8s
from mnv2_operator.status import format_time

COMPONENT = "mnv2-operator"
log = logging.getLogger(__name__)


def build_event(job: dict[str, Any], type_: str, reason: str, message: str, now: datetime) -> dict[str, Any]:
    """A core/v1 Event about `job` (pure, so its shape is unit-tested)."""
    meta = job["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": job.get("apiVersion"),
            "kind": job.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
        "firstTimestamp": format_time(now),
        "lastTimestamp": format_time(now),
        "count": 1,
    }


def post(kube: k8s.Kube, job: dict[str, Any], type_: str, reason: str, message: str, now: datetime) -> None:
    try:
        kube.create(build_event(job, type_, reason, message, now))
    except k8s.ApiError as error:
        log.warning("could not post event %s for %s: %s", reason, job["metadata"]["name"], error)
