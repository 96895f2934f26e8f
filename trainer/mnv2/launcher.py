"""The in-pod launcher: plan one trainer process per local device, then supervise them.

Every pod runs `mnv2 launch`. Planning is a pure function of the launch environment (and, in
rank-table mode, the parsed rank table): it returns each process's argv and complete environment,
so tests and `mnv2 launch --dry-run` can see exactly what would run: the rank, the card (the
logical index inside a container) and the process's share of the pod's CPU limit for its threads
(the CPUs are detected only when the pod does not state its limit). Supervision is the one place
with side effects: it starts the processes, prefixes their output with their rank, forwards
SIGTERM/SIGINT, and turns the first failure into the pod's exit code (mnv2.exitcodes), stopping the
other ranks so a broken collective never hangs the pod. No MindSpore import here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from mnv2 import launchenv as le
from mnv2.exitcodes import ConfigError, ExitCode, TrainerError, describe

if TYPE_CHECKING:
    from mnv2.ranktable import RankTable

# Launcher knobs that only the launcher reads (not part of the pod contract in launchenv).
STOP_GRACE = le.STOP_GRACE
SCHEDULER_DNS_TIMEOUT = le.SCHEDULER_DNS_TIMEOUT
DEFAULT_STOP_GRACE_SECONDS = le.DEFAULT_STOP_GRACE_SECONDS
DEFAULT_SCHEDULER_DNS_TIMEOUT_SECONDS = le.DEFAULT_SCHEDULER_DNS_TIMEOUT_SECONDS
DEFAULT_HCCL_CONNECT_TIMEOUT = "600"
COMMANDS = ("train", "eval")

# Variables a child must never inherit from the pod: the launcher sets the right ones per process.
_PER_PROCESS = (
    le.MS_SCHED_HOST, le.MS_SCHED_PORT, le.MS_WORKER_NUM, le.MS_ROLE, le.MS_NODE_ID,
    le.RANK_TABLE_FILE, le.RANK_ID, le.DEVICE_ID, le.ASCEND_DEVICE_ID, le.RANK_SIZE, le.RANK, le.WORLD_SIZE,
    le.LOCAL_RANK, le.THREADS,
)  # fmt: skip


@dataclass(frozen=True)
class ProcessSpec:
    """One process the launcher starts: its label for log prefixes, argv, and complete environment."""

    name: str  # "scheduler" or "rank N" (global rank); a pod's name under `mnv2 run`
    argv: list[str]
    env: dict[str, str]
    rank: int | None = None  # global rank; None for the scheduler
    local_rank: int | None = None
    is_scheduler: bool = False  # stopped last: workers unregister from it while they shut down


# ----------------------------------------------------------------------------- reading the env


def _int_var(env: Mapping[str, str], name: str, default: int | None = None, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ConfigError(f"launch environment: {name} is not set")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"launch environment: {name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"launch environment: {name}={value} must be >= {minimum}")
    return value


def _float_var(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"launch environment: {name}={raw!r} is not a number") from None
    if value < 0:
        raise ConfigError(f"launch environment: {name}={value} must be >= 0")
    return value


def launch_mode(env: Mapping[str, str]) -> le.LaunchMode:
    raw = env.get(le.LAUNCH_MODE) or le.LaunchMode.DYNAMIC.value
    try:
        return le.LaunchMode(raw)
    except ValueError:
        allowed = ", ".join(m.value for m in le.LaunchMode)
        raise ConfigError(f"launch environment: {le.LAUNCH_MODE}={raw!r} is not one of {allowed}") from None


def rank_table_path(env: Mapping[str, str]) -> Path:
    return Path(env.get(le.RANK_TABLE_PATH) or le.DEFAULT_RANK_TABLE_PATH)


def rank_table_timeout(env: Mapping[str, str]) -> float:
    return _float_var(env, le.RANK_TABLE_TIMEOUT, float(le.DEFAULT_RANK_TABLE_TIMEOUT_SECONDS))


def stop_grace(env: Mapping[str, str]) -> float:
    return _float_var(env, STOP_GRACE, DEFAULT_STOP_GRACE_SECONDS)


def scheduler_dns_timeout(env: Mapping[str, str]) -> float:
    return _float_var(env, SCHEDULER_DNS_TIMEOUT, DEFAULT_SCHEDULER_DNS_TIMEOUT_SECONDS)


def child_command(env: Mapping[str, str]) -> list[str]:
    """`python -m mnv2 train|eval`: the trainer reads its configuration from MNV2_TRAINING_CONFIG."""
    command = env.get(le.COMMAND) or "train"
    if command not in COMMANDS:
        raise ConfigError(f"launch environment: {le.COMMAND}={command!r} is not one of {', '.join(COMMANDS)}")
    return [sys.executable, "-m", "mnv2", command]


# ----------------------------------------------------------------------------- CPU share

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """The container's CPU quota in CPUs (cgroup v2 cpu.max, else v1 cfs quota), None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def host_cpus() -> float:
    """The CPUs this process may use when the pod's limit is not given: affinity, capped by the cgroup."""
    try:
        cpus = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cpus = float(os.cpu_count() or 1)
    quota = cgroup_cpu_limit()
    return min(cpus, quota) if quota else cpus


