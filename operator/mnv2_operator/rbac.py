"""The operator's RBAC rules: exactly the API calls its code makes, and nothing more.

The chart's Role/ClusterRole is generated from `RULES` (charts/.../rbac-rules.yaml) and a test checks
both ways that every call in `k8s.py`/kopf's machinery is covered and that nothing extra is granted.
Kopf itself needs: list/watch of the job resource (plus patch for its own finalizer and progress
annotations), list/watch of pods for the pod-event handler, the CRD and namespace discovery it does
when watching the cluster, events for its own posts, and kopf.dev peerings when running with peers.
"""

from __future__ import annotations

from mnv2_operator import api

RULES: list[dict[str, list[str]]] = [
    # The jobs: listed and watched by kopf; patched for kopf's finalizer; read by the reconciler
    # after a conflict; deleted when ttlSecondsAfterFinished expires.
    {
        "apiGroups": [api.GROUP],
        "resources": [api.PLURAL],
        "verbs": ["get", "list", "watch", "patch", "delete"],
    },
    {"apiGroups": [api.GROUP], "resources": [f"{api.PLURAL}/status"], "verbs": ["patch"]},
    # Never called: admission checks it. Children carry `blockOwnerDeletion: true`, which under the
    # OwnerReferencesPermissionEnforcement plugin (OpenShift, hardened clusters) needs `update` on
    # the owner's finalizers subresource, or every child creation is refused with 403.
    {"apiGroups": [api.GROUP], "resources": [f"{api.PLURAL}/finalizers"], "verbs": ["update"]},
    # Children. Pods: listed by the reconciler, watched by kopf (wake-ups), created, deleted on
    # restart/suspend/cleanup. Service, ConfigMap and PodGroup: created when absent (the garbage
    # collector deletes them with the job); the rank-table ConfigMap is rewritten as pods change;
    # Services and ConfigMaps are watched (ours only, by label) so that one deleted by hand comes back.
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch", "create"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "patch"]},
    # The PodGroup is deleted when the job is suspended or finishes (its minResources stay reserved
    # otherwise) and created again on resume.
    {
        "apiGroups": ["scheduling.volcano.sh"],
        "resources": ["podgroups"],
        "verbs": ["get", "create", "delete"],
    },
    # A pod Terminating past its grace period is force-deleted only when its node is lost (Ready not
    # True, or tainted unreachable). Nodes are cluster-scoped: see CLUSTER_SCOPED below.
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
    # Events for every transition (ours) and kopf's own.
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    # Kopf's discovery: CRD changes always; namespaces when --namespace is a pattern (e.g. team-*).
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    # Kopf peering (--peering), so that of several operator replicas only one acts on a job:
    # ClusterKopfPeering when cluster-wide, KopfPeering per namespace otherwise.
    {
        "apiGroups": ["kopf.dev"],
        "resources": ["kopfpeerings", "clusterkopfpeerings"],
        "verbs": ["list", "watch", "patch"],
    },
]


# Grants the operator needs but never exercises as an API call (admission checks them).
ADMISSION_ONLY = {(api.GROUP, f"{api.PLURAL}/finalizers", "update")}
# Cluster-scoped resources: a namespaced Role cannot grant them, so the chart needs a ClusterRole
# for these rules even when the operator watches one namespace.
CLUSTER_SCOPED = {("", "nodes"), ("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces")}


def allows(group: str, resource: str, verb: str) -> bool:
    """Whether RULES grant `verb` on `group/resource` (subresources as "pods/status")."""
    return any(
        group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
        for rule in RULES
    )
