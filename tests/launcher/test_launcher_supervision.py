"""`mnv2 launch` supervising real processes (a substitute child, no MindSpore): output prefixes,
exit codes, stopping the other ranks when one fails, SIGTERM forwarding and the SIGKILL fallback."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from pathlib import Path

from launch_helpers import child_argv, launch_env
from mnv2 import launchenv as le
from mnv2 import launcher


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _dynamic(replicas: int = 1, devices: int = 2, index: int = 0) -> dict[str, str]:
    return launch_env(
        **{le.REPLICAS: replicas, le.DEVICES_PER_REPLICA: devices, le.REPLICA_INDEX: index},
        **{le.PLATFORM: "CPU"},
    )


def test_children_get_their_env_and_prefixed_output(tmp_path: Path) -> None:
    specs = launcher.plan_processes(_dynamic(devices=2), None, argv=child_argv("env", str(tmp_path)))
    out = io.StringIO()
    code = launcher.Supervisor(specs, grace=5, out=out).run(install_signal_handlers=False)
    assert code == 0
    text = out.getvalue().splitlines()
    for name in ("scheduler", "rank 0", "rank 1"):
        assert f"[{name}] hello from {name.replace(' ', '')}" in text
        assert f"[{name}] second line" in text
    seen = {p.stem: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    assert set(seen) == {"scheduler", "rank0", "rank1"}
    assert seen["rank1"]["MS_NODE_ID"] == "1" and seen["rank1"]["MS_ROLE"] == "MS_WORKER"
    assert seen["scheduler"]["MS_ROLE"] == "MS_SCHED"


def test_one_failing_rank_stops_the_others_and_sets_the_exit_code(tmp_path: Path) -> None:
    argv = child_argv("exit", "rank1=67,default=wait", str(tmp_path), "4")
    specs = launcher.plan_processes(_dynamic(devices=3), None, argv=argv)
    out = io.StringIO()
    supervisor = launcher.Supervisor(specs, grace=20, out=out)
    started = time.monotonic()
    code = supervisor.run(install_signal_handlers=False)
    assert code == 67  # Diverged, the failing rank's code, not the 143 of the ranks it stopped
    assert time.monotonic() - started < 15, "the others were not stopped by SIGTERM"
    text = out.getvalue()
    assert "[launcher] rank 1 exited 67 (Diverged" in text
    for name in ("scheduler", "rank0", "rank2"):
        assert f"terminated {name}" in text
    assert supervisor.first_failure == ("rank 1", 67)


def _wait_for_text(out: io.StringIO, predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate(out.getvalue()):
        assert time.monotonic() < deadline, f"timed out; output:\n{out.getvalue()}"
        time.sleep(0.02)


def test_a_rank_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    specs = launcher.plan_processes(_dynamic(devices=2), None, argv=child_argv("stubborn"))
    out = io.StringIO()
    supervisor = launcher.Supervisor(specs, grace=1.0, out=out)
    supervisor.start()
    _wait_for_text(out, lambda text: text.count("] ready ") == 3)
    started = time.monotonic()
    supervisor.stop("test")
    code = supervisor.wait()
    assert code == 137  # SIGKILL: the stand-in never saved anything
    assert 1.0 <= time.monotonic() - started < 20
    for name in ("scheduler", "rank 0", "rank 1"):
        assert f"{name} still running after 1s; killing it" in out.getvalue()
    assert not any(_pid_alive(pid) for pid in supervisor.pids)


def test_a_child_that_cannot_start_fails_the_launch() -> None:
    specs = launcher.plan_processes(_dynamic(devices=2), None, argv=["/nonexistent/trainer"])
    out = io.StringIO()
    assert launcher.Supervisor(specs, grace=1, out=out).run(install_signal_handlers=False) == 1
    assert "could not start a process" in out.getvalue()


def test_sigterm_to_the_launcher_reaches_every_child(launch_process) -> None:
    proc, output = launch_process(_dynamic(devices=2), "--", *child_argv("serve"))
    output.wait_for(lambda lines: sum("] ready " in line for line in lines) == 3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    text = output.text()
    for name, label in (("scheduler", "scheduler"), ("rank0", "rank 0"), ("rank1", "rank 1")):
        assert f"[{label}] terminated {name}" in text
    assert "[launcher] exiting 143" in text


def test_sigint_is_forwarded_too_and_children_are_gone_afterwards(launch_process, tmp_path) -> None:
    proc, output = launch_process(_dynamic(devices=2), "--", *child_argv("serve"))
    output.wait_for(lambda lines: sum("] ready " in line for line in lines) == 3)
    pids = [int(line.split("(pid ")[1].split(")")[0]) for line in output.lines if "started " in line]
    assert len(pids) == 3
    proc.send_signal(signal.SIGINT)
    # SIGINT is forwarded as SIGINT; the stand-in does not handle it, so Python stops it with 130.
    assert proc.wait(timeout=30) == 130
    assert not any(_pid_alive(pid) for pid in pids)


def test_failing_child_code_is_the_launch_exit_code_end_to_end(launch_process, tmp_path) -> None:
    argv = child_argv("exit", "rank0=65,default=wait", str(tmp_path), "3")
    proc, output = launch_process(_dynamic(devices=2), "--", *argv)
    assert proc.wait(timeout=30) == 65
    assert "[launcher] rank 0 exited 65 (InvalidInput" in output.text()


def test_an_unresolvable_scheduler_host_is_waited_for_then_reported(launch_process, tmp_path) -> None:
    env = _dynamic(devices=2) | {
        le.SCHEDULER_HOST: "job-0.job.nowhere.invalid",
        launcher.SCHEDULER_DNS_TIMEOUT: "1",
    }
    proc, output = launch_process(env, "--", *child_argv("env", str(tmp_path)))
    assert proc.wait(timeout=60) == 0
    text = output.text()
    assert "waiting up to 1s for the scheduler host 'job-0.job.nowhere.invalid' to resolve" in text
    assert "did not resolve within 1s; starting anyway" in text
    assert json.loads((tmp_path / "rank1.json").read_text())["MS_SCHED_HOST"] == "job-0.job.nowhere.invalid"


def _proc_status(pid: int) -> dict[str, str]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except FileNotFoundError:
        return {}
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def test_orphaned_grandchildren_are_adopted_and_reaped(launch_process, tmp_path) -> None:
    """As PID 1 of a container does: a trainer's abandoned worker must not stay a zombie."""
    release = tmp_path / "release"
    proc, output = launch_process(_dynamic(devices=1), "--", *child_argv("orphan", str(release)))
    output.wait_for(lambda lines: any("] ready " in line for line in lines))
    orphan = int(next(line for line in output.lines if "] orphan " in line).split()[-1])
    assert _proc_status(orphan).get("PPid", "").strip() == str(proc.pid), "the launcher adopted it"
    release.touch()
    deadline = time.monotonic() + 20
    while _proc_status(orphan):
        assert time.monotonic() < deadline, f"orphan {orphan} not reaped: {_proc_status(orphan).get('State')}"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143


def test_a_one_process_job_launches_without_a_cluster(launch_process, tmp_path) -> None:
    proc, output = launch_process(_dynamic(devices=1), "--", *child_argv("env", str(tmp_path)))
    assert proc.wait(timeout=30) == 0, output.text()
    env = json.loads((tmp_path / "rank0.json").read_text())
    assert env["MNV2_WORLD_SIZE"] == "1" and "MS_ROLE" not in env
    assert "[rank 0] hello from rank0" in output.text()
