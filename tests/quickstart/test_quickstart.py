"""`make quickstart`: the example it runs takes the cluster's own path (two replicas, MindSpore's
dynamic cluster, data parallel), and the README's figures are those of the committed run's report."""

from __future__ import annotations

import io
import json
import re
import subprocess
from pathlib import Path

import yaml
from mnv2.report import read_records
from mnv2_operator import localrun

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cpu-quickstart.yaml"
REPORT = ROOT / "docs" / "quickstart"


def test_the_quickstart_is_the_operators_data_parallel_job_on_two_replicas(tmp_path):
    out = io.StringIO()
    options = localrun.RunOptions(run_dir=tmp_path, out=out)
    assert localrun.dry_run(EXAMPLE, options) == 0
    plan = yaml.safe_load(out.getvalue())
    assert [p["pod"] for p in plan] == ["cpu-quickstart-0", "cpu-quickstart-1"]
    envs = [p["env"] for p in plan]
    assert {e["MNV2_LAUNCH_MODE"] for e in envs} == {"dynamic"}  # MindSpore's dynamic cluster, as in pods
    assert {e["MNV2_SCHEDULER_PORT"] for e in envs} == {envs[0]["MNV2_SCHEDULER_PORT"]}
    assert [e["MNV2_REPLICA_INDEX"] for e in envs] == ["0", "1"]
    assert all(e["MNV2_REPLICAS"] == "2" and e["MNV2_DEVICES_PER_REPLICA"] == "1" for e in envs)
    training = json.loads(envs[0]["MNV2_TRAINING_CONFIG"])
    other = json.loads(envs[1]["MNV2_TRAINING_CONFIG"])
    assert training == {**other, "metrics_port": training["metrics_port"]}  # one recipe for both
    assert training["eval_dataset_path"] == "/tmp/mnv2-quickstart/data/val"  # top-1 on held-out digits


def test_make_quickstart_starts_fresh_and_ends_with_the_report():
    dry = subprocess.run(["make", "-n", "quickstart"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    commands = dry.stdout.splitlines()
    run = commands.index(".venv/bin/mnv2 run examples/cpu-quickstart.yaml")
    assert commands[run - 1] == "rm -rf /tmp/mnv2-quickstart/output"  # no resuming an earlier run
    assert "mnv2 report /tmp/mnv2-quickstart/output" in commands[run + 1]


def test_the_readmes_quickstart_figures_are_the_committed_runs():
    records = read_records(REPORT / "training_report.csv")
    last = records[-1]
    readme = (ROOT / "README.md").read_text()
    first_screen = readme.split("## ")[0]
    assert "](docs/quickstart/training_report.png)" in first_screen
    job = yaml.safe_load(EXAMPLE.read_text())
    assert len(records) == last.epoch + 1 == job["spec"]["training"]["epochs"]
    match = re.search(r"top-1 (0\.\d+) on the 360 held-out digits", readme)
    assert match and float(match.group(1)) == round(last.top1, 3), "README's top-1 is not the report's"
    assert last.top1 >= 0.97
    seconds = sum(r.seconds for r in records)
    match = re.search(r"(\d+) epochs in (\d+) min (\d+) s of training", readme)
    assert match and int(match.group(1)) == len(records)
    assert int(match.group(2)) * 60 + int(match.group(3)) == round(seconds)