def cpu_limit(env: Mapping[str, str], detect: Callable[[], float] = host_cpus) -> float:
    """The pod's CPUs: MNV2_CPU_LIMIT_MILLICORES (downward API limits.cpu, divisor 1m), else detected.

    Kubernetes reports the node's allocatable CPU for a container without a limit, so the variable
    is always a usable ceiling when the operator rendered it.
    """
    if env.get(le.CPU_LIMIT_MILLICORES):
        return _int_var(env, le.CPU_LIMIT_MILLICORES, minimum=1) / 1000
    return detect()


def thread_plan(
    env: Mapping[str, str], processes: int, detect: Callable[[], float] = host_cpus
) -> dict[str, str]:
    """The thread variables of each of `processes` trainer processes sharing this pod's CPUs.

    Without them every rank sizes MindSpore's CPU kernel pool and OpenMP's team by the host's
    cores, whatever the pod's limit: on a 64-core node a 2-CPU pod runs dozens of threads per rank
    and the CFS quota throttles them all. The share is rounded down (never above the limit), at
    least 1. OMP_NUM_THREADS set on the pod is kept: an explicit choice beats the estimate.
    """
    if processes < 1:
        raise ConfigError(f"thread plan: {processes} processes, need at least 1")
    return _thread_vars(env, max(1, int(cpu_limit(env, detect) * 1000) // processes // 1000))


def _thread_vars(env: Mapping[str, str], share: int) -> dict[str, str]:
    plan = {le.THREADS: str(share)}
    if not env.get(le.OMP_NUM_THREADS):
        plan[le.OMP_NUM_THREADS] = str(share)
    return plan


# ----------------------------------------------------------------------------- planning (pure)


def plan_processes(
    env: Mapping[str, str],
    rank_table: RankTable | None,
    argv: Sequence[str] | None = None,
    detect: Callable[[], float] = host_cpus,
) -> list[ProcessSpec]:
    """Every process this pod runs, with its argv and full environment (the pod's env plus rank vars).

    `argv` replaces the child command (`mnv2 launch -- CMD...`); by default it is the trainer.
    `detect` gives the pod's CPUs when MNV2_CPU_LIMIT_MILLICORES is absent (see thread_plan).
    Raises ConfigError naming the variable or the rank-table file when the inputs do not fit.
    """
    command = list(argv) if argv else child_command(env)
    mode = launch_mode(env)
    replicas = _int_var(env, le.REPLICAS, 1, minimum=1)
    index = _int_var(env, le.REPLICA_INDEX, 0)
    devices = _int_var(env, le.DEVICES_PER_REPLICA, 1, minimum=1)
    if index >= replicas:
        raise ConfigError(
            f"launch environment: {le.REPLICA_INDEX}={index} is not below {le.REPLICAS}={replicas}"
        )
    base = {k: v for k, v in env.items() if k not in _PER_PROCESS}
    threads = thread_plan(env, devices, detect)
    if mode is le.LaunchMode.RANK_TABLE:
        if rank_table is None:
            raise ConfigError(f"rank table {rank_table_path(env)} is not completed; cannot plan ranks")
        specs = _plan_rank_table(env, base, command, rank_table, replicas, devices)
    else:
        specs = _plan_dynamic(env, base, command, replicas, index, devices)
    for spec in specs:
        # The scheduler only coordinates: one thread of everything leaves the CPUs to the ranks.
        spec.env.update(_thread_vars(env, 1) if spec.is_scheduler else threads)
    return specs


def _device_vars(env: Mapping[str, str], local: int) -> dict[str, str]:
    """The card a dynamic-cluster rank drives: its local index (the pod's cards count from 0)."""
    platform = (env.get(le.PLATFORM) or "CPU").upper()
    if platform == "CPU":
        return {}
    ids = {le.DEVICE_ID: str(local)}
    if platform == "ASCEND":
        ids[le.ASCEND_DEVICE_ID] = str(local)
    return ids


def _plan_dynamic(
    env: Mapping[str, str], base: dict[str, str], command: list[str], replicas: int, index: int, devices: int
) -> list[ProcessSpec]:
    world = replicas * devices
    if world == 1:
        # One process in all: no scheduler and no collectives to set up (MindSpore's init() costs
        # seconds and a port), the trainer runs as a plain single process.
        proc_env = {**base, le.RANK: "0", le.WORLD_SIZE: "1", le.LOCAL_RANK: "0", **_device_vars(env, 0)}
        return [ProcessSpec("rank 0", command, proc_env, rank=0, local_rank=0)]
    cluster = {
        le.MS_SCHED_HOST: env.get(le.SCHEDULER_HOST) or "127.0.0.1",
        le.MS_SCHED_PORT: str(_int_var(env, le.SCHEDULER_PORT, le.DEFAULT_SCHEDULER_PORT, minimum=1)),
        le.MS_WORKER_NUM: str(world),
        le.WORLD_SIZE: str(world),
    }
    specs: list[ProcessSpec] = []
    if index == 0:
        scheduler_env = {**base, **cluster, le.MS_ROLE: "MS_SCHED"}
        specs.append(ProcessSpec("scheduler", command, scheduler_env, is_scheduler=True))
    for local in range(devices):
        rank = index * devices + local
        proc_env = {
            **base,
            **cluster,
            le.MS_ROLE: "MS_WORKER",
            le.MS_NODE_ID: str(rank),
            le.RANK: str(rank),
            le.LOCAL_RANK: str(local),
            **_device_vars(env, local),
        }
        specs.append(ProcessSpec(f"rank {rank}", command, proc_env, rank=rank, local_rank=local))
    return specs


def _plan_rank_table(
    env: Mapping[str, str],
    base: dict[str, str],
    command: list[str],
    table: RankTable,
    replicas: int,
    devices: int,
) -> list[ProcessSpec]:
    path = rank_table_path(env)
    pod_ip, pod_name = env.get(le.POD_IP) or None, env.get(le.POD_NAME) or None
    server = _find_server(table, path, pod_ip=pod_ip, pod_name=pod_name)
    size = table.rank_size()
    if size != replicas * devices:
        raise ConfigError(
            f"rank table {path} lists {size} devices but {le.REPLICAS}={replicas} x "
            f"{le.DEVICES_PER_REPLICA}={devices} = {replicas * devices}"
        )
    if len(server.device) != devices:
        raise ConfigError(
            f"rank table {path}: server {server.server_id} has {len(server.device)} devices, "
            f"{le.DEVICES_PER_REPLICA}={devices}"
        )
    # In a pod the container sees only its cards, numbered from 0 in physical order (MindX-DL's
    # samples set DEVICE_ID=i, REFERENCE §7); the table keeps the physical ids for HCCL. On a bare
    # server (no pod identity; the zoo's run_train.sh) every card is visible: the physical id is right.
    in_pod = bool(pod_ip or pod_name)
    card = _logical_cards(server, path) if in_pod else {d.device_id: d.device_id for d in server.device}
    specs = []
    for local, device in enumerate(server.device):
        try:
            rank = int(device.rank_id)
        except ValueError:
            raise ConfigError(
                f"rank table {path}: server {server.server_id} device {device.device_id} has "
                f"rank_id {device.rank_id!r}, not an integer"
            ) from None
        proc_env = {
            **base,
            le.RANK_TABLE_FILE: str(path),
            le.RANK_ID: str(rank),
            le.DEVICE_ID: card[device.device_id],
            le.ASCEND_DEVICE_ID: card[device.device_id],
            le.RANK_SIZE: str(size),
            le.HCCL_CONNECT_TIMEOUT: env.get(le.HCCL_CONNECT_TIMEOUT) or DEFAULT_HCCL_CONNECT_TIMEOUT,
            le.RANK: str(rank),
            le.WORLD_SIZE: str(size),
            le.LOCAL_RANK: str(local),
        }
        specs.append(ProcessSpec(f"rank {rank}", command, proc_env, rank=rank, local_rank=local))
    return specs


def _logical_cards(server, path: Path) -> dict[str, str]:
    """Physical device_id -> the index the container sees (its position among the pod's cards)."""
    try:
        physical = sorted({int(d.device_id) for d in server.device})
    except ValueError:
        ids = ", ".join(d.device_id for d in server.device)
        raise ConfigError(
            f"rank table {path}: server {server.server_id} has a non-integer device_id ({ids})"
        ) from None
    if len(physical) != len(server.device):
        raise ConfigError(f"rank table {path}: server {server.server_id} lists a device_id twice")
    return {d.device_id: str(physical.index(int(d.device_id))) for d in server.device}


def _find_server(table: RankTable, path: Path, *, pod_ip: str | None, pod_name: str | None):
    """This pod's entry: by pod IP (container_ip) first, then by server_id = pod name.

    Outside Kubernetes (the seed's `run_train.sh Ascend 8 0,...,7 hccl.json` on one server) neither
    is set: a one-server table is then this machine's."""
    if not pod_ip and not pod_name and len(table.server_list) == 1:
        return table.server_list[0]
    for server in table.server_list:
        if pod_ip and server.container_ip == pod_ip:
            return server
    for server in table.server_list:
        if pod_name and server.server_id == pod_name:
            return server
    known = ", ".join(f"{s.server_id}@{s.container_ip}" for s in table.server_list)
    raise ConfigError(
        f"rank table {path} has no server for this pod ({le.POD_IP}={pod_ip!r}, "
        f"{le.POD_NAME}={pod_name!r}); servers: {known}"
    )


# ----------------------------------------------------------------------------- waiting


def read_rank_table_status(path: Path) -> tuple[RankTable | None, str]:
    """(table if completed, a short status for messages).

    Missing, empty or half-written files and "initializing" are transient (keep polling); a table
    that claims a status other than initializing/completed or is malformed raises RankTableError.
    """
    from mnv2.ranktable import parse_rank_table

    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None, "file missing"
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or exc})"
    if not raw.strip():
        return None, "empty"
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError:
        return None, "not valid JSON (being rewritten?)"
    status = doc.get("status") if isinstance(doc, dict) else None
    return parse_rank_table(doc, source=str(path)), f"status {status!r}"


