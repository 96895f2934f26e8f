"""The double serves the job CRD as kube-apiserver applies a structural schema.

Each test is an HTTP request and the response the Kubernetes documentation gives for it:
- Custom Resources, "Field pruning": unknown fields are dropped, in spec and (through the status
  subresource) in status, unless x-kubernetes-preserve-unknown-fields.
- API Concepts, "Field validation": `fieldValidation=Strict` refuses unknown fields (400 BadRequest).
- Custom Resources, "Defaulting": defaults are filled on write.
- Custom Resources, "Validation" and "Validation rules" (CEL, transition rules with oldSelf): a failed
  check is 422 with a Status of reason Invalid and `details.causes[].field` naming the field.
- Custom Resources, "Status subresource": PUT/PATCH of the main resource ignore status, /status ignores
  everything but status; `metadata.generation` moves with spec changes only.
- API Concepts, "Resource versions": a write that changes nothing is not a new version.
- API Concepts, "Patch and apply" / RFC 6902: a JSON patch applies to the whole object (a `test` of
  metadata.generation works on /status too); a failed `test` is 422 and changes nothing.
"""

from __future__ import annotations

import pytest
from harness import http, job_manifest
from mnv2_operator import k8s
from mnv2_operator.crd import generate_crd


@pytest.fixture(autouse=True)
def _double_only(cluster):
    if not cluster.simulated:
        pytest.skip("tests the API-server double itself")


def post_job(cluster, namespace: str, body: dict, **query: str) -> tuple[int, dict]:
    return http(cluster.url, "POST", k8s.JOBS.path(namespace), body, query=query or None)


def patch(cluster, path: str, body: dict) -> tuple[int, dict]:
    return http(cluster.url, "PATCH", path, body, content_type="application/merge-patch+json")


def test_unknown_fields_are_pruned_on_create_and_refused_when_strict(cluster, namespace):
    body = job_manifest("a", namespace)
    body["spec"]["bogus"] = 1
    body["spec"]["training"]["alsoBogus"] = "x"
    body["status"] = {"state": "Running"}  # the main resource ignores status
    code, job = post_job(cluster, namespace, body)
    assert code == 201
    assert "bogus" not in job["spec"] and "alsoBogus" not in job["spec"]["training"] and "status" not in job
    code, status = post_job(
        cluster,
        namespace,
        {**body, "metadata": {"name": "b", "namespace": namespace}},
        fieldValidation="Strict",
    )
    assert code == 400 and status["kind"] == "Status" and status["reason"] == "BadRequest"
    assert 'unknown field "spec.bogus"' in status["message"]


def test_status_is_pruned_through_the_subresource_and_an_equal_write_is_no_write(cluster, namespace):
    code, job = post_job(cluster, namespace, job_manifest("a", namespace))
    status_path = k8s.JOBS.path(namespace, "a", "status")
    condition = {
        "type": "Running",
        "status": "True",
        "undeclared": 1,
        "lastTransitionTime": "2026-11-28T00:00:00Z",
    }
    code, first = patch(
        cluster, status_path, {"status": {"state": "Running", "conditions": [condition], "kopf": {"x": 1}}}
    )
    assert code == 200
    stored = first["status"]["conditions"][0]
    assert "undeclared" not in stored and "kopf" not in first["status"]
    assert stored["reason"] == "" and stored["message"] == ""  # the condition schema's defaults
    code, second = patch(cluster, status_path, {"status": {"state": "Running", "conditions": [condition]}})
    assert code == 200 and second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert second["metadata"]["generation"] == job["metadata"]["generation"] == 1


def test_a_json_patch_on_status_tests_the_generation_and_keeps_only_status(cluster, namespace):
    """The operator's first status write (issue 16): `test` /metadata/generation, `add` /status."""
    code, job = post_job(cluster, namespace, job_manifest("a", namespace))
    status_path = k8s.JOBS.path(namespace, "a", "status")
    ops = [
        {"op": "test", "path": "/metadata/generation", "value": 2},
        {"op": "add", "path": "/status", "value": {"state": "Pending"}},
    ]
    code, refused = http(cluster.url, "PATCH", status_path, ops, content_type="application/json-patch+json")
    assert code == 422 and refused["kind"] == "Status"
    ops[0]["value"] = job["metadata"]["generation"]
    ops.append({"op": "add", "path": "/metadata/labels", "value": {"sneaked": "in"}})
    code, written = http(cluster.url, "PATCH", status_path, ops, content_type="application/json-patch+json")
    assert code == 200 and written["status"]["state"] == "Pending"
    assert "sneaked" not in (written["metadata"].get("labels") or {})  # /status keeps only status
    assert written["metadata"]["generation"] == job["metadata"]["generation"]


