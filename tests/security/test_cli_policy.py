"""`mnv2 validate` and `mnv2 render` apply the operator's policy before anything reaches a cluster:
the default one, or the one in `--operator-config`; a violation exits 64 naming field and rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from catalogue import ATTEMPTS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
QUICKSTART = EXAMPLES / "cpu-quickstart.yaml"
SINGLE_NODE = EXAMPLES / "policy-single-node.yaml"


def mnv2(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnv2", *args], capture_output=True, text=True, timeout=120)


def test_validate_refuses_the_quickstart_under_the_default_policy():
    result = mnv2("validate", str(QUICKSTART))
    assert result.returncode == 64, result.stderr
    assert "  spec.dataset.volume.hostPath: volume type hostPath is not allowed" in result.stderr
    assert (
        "  spec.output.volume.hostPath: 2 replicas cannot share a node-local hostPath output" in result.stderr
    )


def test_validate_and_render_accept_it_under_the_single_node_policy():
    result = mnv2("validate", "--operator-config", str(SINGLE_NODE), str(QUICKSTART))
    assert result.returncode == 0, result.stderr
    assert "valid: default/cpu-quickstart" in result.stdout
    result = mnv2("render", str(QUICKSTART), "--operator-config", str(SINGLE_NODE))
    assert result.returncode == 0, result.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(result.stdout)]
    assert kinds == ["Service", "Pod", "Pod"]


def test_render_prints_nothing_for_a_job_the_policy_refuses(tmp_path: Path):
    attempt = next(a for a in ATTEMPTS if a.id == "AppArmor unconfined")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(attempt.job()))
    result = mnv2("render", str(path))
    assert result.returncode == 64 and result.stdout == ""
    key = "container.apparmor.security.beta.kubernetes.io/trainer"
    assert f"spec.template.annotations['{key}']: keys with prefix" in result.stderr, result.stderr
