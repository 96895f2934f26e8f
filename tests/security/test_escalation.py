"""The catalogue of escalation attempts (catalogue.py) is refused in every place the policy applies,
with the field named, and the admission policy's CEL agrees with the operator's own check.

- `policy.violations` (what the operator and `mnv2 validate`/`render` apply) names each field;
- the ValidatingAdmissionPolicy from `policy.admission_policy`, evaluated with cel-python as
  kube-apiserver evaluates it (admission.py), denies exactly the same rules;
- what the policies allow passes both.
"""

from __future__ import annotations

import re

import pytest
from admission import cel, denials
from catalogue import ADMIN_POLICY, ALLOWED, ATTEMPTS, SINGLE_NODE_POLICY, Attempt, load_config
from mnv2_operator import policy

CONFIGS = {"default": None, "admin": ADMIN_POLICY, "single-node": SINGLE_NODE_POLICY}
CASES = [(a, c) for a in ATTEMPTS for c in a.configs]
ALLOWED_CASES = [(a, c) for a in ALLOWED for c in a.configs]


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    out = {}
    for name, override in CONFIGS.items():
        config = load_config(override, tmp_path_factory.mktemp(name))
        out[name] = (config, policy.admission_policy(config)[0])
    return out


@pytest.fixture(scope="module")
def evaluator():
    return cel()


def _ids(case):
    attempt, config = case
    return f"{config}: {attempt.id}"


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_each_attempt_is_refused_with_its_field_named(case, configs):
    attempt, name = case
    config, _ = configs[name]
    found = {(path, rule) for path, _, rule in policy.rule_violations(attempt.job(), config)}
    assert attempt.refusals <= found, found
    paths = {path for path, _ in policy.violations(attempt.job(), config)}
    assert {path for path, _ in attempt.refusals} <= paths


@pytest.mark.parametrize("case", CASES + ALLOWED_CASES, ids=[_ids(c) for c in CASES + ALLOWED_CASES])
def test_admission_cel_agrees_with_the_operator(case, configs, evaluator):
    attempt, name = case
    config, vap = configs[name]
    job = attempt.job()
    python = {rule for _, _, rule in policy.rule_violations(job, config)}
    denied = denials(evaluator, vap, job)
    cel_rules = {policy.ADMISSION_RULES[index][0] for index, _ in denied}
    assert cel_rules == python, denied
    for path, rule in attempt.refusals:  # the message names the field (volumes by name, not index)
        message = next(m for i, m in denied if policy.ADMISSION_RULES[i][0] == rule)
        field = re.split(r"\.(?:hostPath|emptyDir)|\[", path)[0]
        assert field in message, (field, message)


@pytest.mark.parametrize("case", ALLOWED_CASES, ids=[_ids(c) for c in ALLOWED_CASES])
def test_what_the_policy_allows_passes(case, configs):
    attempt, name = case
    config, _ = configs[name]
    assert policy.violations(attempt.job(), config) == []


def test_the_catalogue_covers_every_rule():
    """Each rule of the admission policy is exercised by at least one attempt (no dead CEL)."""
    covered = {rule for attempt in ATTEMPTS for _, rule in attempt.refusals}
    assert covered == {name for name, _, _ in policy.ADMISSION_RULES}


def test_a_job_created_before_the_policy_can_still_be_finished(configs, evaluator):
    """Updates that leave spec alone (the operator removing its finalizer) are not re-checked, so a
    job that breaks a newer policy can still be deleted; a spec change is checked."""
    _, vap = configs["default"]
    attempt = next(a for a in ATTEMPTS if a.id == "an image from Docker Hub")
    job = attempt.job()
    finished = {**job, "metadata": {**job["metadata"], "finalizers": []}}
    assert denials(evaluator, vap, finished, old=job) == []
    changed = {**job, "spec": {**job["spec"], "replicas": 3}}
    assert denials(evaluator, vap, changed, old=job)


def test_local_policy_lets_mnv2_run_use_folders():
    """`mnv2 run` applies LOCAL_POLICY: folders as hostPath volumes, shared by the local replicas."""
    from mnv2_operator.profiles import load_operator_config

    local = policy.with_local_policy(load_operator_config(None))
    job = Attempt(
        "local",
        {
            "dataset": {"volume": {"hostPath": {"path": "/home/me/data"}}},
            "output": {"volume": {"hostPath": {"path": "/home/me/out"}}},
        },
        set(),
    ).job()
    assert policy.violations(job, local) == []
    assert policy.violations(job, load_operator_config(None))  # a cluster's default refuses it
    emptydir = {**job, "spec": {**job["spec"], "output": {"volume": {"emptyDir": {}}}}}
    assert [r for _, _, r in policy.rule_violations(emptydir, local)] == ["nodeLocalOutput"]