def wait_for_rank_table(
    path: Path,
    timeout: float,
    *,
    interval: float = 1.0,
    log: Callable[[str], None] = lambda message: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RankTable:
    """Poll the mounted rank table until its status is "completed", at most `timeout` seconds.

    The ConfigMap is mounted from the start with {"status": "initializing"} and rewritten by the
    operator once every pod has its devices and IP; kubelet then updates the file (up to a minute
    later). A table that is completed but malformed is an error at once (RankTableError, a
    ConfigError here); on timeout the error names the file and its last status (exit 75).
    """
    from mnv2.ranktable import RankTableError

    deadline = clock() + timeout
    last = ""
    while True:
        try:
            table, status = read_rank_table_status(path)
        except RankTableError as exc:
            raise ConfigError(f"rank table {path}: {exc}") from exc
        if table is not None:
            return table
        if status != last:
            log(f"waiting for rank table {path}: {status}")
            last = status
        remaining = deadline - clock()
        if remaining <= 0:
            raise TrainerError(
                f"rank table {path} did not reach status 'completed' within {timeout:g}s "
                f"(last seen: {status}); are all pods scheduled with their Ascend devices annotated?",
                ExitCode.RANK_TABLE_TIMEOUT,
            )
        sleep(min(interval, remaining))


def wait_for_host(
    host: str,
    timeout: float,
    *,
    interval: float = 1.0,
    log: Callable[[str], None] = lambda message: None,
    resolve: Callable[[str], object] = socket.gethostbyname,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Wait until `host` resolves (headless-Service DNS lags pod creation). True if it did in time.

    MindSpore retries the scheduler connection itself; waiting here first turns a name that never
    appears into one clear log line instead of a stream of connection errors.
    """
    deadline = clock() + timeout
    logged = False
    while True:
        try:
            resolve(host)
            return True
        except OSError as exc:
            if not logged:
                log(f"waiting up to {timeout:g}s for the scheduler host {host!r} to resolve ({exc})")
                logged = True
        remaining = deadline - clock()
        if remaining <= 0:
            return False
        sleep(min(interval, remaining))


# ----------------------------------------------------------------------------- supervision


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux PR_SET_CHILD_SUBREAPER), as PID 1 does in a container.

    A trainer that dies leaves its data-loader workers behind; adopted, they are reaped by the
    supervisor instead of lingering as zombies. Best effort: False where the call is unavailable.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def reap_orphans(own: set[int]) -> list[int]:
    """Reap exited processes that are not our own children (their Popen reaps those)."""
    reaped = []
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            break
        if info is None or info.si_pid in own:
            break
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.si_pid, 0)
        reaped.append(info.si_pid)
    return reaped


def exit_code_of(returncode: int) -> int:
    """A child's return code as a shell would report it: killed by signal N -> 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class _Child:
    spec: ProcessSpec
    proc: subprocess.Popen
    reader: threading.Thread
    code: int | None = None


@dataclass
class Supervisor:
    """Starts the planned processes and watches them until all have ended.

    Rules: output lines are prefixed with `[rank N]` / `[scheduler]`; a SIGTERM or SIGINT to the
    launcher is forwarded to every child, which then get `grace` seconds before SIGKILL; the first
    child to fail (non-zero exit) stops the others the same way, and its code (mapped through
    mnv2.exitcodes) is the launcher's exit code. A scheduler that ends with 0 is not a stop signal.
    """

    specs: list[ProcessSpec]
    grace: float = DEFAULT_STOP_GRACE_SECONDS
    out: IO[str] = field(default_factory=lambda: sys.stdout)
    poll_interval: float = 0.05
    # Each child in its own session (process group): `mnv2 run` runs whole launchers this way, and
    # SIGKILL then goes to the group so no grandchild outlives its launcher.
    own_process_group: bool = False
    # The signal sent to children on stop; None forwards the signal received (SIGTERM on failures).
    stop_signal: int | None = None
    # How a child's output line is written; returns None to drop it. Default: "[name] line".
    format_line: Callable[[ProcessSpec, str], str | None] | None = None
    label: str = "launcher"
    # Shared with other writers of `out` (mnv2 run's progress lines) so lines never interleave.
    lock: threading.RLock | None = None
    # Reap adopted orphans while supervising (PID 1 in a container, or after become_subreaper()).
    reap: bool = field(default_factory=lambda: os.getpid() == 1)

    def __post_init__(self) -> None:
        self._children: list[_Child] = []
        self._lock = self.lock or threading.RLock()
        self._wake = threading.Event()
        self._stop_reason: str | None = None
        self._stop_deadline: float | None = None
        self._killed = False
        self._announced = False
        self._scheduler_signalled = False
        self._stop_signum: int = signal.SIGTERM
        self.first_failure: tuple[str, int] | None = None
        self.signal_received: int | None = None

    # output
    def say(self, message: str) -> None:
        with self._lock:
            self.out.write(f"[{self.label}] {message}\n")
            self.out.flush()

    def _pump(self, spec: ProcessSpec, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            text = self.format_line(spec, line) if self.format_line else f"[{spec.name}] {line}"
            if text is None:
                continue
            with self._lock:
                self.out.write(text + "\n")
                self.out.flush()
        stream.close()

    # control
    def start(self) -> None:
        for spec in self.specs:
            proc = subprocess.Popen(
                spec.argv,
                env=spec.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=self.own_process_group,
            )
            reader = threading.Thread(target=self._pump, args=(spec, proc.stdout), daemon=True)
            reader.start()
            self._children.append(_Child(spec, proc, reader))
            self.say(f"started {spec.name} (pid {proc.pid}): {' '.join(spec.argv)}")

    @property
    def codes(self) -> dict[str, int]:
        """Exit code of every child that has ended, by name."""
        return {c.spec.name: c.code for c in self._children if c.code is not None}

    @property
    def pids(self) -> list[int]:
        return [child.proc.pid for child in self._children]

    def handle_signal(self, signum: int, frame=None) -> None:
        """Signal handler: forward to every child, then let the grace period run; a second Ctrl-C kills."""
        if self.signal_received is None:
            self.signal_received = signum
        elif signum == signal.SIGINT:
            self._killed = True
            self.kill_all()
            return
        self.stop(f"received {signal.Signals(signum).name}", signum)

    def stop(self, reason: str, signum: int = signal.SIGTERM) -> None:
        """Ask every running child to stop (idempotent); the grace period starts at the first call."""
        if self._stop_reason is None:
            self._stop_reason = reason
            self._stop_deadline = time.monotonic() + self.grace
        signum = self.stop_signal if self.stop_signal is not None else signum
        self._stop_signum = signum
        for child in self._children:
            if not child.spec.is_scheduler and child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signum)
        self._signal_scheduler_when_alone()
        self._wake.set()

    def _signal_scheduler_when_alone(self) -> None:
        """The scheduler gets the stop signal only once every worker has ended: workers that are
        shutting down (saving a checkpoint) still unregister from it. It normally exits by itself then."""
        if self._stop_reason is None or self._scheduler_signalled:
            return
        if any(not c.spec.is_scheduler and c.proc.poll() is None for c in self._children):
            return
        self._scheduler_signalled = True
        for child in self._children:
            if child.spec.is_scheduler and child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(self._stop_signum)

    def kill_all(self) -> None:
        """SIGKILL every child (its whole process group when it has one); safe to call at any time."""
        for child in self._children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if self.own_process_group:
                    os.killpg(child.proc.pid, signal.SIGKILL)
                elif child.proc.poll() is None:
                    child.proc.kill()

    def wait(self) -> int:
        """Supervise until every child has ended; return the pod's exit code."""
        while True:
            running = 0
            for child in self._children:
                if child.code is not None:
                    continue
                rc = child.proc.poll()
                if rc is None:
                    running += 1
                    continue
                child.code = exit_code_of(rc)
                self._on_exit(child, rc)
            if self.reap:
                reap_orphans({c.proc.pid for c in self._children})
            if running == 0:
                break
            self._signal_scheduler_when_alone()
            if self._stop_reason is not None and not self._announced:
                self._announced = True
                self.say(f"{self._stop_reason}: stopping every process (SIGKILL after {self.grace:g}s)")
            if (
                self._stop_deadline is not None
                and not self._killed
                and time.monotonic() >= self._stop_deadline
            ):
                self._killed = True
                for child in self._children:
                    if child.proc.poll() is None:
                        self.say(f"{child.spec.name} still running after {self.grace:g}s; killing it")
                self.kill_all()
            self._wake.wait(self.poll_interval)
            self._wake.clear()
        if self.own_process_group:
            self.kill_all()  # grandchildren left behind by a child that died abruptly
        for child in self._children:
            child.reader.join(timeout=5)
        return self._result()

    def _on_exit(self, child: _Child, returncode: int) -> None:
        code = child.code
        assert code is not None
        if code == 0:
            self.say(f"{child.spec.name} finished")
            return
        if returncode < 0:  # died of the signal itself: it did not save anything on its own
            try:
                what = signal.Signals(-returncode).name
            except ValueError:
                what = f"signal {-returncode}"
            self.say(f"{child.spec.name} was killed by {what} (exit {code})")
        else:
            info = describe(code)
            self.say(f"{child.spec.name} exited {code} ({info.reason}: {info.meaning})")
        if self._stop_reason is None and self.first_failure is None:
            self.first_failure = (child.spec.name, code)
            self.stop(f"{child.spec.name} failed")

    def _result(self) -> int:
        if self.first_failure is not None:
            return self.first_failure[1]
        codes = [child.code or 0 for child in self._children]
        if self.signal_received is not None:
            # Stopped from outside: the trainers' own code (143 after a checkpoint) if they set one.
            nonzero = [c for c in codes if c != 0]
            return nonzero[0] if nonzero else 128 + self.signal_received
        return next((c for c in codes if c != 0), 0)

    def run(self, install_signal_handlers: bool = True) -> int:
        """start() + wait(), with SIGTERM/SIGINT forwarded while the children run."""
        previous: dict[int, object] = {}
        if install_signal_handlers:
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, self.handle_signal)
        try:
            try:
                self.start()
            except OSError as exc:
                self.say(f"could not start a process: {exc}")
                self.stop("start failed")
                self.wait()
                return int(ExitCode.FAILURE)
            return self.wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)  # type: ignore[arg-type]