def test_defaults_are_filled(cluster, namespace):
    code, job = post_job(cluster, namespace, job_manifest("a", namespace))
    assert code == 201
    policy = job["spec"]["runPolicy"]
    assert (
        policy["backoffLimit"] == 3 and policy["suspend"] is False and policy["restartPolicy"] == "ExitCode"
    )


@pytest.mark.parametrize(
    ("change", "reason", "field", "text"),
    [
        ({"replicas": 0}, "FieldValueInvalid", "spec.replicas", "should be greater than or equal to 1"),
        ({"replicas": "two"}, "FieldValueTypeInvalid", "spec.replicas", "must be of type integer"),
        ({"platform": "TPU"}, "FieldValueNotSupported", "spec.platform", 'Unsupported value: "TPU"'),
        ({"dataset": None}, "FieldValueRequired", "spec.dataset", "Required value"),
    ],
)
def test_schema_violations_are_422_invalid_with_field_paths(cluster, namespace, change, reason, field, text):
    body = job_manifest("a", namespace)
    for key, value in change.items():
        if value is None:
            body["spec"].pop(key)
        else:
            body["spec"][key] = value
    code, status = post_job(cluster, namespace, body)
    assert code == 422
    assert status["kind"] == "Status" and status["status"] == "Failure" and status["reason"] == "Invalid"
    assert status["details"]["kind"] == "MobileNetV2TrainJob" and status["details"]["name"] == "a"
    causes = status["details"]["causes"]
    assert [c["field"] for c in causes] == [field] and causes[0]["reason"] == reason
    assert text in causes[0]["message"]
    assert status["message"].startswith('MobileNetV2TrainJob.training.mindspore.io "a" is invalid: ' + field)


def test_cel_rules_and_transition_rules(cluster, namespace):
    body = job_manifest("a", namespace, mode="eval")  # eval needs a checkpoint and an eval path
    code, status = post_job(cluster, namespace, body)
    assert code == 422 and status["reason"] == "Invalid"
    causes = status["details"]["causes"]
    assert causes and all(c["field"].startswith("spec") for c in causes)
    rules = generate_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    checkpoint_rule = next(
        r for r in rules["x-kubernetes-validations"] if r["rule"].startswith("self.mode == 'train'")
    )
    assert checkpoint_rule["message"] in status["message"]  # the rule's own message, as the server reports it
    code, _ = post_job(cluster, namespace, job_manifest("b", namespace))
    assert code == 201
    # Transition rule `self == oldSelf` (immutable after creation), checked against the stored object.
    code, status = patch(cluster, k8s.JOBS.path(namespace, "b"), {"spec": {"replicas": 3}})
    assert code == 422
    cause = status["details"]["causes"][0]
    assert cause["field"] == "spec.replicas" and cause["reason"] == "FieldValueForbidden"
    assert cause["message"].startswith("Forbidden: ")
    # A root rule on metadata.name (CEL sees metadata.name and generateName only).
    code, status = post_job(cluster, namespace, job_manifest("x" * 54, namespace))
    assert code == 422 and "at most 53 characters" in status["message"]


def test_generation_moves_with_spec_only(cluster, namespace, kube):
    post_job(cluster, namespace, job_manifest("a", namespace))
    path = k8s.JOBS.path(namespace, "a")
    _, job = patch(cluster, path, {"metadata": {"labels": {"x": "y"}}, "status": {"state": "Failed"}})
    assert job["metadata"]["generation"] == 1 and "status" not in job
    _, job = patch(
        cluster,
        path + "/status",
        {"status": {"state": "Running"}, "spec": {"runPolicy": {"backoffLimit": 9}}},
    )
    assert job["metadata"]["generation"] == 1 and job["spec"]["runPolicy"]["backoffLimit"] == 3
    _, job = patch(cluster, path, {"spec": {"runPolicy": {"backoffLimit": 9}}})
    assert job["metadata"]["generation"] == 2
    # Finalizers: deletion with a finalizer sets deletionTimestamp, bumps the generation, answers 202.
    patch(cluster, path, {"metadata": {"finalizers": ["example.com/hold"]}})
    code, job = http(cluster.url, "DELETE", path)
    assert code == 202 and job["metadata"]["deletionTimestamp"] and job["metadata"]["generation"] == 3
    code, status = patch(
        cluster, path, {"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}}
    )
    assert code == 422 and "no new finalizers can be added" in status["message"]
    patch(cluster, path, {"metadata": {"finalizers": None}})
    assert kube.get(k8s.JOBS, namespace, "a") is None
