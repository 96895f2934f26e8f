"""Live progress: redrawn in place on a terminal (a real pseudo-terminal here), and byte-for-byte
today's log lines without one (pods, CI, redirected output)."""

from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

from mnv2.console import Quiet, _Pace, eta_text, live_eval, live_progress, live_table

CHILD = str(Path(__file__).with_name("live_child.py"))
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
ERASE_LINE = b"\r\x1b[2K"  # carriage return + erase line: the line is redrawn where it stands


def run_piped(mode: str) -> tuple[bytes, bytes]:
    done = subprocess.run([sys.executable, CHILD, mode], capture_output=True, timeout=60, check=True)
    return done.stdout, done.stderr


def run_on_terminal(mode: str) -> bytes:
    """stdin, stdout and stderr on one pseudo-terminal, as in an interactive shell."""
    leader, follower = pty.openpty()
    child = subprocess.Popen([sys.executable, CHILD, mode], stdin=follower, stdout=follower, stderr=follower,
                             env={**os.environ, "COLUMNS": "150", "TERM": "xterm-256color"})
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert child.wait(timeout=60) == 0
    return output


def test_without_a_terminal_the_output_is_byte_for_byte_the_plain_log():
    assert run_piped("live") == run_piped("plain")
    stdout, stderr = run_piped("live")
    assert stdout.splitlines()[0] == (
        b"epoch: [  0/  2], step:[    0/    3], loss:[2.000/2.000], time:[12.500], lr:[0.100]"
    )
    assert stderr == b"[mnv2] checkpoint of epoch 0\n[mnv2] checkpoint of epoch 1\n"
    for mode in ("eval", "table"):
        stdout, stderr = run_piped(mode)
        assert b"\x1b" not in stdout + stderr and stderr == b""


def test_non_terminal_streams_get_the_quiet_object():
    stream = io.StringIO()
    for live in (live_progress(3, 10, stream), live_eval(5, stream), live_table("t", stream)):
        assert isinstance(live, Quiet)
        live.step(0, 1, 0.5, 10.0)
        live.update({"a": "b"})
        live.close()
    assert stream.getvalue() == ""


def test_on_a_terminal_one_line_moves_and_the_log_lines_stay_above_it():
    output = run_on_terminal("live")
    assert ERASE_LINE in output
    text = ANSI.sub(b"", output).replace(b"\r\n", b"\n")
    # Every log line still arrives, whole and in order, above the live line.
    lines = [line.split(b"\r")[-1] for line in text.split(b"\n")]
    logged = [line for line in lines if line.startswith((b"epoch", b"[mnv2]")) and b"img/s" not in line]
    assert logged[0] == b"epoch: [  0/  2], step:[    0/    3], loss:[2.000/2.000], time:[12.500], lr:[0.100]"
    assert logged[3:5] == [b"epoch time: 40.000, per step time: 13.300, avg loss: 0.667",
                           b"[mnv2] checkpoint of epoch 0"]
    assert len(logged) == 2 * (3 + 2)
    # The live line: epoch, step, loss, images/s and ETA, finishing at the last step.
    assert re.search(rb"epoch 1/2 step 1/3 loss 2\.0000 321\.5 img/s ETA -:--", text)
    assert re.search(rb"epoch 1/2 step 2/3 loss 1\.0000 321\.5 img/s ETA \d+:\d\d", text)
    assert re.search(rb"epoch 2/2 step 3/3 loss 0\.3333 321\.5 img/s ETA 0:00", text)


def test_evaluation_and_replica_table_on_a_terminal():
    evaluation = ANSI.sub(b"", run_on_terminal("eval"))
    assert re.search(rb"evaluating batch 4/4 [0-9.]+ img/s ETA 0:00", evaluation)
    assert b"result: {'acc': 0.5, 'top_5_accuracy': 1.0} ckpt=x.ckpt" in evaluation
    table = run_on_terminal("table")
    assert b"\x1b[" in table  # redrawn with cursor movements
    plain = ANSI.sub(b"", table)
    assert re.search(rb"demo-0\s+Running", plain) and re.search(rb"demo-1\s+Succeeded \(exit 0\)", plain)
    assert b"[rank 0] a line from a replica" in plain


RUN_CHILD = str(Path(__file__).with_name("run_child.py"))


def test_mnv2_run_shows_every_replica_live_on_a_terminal_and_plain_lines_elsewhere(tmp_path):
    piped = subprocess.run([sys.executable, RUN_CHILD, str(tmp_path / "a")], capture_output=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert b"\x1b" not in piped.stdout + piped.stderr
    lines = piped.stdout.decode().splitlines()
    last_step = "[rank 1] epoch: [  1/  2], step:[    2/    3], loss:[0.750/0.800], time:[12.500], lr:[0.050]"
    assert last_step in lines
    assert "  state: Succeeded" in lines
    assert "[mnv2 run] epoch 1, step 5/10, 50.0%, loss 0.5000" in lines  # rank 0's progress, as lines

    leader, follower = pty.openpty()
    child = subprocess.Popen([sys.executable, RUN_CHILD, str(tmp_path / "b")], stdin=follower,
                             stdout=follower, stderr=follower, env={**os.environ, "COLUMNS": "160"})
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert child.wait(timeout=120) == 0
    text = ANSI.sub(b"", output).decode()
    assert "job cpu-quickstart, attempt 0" in text
    for replica in (0, 1):  # each replica's state and latest step, 1-based like the live training line
        row = rf"cpu-quickstart-{replica}\s+Succeeded\s+rank {replica}: epoch 2/2, step 3/3, loss 0.750"
        assert re.search(row, text), text
    assert "rank 0: epoch 1, step 5/10, 50.0%, loss 0.5000" in text  # rank 0's progress under the rows
    assert "[mnv2 run] epoch 1, step 5/10" not in text  # in the table, not as lines
    assert "state: Succeeded" in text  # the final status still follows, in full


def test_eta_counts_only_this_runs_own_pace(monkeypatch):
    clock = iter([100.0, 110.0, 130.0])
    monkeypatch.setattr("mnv2.console.time.perf_counter", lambda: next(clock))
    pace = _Pace()
    assert pace.eta(500, 1000) is None  # a resumed run starts at step 500: no pace yet
    assert pace.eta(510, 1000) == 490.0  # 10 steps in 10 s
    assert pace.eta(520, 1000) == 30 / 20 * 480
    assert [eta_text(s) for s in (None, 59.6, 3725)] == ["ETA -:--", "ETA 1:00", "ETA 1:02:05"]
