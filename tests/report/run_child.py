"""`mnv2 run` on a two-replica job whose launchers are stand-ins printing the zoo's step lines as the
launcher prefixes them, for tests/report/test_console.py (argv[1]: a scratch folder)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import yaml
from mnv2_operator import localrun

# Rank 0's stand-in also serves the trainer's progress metrics, as the real trainer does on MNV2_METRICS_PORT.
SERVE = """
import os, time
from prometheus_client import CollectorRegistry, Gauge, start_http_server
registry = CollectorRegistry()
for name, value in (("epoch", 1), ("global_step", 5), ("total_steps", 10), ("loss", 0.5)):
    Gauge("mnv2_trainer_" + name, name, ["rank"], registry=registry).labels(rank="0").set(value)
start_http_server(int(os.environ["MNV2_METRICS_PORT"]), addr="127.0.0.1", registry=registry)
time.sleep(1.5)
"""

LINES = [
    "[rank {i}] epoch: [  0/  2], step:[    2/    3], loss:[1.250/1.500], time:[12.500], lr:[0.100]",
    "[rank {i}] epoch: [  1/  2], step:[    2/    3], loss:[0.750/0.800], time:[12.500], lr:[0.050]",
]


def stand_ins(real):
    def plan(pods, **kwargs):
        planned = real(pods, **kwargs)
        stand_in = []
        for lp in planned:
            text = "\n".join(line.format(i=lp.index) for line in LINES)
            serve = SERVE if lp.index == 0 else ""
            argv = [sys.executable, "-c", f"{serve}\nprint({text!r})"]
            stand_in.append(dataclasses.replace(lp, spec=dataclasses.replace(lp.spec, argv=argv)))
        return stand_in

    return plan


def main(folder: Path) -> int:
    job = yaml.safe_load((Path(__file__).parents[2] / "examples" / "cpu-quickstart.yaml").read_text())
    job["spec"]["dataset"]["volume"]["hostPath"] = {"path": str(folder / "data"), "type": "DirectoryOrCreate"}
    job["spec"]["output"]["volume"]["hostPath"] = {"path": str(folder / "out"), "type": "DirectoryOrCreate"}
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "job.yaml"
    manifest.write_text(yaml.safe_dump(job))
    localrun.plan_local_pods = stand_ins(localrun.plan_local_pods)
    return localrun.run_job(manifest, localrun.RunOptions(run_dir=folder / "run", progress_interval=0.2))


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
