"""The alert rules: `promtool check rules`, and `promtool test rules` showing each alert fire on a
synthetic series (and stay quiet before its condition holds long enough)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from obs_helpers import ALERTS
from obs_tools import require

ALERT_NAMES = {
    "MNV2JobFailed",
    "MNV2PodsPendingTooLong",
    "MNV2LossNaN",
    "MNV2NoProgress",
    "MNV2ThroughputDropped",
}


def rules_without_annotations(src: Path, dst: Path, mutate: dict[str, str] | None = None) -> None:
    """Copy the rule file minus annotations (promtool would compare the rendered text exactly;
    expressions and `for:` are what these tests are about). `mutate` replaces expressions."""
    doc = yaml.safe_load(src.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
            if mutate and rule.get("alert") in mutate:
                rule["expr"] = mutate[rule["alert"]]
    dst.write_text(yaml.safe_dump(doc, sort_keys=False))


def series(name: str, values: str) -> dict:
    return {"series": name, "values": values}


def alert(name: str, eval_time: str, labels: dict[str, str] | None) -> dict:
    """An alert_rule_test: firing with `labels` at `eval_time`, or silent when labels is None."""
    exp = [] if labels is None else [{"exp_labels": labels}]
    return {"eval_time": eval_time, "alertname": name, "exp_alerts": exp}


# Synthetic series, one scrape a minute. Each alert is checked silent before and firing after.
RULE_TESTS = [
    {
        "interval": "1m",
        "input_series": [
            # Operator: a GPU job in "ml" fails at minute 3; an Ascend job in "prod" stays pending.
            {
                "series": 'mnv2_operator_jobs_failed_total{job_namespace="ml",platform="GPU"}',
                "values": "0 0 0 1x30",
            },
            {
                "series": 'mnv2_operator_jobs_failed_total{job_namespace="ok",platform="CPU"}',
                "values": "0x30",
            },
            {
                "series": 'mnv2_operator_jobs{job_namespace="prod",platform="Ascend",state="Created"}',
                "values": "1x40",
            },
            {
                "series": 'mnv2_operator_jobs{job_namespace="prod",platform="Ascend",state="Running"}',
                "values": "3x40",
            },
            # Trainer "diverge": loss finite, then NaN from minute 3.
            series('mnv2_trainer_loss{job="diverge",rank="0"}', "2.3 2.1 1.9 NaN NaN NaN"),
            series('mnv2_trainer_loss{job="healthy",rank="0"}', "2.3 2.0 1.8 1.7 1.6 1.5"),
            # Trainer "stuck": steps every minute up to minute 10, then stuck at 11 of 100.
            series('mnv2_trainer_global_step{job="stuck",rank="0"}', "1+1x10 11x40"),
            series('mnv2_trainer_total_steps{job="stuck",rank="0"}', "100x50"),
            # Trainer "done": finished (step == total), must never count as stuck.
            series('mnv2_trainer_global_step{job="done",rank="0"}', "100x50"),
            series('mnv2_trainer_total_steps{job="done",rank="0"}', "100x50"),
            # Trainer "slow": 10 img/s for an hour, then 100 img/min (1.7 img/s); "steady" never slows.
            series('mnv2_trainer_images_total{job="slow",rank="0"}', "0+600x60 36100+100x40"),
            series('mnv2_trainer_images_total{job="slow",rank="1"}', "0+600x60 36100+100x40"),
            series('mnv2_trainer_images_total{job="steady",rank="0"}', "0+600x100"),
        ],
        "alert_rule_test": [
            alert("MNV2JobFailed", "2m", None),
            alert("MNV2JobFailed", "5m", {"job_namespace": "ml", "platform": "GPU", "severity": "warning"}),
            alert("MNV2PodsPendingTooLong", "10m", None),  # pending, `for: 15m` not reached
            alert(
                "MNV2PodsPendingTooLong",
                "20m",
                {"job_namespace": "prod", "platform": "Ascend", "severity": "warning"},
            ),
            alert("MNV2LossNaN", "2m", None),
            alert("MNV2LossNaN", "4m", {"job": "diverge", "rank": "0", "severity": "critical"}),
            alert("MNV2NoProgress", "20m", None),  # stuck since minute 10, `for: 15m` not reached
            alert("MNV2NoProgress", "35m", {"job": "stuck", "rank": "0", "severity": "warning"}),
            alert("MNV2ThroughputDropped", "58m", None),
            alert("MNV2ThroughputDropped", "85m", {"job": "slow", "severity": "warning"}),
        ],
    }
]


def run_promtool_test(tmp_path: Path, mutate: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    promtool = require("promtool")
    rules = tmp_path / "rules.yaml"
    rules_without_annotations(ALERTS, rules, mutate)
    test = tmp_path / "alerts_test.yaml"
    test.write_text(
        yaml.safe_dump(
            {"rule_files": [rules.name], "evaluation_interval": "1m", "tests": RULE_TESTS}, sort_keys=False
        )
    )
    return subprocess.run(
        [promtool, "test", "rules", test.name], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


def test_promtool_check_rules() -> None:
    promtool = require("promtool")
    r = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 5 rules found" in r.stdout


def test_rule_file_has_exactly_the_required_alerts() -> None:
    doc = yaml.safe_load(ALERTS.read_text())
    names = [r["alert"] for g in doc["groups"] for r in g["rules"]]
    assert sorted(names) == sorted(ALERT_NAMES)
    for g in doc["groups"]:
        for r in g["rules"]:
            assert r["labels"]["severity"] in {"warning", "critical"}
            assert {"summary", "description"} <= set(r["annotations"]), r["alert"]


def test_every_alert_is_tested_firing() -> None:
    firing = {t["alertname"] for case in RULE_TESTS for t in case["alert_rule_test"] if t["exp_alerts"]}
    silent = {t["alertname"] for case in RULE_TESTS for t in case["alert_rule_test"] if not t["exp_alerts"]}
    assert firing == ALERT_NAMES
    assert silent == ALERT_NAMES


def test_promtool_unit_tests_pass(tmp_path: Path) -> None:
    r = run_promtool_test(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


@pytest.mark.parametrize(
    ("alert_name", "broken_expr"),
    [
        ("MNV2LossNaN", "mnv2_trainer_loss > 100"),  # would never see NaN
        ("MNV2NoProgress", "mnv2_trainer_global_step < mnv2_trainer_total_steps"),  # fires while healthy
    ],
)
def test_promtool_unit_tests_catch_a_broken_rule(tmp_path: Path, alert_name: str, broken_expr: str) -> None:
    """The rule tests can fail: a wrong expression makes promtool report the alert by name."""
    r = run_promtool_test(tmp_path, {alert_name: broken_expr})
    assert r.returncode != 0
    assert alert_name in r.stdout + r.stderr
