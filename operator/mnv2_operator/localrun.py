"""`mnv2 run job.yaml`: the operator's job, executed on this machine (the embedded default).

The same renderer the operator uses produces the pods; each pod becomes one local process group
running the pod's own command (`mnv2 launch`) with the pod's own environment. Only what cannot be
the same locally is translated, in pure functions below: pod DNS becomes 127.0.0.1, the downward
API is filled in, ports are picked free (pods share one network here), and volumes become local
folders (hostPath: its path; anything else: ./.mnv2-run/<job>/<volume>) with every path in the
environment and the training configuration moved accordingly. The user's own environment (PATH,
library paths) is inherited underneath, minus any MNV2_/MS_/RANK_ variables; GLOG_v defaults to 3 so
MindSpore's connection-retry warnings do not bury the training lines. The job's status is computed by the
operator's own `compute_status` from what the local "pods" did, so `mnv2 run` ends with the
status `kubectl get mnv2job -o yaml` would show, and follows the same restart policy.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from mnv2 import artifacts
from mnv2 import launchenv as le
from mnv2.exitcodes import ConfigError, ExitCode
from mnv2.launcher import STOP_GRACE, ProcessSpec, Supervisor

DEFAULT_RUN_DIR = ".mnv2-run"
LOCAL_HOST = "127.0.0.1"
TRAINER_CONTAINER = "trainer"
INDEX_LABEL = "training.mindspore.io/replica-index"
ATTEMPT_LABEL = "training.mindspore.io/restart-count"
_NUMBER = r"([-+0-9.eE]+|nan)"
RESULT_LINE = re.compile(rf"^\[rank 0\] result: \{{'acc': {_NUMBER}(?:, 'top_5_accuracy': {_NUMBER})?")
# kubelet's env expansion: `$$` is a literal `$`, `$(VAR)` an earlier variable (kept when undefined).
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


# ----------------------------------------------------------------------------- ports


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (bind to port 0 and let the kernel choose)."""
    with socket.socket() as sock:
        sock.bind((LOCAL_HOST, 0))
        return sock.getsockname()[1]


def free_port_block(count: int, avoid: set[int] | None = None, tries: int = 50) -> int:
    """A base port such that base .. base+count-1 are all free (local rank r serves on base + r)."""
    avoid = avoid or set()
    for _ in range(tries):
        base = free_port()
        ports = range(base, base + count)
        if base + count > 65535 or avoid.intersection(ports):
            continue
        sockets: list[socket.socket] = []
        try:
            for port in ports:
                sock = socket.socket()
                sockets.append(sock)
                sock.bind((LOCAL_HOST, port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise ConfigError(f"no block of {count} free local ports found for the metrics servers")


# ----------------------------------------------------------------------------- pure translation


@dataclass(frozen=True)
class Mount:
    """A pod mount path and the local folder that stands in for it (None: leave paths alone)."""

    mount_path: str
    local: Path | None


@dataclass(frozen=True)
class LocalPod:
    """One replica as a local process: the launcher's argv and env, and where rank 0 serves metrics."""

    name: str
    index: int
    spec: ProcessSpec
    metrics_port: int | None
    mounts: tuple[Mount, ...]


def pod_index(pod: Mapping[str, Any]) -> int:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return int(labels.get(INDEX_LABEL, "0"))


def trainer_container(pod: Mapping[str, Any]) -> dict[str, Any]:
    containers = (pod.get("spec") or {}).get("containers") or []
    for container in containers:
        if container.get("name") == TRAINER_CONTAINER:
            return container
    if len(containers) == 1:
        return containers[0]
    raise ConfigError(f"pod {pod['metadata']['name']}: no container named {TRAINER_CONTAINER!r}")


def local_volume_dirs(
    pod: Mapping[str, Any], *, job_name: str, run_dir: Path, base_dir: Path,
    overrides: Mapping[str, Path] | None = None,
) -> dict[str, Path | None]:
    """Where each of the pod's volumes lives here.

    `overrides` (`mnv2 run --volume NAME=DIR`) wins for the volumes it names. Otherwise:

    hostPath: its own path (a relative one, meaningless on a node, is taken relative to the
    manifest, which makes repository examples runnable); emptyDir on /dev/shm: nothing (the local
    /dev/shm serves); everything else (PVC, NFS, emptyDir, configMap, ...): <run_dir>/<job>/<volume>.
    """
    dirs: dict[str, Path | None] = {}
    container = trainer_container(pod)
    shm = {m["name"] for m in container.get("volumeMounts") or [] if m.get("mountPath") == "/dev/shm"}
    overrides = overrides or {}
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        name = volume["name"]
        if name in overrides:
            dirs[name] = overrides[name].resolve()
        elif "hostPath" in volume:
            path = Path(volume["hostPath"]["path"])
            dirs[name] = path if path.is_absolute() else (base_dir / path).resolve()
        elif "emptyDir" in volume and name in shm:
            dirs[name] = None
        else:
            dirs[name] = (run_dir / job_name / name).resolve()
    return dirs


def mounts_of(container: Mapping[str, Any], volume_dirs: Mapping[str, Path | None]) -> tuple[Mount, ...]:
    """The container's mounts as local folders, longest mount path first (for prefix matching)."""
    mounts = []
    for mount in container.get("volumeMounts") or []:
        if mount["name"] not in volume_dirs:
            raise ConfigError(
                f"volumeMount {mount['mountPath']}: no volume named {mount['name']!r} in the pod"
            )
        local = volume_dirs[mount["name"]]
        if local is not None and mount.get("subPath"):
            local = local / mount["subPath"]
        mounts.append(Mount(mount["mountPath"].rstrip("/") or "/", local))
    return tuple(sorted(mounts, key=lambda m: len(m.mount_path), reverse=True))


def translate_path(value: str, mounts: tuple[Mount, ...]) -> str:
    """A path inside the pod -> the same file here; values not under a mapped mount are unchanged."""
    if not value.startswith("/"):
        return value
    for mount in mounts:
        if value == mount.mount_path or value.startswith(mount.mount_path.rstrip("/") + "/"):
            if mount.local is None:
                return value
            rest = value[len(mount.mount_path) :].lstrip("/")
            return str(mount.local / rest) if rest else str(mount.local)
    return value


def _translate_tree(value: Any, mounts: tuple[Mount, ...]) -> Any:
    if isinstance(value, str):
        return translate_path(value, mounts)
    if isinstance(value, list):
        return [_translate_tree(v, mounts) for v in value]
    if isinstance(value, dict):
        return {k: _translate_tree(v, mounts) for k, v in value.items()}
    return value


def _field_ref(pod: Mapping[str, Any], path: str, var: str) -> str:
    meta = pod.get("metadata") or {}
    if path == "metadata.name":
        return meta["name"]
    if path == "metadata.namespace":
        return meta.get("namespace") or "default"
    if path == "metadata.uid":
        return meta.get("uid") or ""
    if path in ("status.podIP", "status.hostIP"):
        return LOCAL_HOST
    if path == "spec.nodeName":
        return socket.gethostname()
    if path == "spec.serviceAccountName":
        return (pod.get("spec") or {}).get("serviceAccountName") or "default"
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    raise ConfigError(f"env {var}: fieldRef {path!r} has no local equivalent")


def resolve_env(pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, str]:
    """The container's env as kubelet would set it: values, $(VAR) references, downward API."""
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" in item:
            source = item["valueFrom"]
            if "fieldRef" in source:
                env[name] = _field_ref(pod, source["fieldRef"]["fieldPath"], name)
            elif "resourceFieldRef" in source:
                continue  # limits have no meaning for a local process
            else:
                kind = next(iter(source), "?")
                raise ConfigError(f"env {name}: valueFrom.{kind} cannot be resolved by `mnv2 run`")
        else:
            value = item.get("value") or ""
            env[name] = _VAR_REF.sub(
                lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value
            )
    return env


def local_argv(container: Mapping[str, Any]) -> list[str]:
    """The container's command + args; `mnv2` runs from this interpreter, as in the image."""
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    if not argv:
        raise ConfigError("the trainer container has no command")
    if argv[0] == "mnv2":
        return [sys.executable, "-m", "mnv2", *argv[1:]]
    return argv


def local_pod(
    pod: Mapping[str, Any],
    *,
    job_name: str,
    run_dir: Path,
    base_dir: Path,
    scheduler_port: int,
    metrics_port: int | None,
    base_env: Mapping[str, str],
    overrides: Mapping[str, Path] | None = None,
) -> LocalPod:
    """One rendered Pod -> the local process that plays it (pure apart from hostname lookups)."""
    name = pod["metadata"]["name"]
    container = trainer_container(pod)
    volume_dirs = local_volume_dirs(
        pod, job_name=job_name, run_dir=run_dir, base_dir=base_dir, overrides=overrides
    )
    mounts = mounts_of(container, volume_dirs)
    pod_env = resolve_env(pod, container)
    if pod_env.get(le.LAUNCH_MODE) == le.LaunchMode.RANK_TABLE:
        raise ConfigError(
            f"pod {name}: rank-table mode (Ascend) needs the device plugin's annotations on real pods; "
            "`mnv2 run` cannot run it. Run the job on a cluster."
        )
    env = {k: translate_path(v, mounts) for k, v in pod_env.items() if k != le.TRAINING_CONFIG}
    env[le.SCHEDULER_HOST] = LOCAL_HOST
    env[le.SCHEDULER_PORT] = str(scheduler_port)
    if le.TERMINATION_MESSAGE_PATH in env:  # never /dev/termination-log of this machine
        env[le.TERMINATION_MESSAGE_PATH] = str(termination_message_path(run_dir, job_name, name))
    if metrics_port is not None:
        env[le.METRICS_PORT] = str(metrics_port)
    if le.TRAINING_CONFIG in pod_env:
        try:
            config = json.loads(pod_env[le.TRAINING_CONFIG])
        except json.JSONDecodeError as error:
            raise ConfigError(f"pod {name}: {le.TRAINING_CONFIG} is not JSON: {error}") from None
        config = _translate_tree(config, mounts)
        if metrics_port is not None and "metrics_port" in config:
            config["metrics_port"] = metrics_port
        env[le.TRAINING_CONFIG] = json.dumps(config)
    inherited = {k: v for k, v in base_env.items() if not k.startswith(("MNV2_", "MS_", "RANK_"))}
    # MindSpore's C++ warnings (connection retries while the cluster forms) drown the training
    # lines on a terminal; errors still show. An explicit GLOG_v from the user or the pod wins.
    inherited.setdefault("GLOG_v", "3")
    spec = ProcessSpec(name=name, argv=local_argv(container), env={**inherited, **env})
    return LocalPod(name=name, index=pod_index(pod), spec=spec, metrics_port=metrics_port, mounts=mounts)


def termination_message_path(run_dir: Path, job_name: str, pod_name: str) -> Path:
    """Where a local replica writes what a container writes to its terminationMessagePath."""
    return run_dir / job_name / f"{pod_name}.termination-log"


def observed_pod(
    pod: Mapping[str, Any], *, phase: str, exit_code: int | None, attempt: int, message: str | None = None
) -> dict[str, Any]:
    """What the API server would show for a local replica: phase, the trainer's exit code and its
    termination message (kubelet copies the file at terminationMessagePath into it)."""
    observed = copy.deepcopy(dict(pod))
    labels = observed.setdefault("metadata", {}).setdefault("labels", {})
    labels[ATTEMPT_LABEL] = str(attempt)
    status: dict[str, Any] = {"phase": phase}
    if exit_code is not None:
        terminated: dict[str, Any] = {"exitCode": exit_code}
        if message:
            terminated["message"] = message
        status["containerStatuses"] = [{"name": TRAINER_CONTAINER, "state": {"terminated": terminated}}]
    observed["status"] = status
    return observed


def parse_result_line(line: str) -> tuple[float, float | None] | None:
    """(top-1, top-5) from rank 0's `result: {'acc': ...}` line as the launcher prefixes it."""
    match = RESULT_LINE.match(line)
    if not match:
        return None
    top5 = float(match.group(2)) if match.group(2) else None
    return float(match.group(1)), top5


def progress_line(progress: Any) -> str:
    """One human line from a mnv2.progress.Progress."""
    parts = []
    if progress.epoch is not None:
        parts.append(f"epoch {progress.epoch}")
    if progress.step is not None:
        total = f"/{progress.total_steps}" if progress.total_steps else ""
        parts.append(f"step {progress.step}{total}")
    if progress.percent is not None:
        parts.append(f"{progress.percent:.1f}%")
    if progress.loss is not None:
        parts.append(f"loss {progress.loss:.4f}")
    if progress.images_per_second is not None:
        parts.append(f"{progress.images_per_second:.1f} img/s")
    if progress.eta_seconds is not None:
        parts.append(f"eta {progress.eta_seconds}s")
    if progress.top1 is not None:
        parts.append(f"top-1 {progress.top1:.4f}")
    return ", ".join(parts)


STEP_LINE = re.compile(
    r"^\[rank (\d+)\] epoch: \[\s*(\d+)/\s*(\d+)\], step:\[\s*(\d+)/\s*(\d+)\], loss:\[\s*([^/\]]+)/"
)


def replica_activity(line: str) -> str | None:
    """A short "rank 0: epoch 3/20, step 22/22, loss 1.234" from a prefixed zoo step line (1-based)."""
    match = STEP_LINE.match(line)
    if not match:
        return None
    rank, epoch, epochs, step, steps, loss = match.groups()
    return f"rank {rank}: epoch {int(epoch) + 1}/{epochs}, step {int(step) + 1}/{steps}, loss {loss.strip()}"


def replica_state(code: int | None) -> str:
    """What `kubectl get pods` would say about a local replica, from its launcher's exit code."""
    if code is None:
        return "Running"
    return "Succeeded" if code == 0 else f"Failed (exit {code})"


def local_artifacts(artifacts: Mapping[str, Any], mounts: tuple[Mount, ...]) -> dict[str, Any]:
    """The artifacts a status names, with the pod's output path turned into this machine's folder
    (the other paths are relative to it, mnv2.artifacts)."""
    return {key: translate_path(value, mounts) if isinstance(value, str) else value
            for key, value in artifacts.items()}


# ----------------------------------------------------------------------------- running


class _CurrentStdout:
    """sys.stdout as it is at each write: on a terminal the live table swaps in its own stdout, which
    prints every line above the table."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@dataclass
class RunOptions:
    run_dir: Path = Path(DEFAULT_RUN_DIR)
    operator_config: str | None = None
    progress_interval: float = 10.0
    grace: float = 30.0
    out: IO[str] | None = None
    volumes: dict[str, Path] = field(default_factory=dict)  # --volume NAME=DIR


def _prepare_host_paths(pods: list[dict[str, Any]], overrides: Mapping[str, Path]) -> None:
    """What kubelet checks before a pod starts: hostPath `type` DirectoryOrCreate creates the
    folder, Directory/File require it (a clear error here instead of a trainer failing later)."""
    for pod in pods:
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            source = volume.get("hostPath")
            if source is None or volume["name"] in overrides:
                continue
            path, kind = Path(source["path"]), source.get("type") or ""
            if kind == "DirectoryOrCreate":
                path.mkdir(parents=True, exist_ok=True)
            elif kind == "Directory" and not path.is_dir():
                raise ConfigError(
                    f"volume {volume['name']}: hostPath {path} is not a directory (type Directory); "
                    f"create it, or map the volume with --volume {volume['name']}=DIR"
                )
            elif kind == "File" and not path.is_file():
                raise ConfigError(f"volume {volume['name']}: hostPath {path} is not a file (type File)")


def _check_overrides(pods: list[dict[str, Any]], overrides: Mapping[str, Path]) -> None:
    names = {v["name"] for pod in pods for v in (pod.get("spec") or {}).get("volumes") or []}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(
            f"--volume {unknown[0]}: the pods have no such volume (they have {', '.join(sorted(names))})"
        )


def _now() -> datetime:
    return datetime.now(UTC)


def _render(job: dict[str, Any], operator_config: str | None) -> list[dict[str, Any]]:
    """The pods the operator would create, after the same policy check, with the local policy:
    local folders stand in for volumes, so any folder may be a hostPath (mnv2_operator.policy)."""
    from mnv2_operator.policy import violations, with_local_policy
    from mnv2_operator.profiles import load_operator_config
    from mnv2_operator.render import render_job

    config = with_local_policy(load_operator_config(operator_config))
    found = violations(job, config)
    if found:
        lines = "\n".join(f"  {path}: {text}" for path, text in found)
        raise ConfigError(f"the job breaks the local policy (mnv2_operator.policy.LOCAL_POLICY):\n{lines}")
    return render_job(job, config)


class _Progress:
    """Polls rank 0's /metrics every `interval` seconds and prints a line when training moved."""

    def __init__(self, port: int | None, interval: float, say: Callable[[str], None],
                 tick: Callable[[], None] | None = None):
        self.port, self.interval, self.say, self.tick = port, interval, say, tick
        self.last: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> _Progress:
        if self.port is not None and self.interval > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        from mnv2.progress import ProgressError, fetch_progress, progress_url

        url = progress_url(LOCAL_HOST, self.port)
        shown = None
        while not self._stop.wait(self.interval):
            if self.tick is not None:
                self.tick()
            try:
                progress = fetch_progress(url, timeout=2.0)
            except (ProgressError, OSError):
                continue  # not serving yet (compiling) or already gone
            self.last = progress
            key = (progress.step, progress.epoch, progress.top1)
            if key != shown and progress_line(progress):
                shown = key
                self.say(progress_line(progress))


def _prepare(manifest: Path, options: RunOptions) -> tuple[Any, dict[str, Any], list[dict], list[dict]]:
    """Parse and render the job: (job, raw manifest with local metadata, all objects, pods by index)."""
    from mnv2_operator.api import load_job_file, parse_job

    raw = load_job_file(manifest)
    job = parse_job(raw, source=str(manifest))
    raw = copy.deepcopy(raw)
    meta = raw.setdefault("metadata", {})
    meta.setdefault("namespace", "default")
    meta.setdefault("uid", f"local-{uuid.uuid4()}")
    objects = _render(raw, options.operator_config)
    pods = sorted((o for o in objects if o.get("kind") == "Pod"), key=pod_index)
    if not pods:
        raise ConfigError(f"{manifest}: rendering produced no pods")
    return job, raw, objects, pods


def plan_local_pods(
    pods: list[dict[str, Any]], *, job_name: str, run_dir: Path, base_dir: Path, base_env: Mapping[str, str],
    overrides: Mapping[str, Path] | None = None,
) -> list[LocalPod]:
    """Every replica as a local process, with fresh free ports (one scheduler port, a metrics block each)."""
    scheduler_port = free_port()
    used = {scheduler_port}
    local_pods = []
    for pod in pods:
        devices = int(resolve_env(pod, trainer_container(pod)).get(le.DEVICES_PER_REPLICA) or 1)
        metrics = free_port_block(devices, avoid=used)
        used.update(range(metrics, metrics + devices))
        local_pods.append(local_pod(
            pod, job_name=job_name, run_dir=run_dir, base_dir=base_dir,
            scheduler_port=scheduler_port, metrics_port=metrics, base_env=base_env, overrides=overrides,
        ))  # fmt: skip
    return local_pods


def dry_run(manifest: Path, options: RunOptions) -> int:
    """Print what each replica would run: argv and the pod's environment after local translation."""
    import yaml

    job, _, _, pods = _prepare(manifest, options)
    _check_overrides(pods, options.volumes)
    local_pods = plan_local_pods(
        pods, job_name=job.name, run_dir=options.run_dir.resolve(),
        base_dir=manifest.resolve().parent, base_env={}, overrides=options.volumes,
    )
    plan = [
        {"pod": lp.name, "argv": lp.spec.argv, "env": dict(sorted(lp.spec.env.items()))} for lp in local_pods
    ]
    out = options.out or sys.stdout
    out.write(yaml.safe_dump(plan, sort_keys=False))
    return 0


def run_job(manifest: Path, options: RunOptions) -> int:
    """Run every replica of the job locally until the job ends; print its final status as YAML."""
    import yaml

    from mnv2_operator.status import compute_status

    out = options.out or _CurrentStdout()
    lock = threading.RLock()

    def say(message: str) -> None:
        with lock:
            out.write(f"[mnv2 run] {message}\n")
            out.flush()

    job, raw, objects, pods = _prepare(manifest, options)
    base_dir = manifest.resolve().parent
    run_dir = options.run_dir.resolve()
    _check_overrides(pods, options.volumes)
    _prepare_host_paths(pods, options.volumes)
    _write_config_maps(
        objects, pods, job_name=job.name, run_dir=run_dir, base_dir=base_dir, overrides=options.volumes
    )

    status: dict[str, Any] = {}
    attempt = 0
    while True:
        local_pods = plan_local_pods(
            pods, job_name=job.name, run_dir=run_dir, base_dir=base_dir, base_env=os.environ,
            overrides=options.volumes,
        )
        for lp in local_pods:
            for mount in lp.mounts:
                if mount.local is not None and mount.local.is_relative_to(run_dir):
                    mount.local.mkdir(parents=True, exist_ok=True)
        say(f"job {job.name}: {len(local_pods)} replica(s), attempt {attempt}, "
            f"volumes under {run_dir / job.name}")
        status = _observe(raw, status, pods, attempt, None, compute_status)  # all replicas running
        title = f"job {job.name}, attempt {attempt}"
        results = _run_attempt(local_pods, options, out, lock, say, title=title)
        status = _observe(raw, status, pods, attempt, results, compute_status)
        if status.get("state") == "Restarting" and not results.interrupted:
            attempt = int(status.get("restartCount") or attempt + 1)
            say(f"restarting the job: {status.get('message')}")
            continue
        break

    status = final_status(status, results)
    rank0 = min(local_pods, key=lambda lp: lp.index)
    found = status.get("artifacts")  # compute_status copies them from rank 0's termination message
    if found:  # before the status, which stays the last thing printed
        say(f"artifacts {artifacts.describe(local_artifacts(found, rank0.mounts), volume='this machine')}")
    with lock:
        out.write(yaml.safe_dump({"status": status}, sort_keys=False))
        out.flush()
    if status.get("state") == "Succeeded":
        return int(ExitCode.SUCCESS)
    return results.exit_code or int(ExitCode.FAILURE)


def final_status(status: dict[str, Any], results: _AttemptResult) -> dict[str, Any]:
    """The last status plus what only `mnv2 run` knows: a user's stop, progress and top-1."""
    status = copy.deepcopy(status)
    if results.interrupted and status.get("state") == "Failed":
        status["reason"] = "Interrupted"
        status["message"] = f"stopped by {results.interrupted}"
        for condition in status.get("conditions") or []:
            if condition["type"] == "Failed" and condition["status"] == "True":
                condition.update(reason="Interrupted", message=status["message"])
            elif condition.get("reason") == "RestartPolicyNever":  # our no-retry override, not the spec's
                condition["reason"] = "Interrupted"
    progress = results.progress.to_status() if results.progress is not None else {}
    if results.top1 is not None:
        progress["top1"] = results.top1
    if progress:
        status["progress"] = progress
    return status


@dataclass
class _AttemptResult:
    codes: dict[str, int]
    exit_code: int
    interrupted: str | None
    progress: Any
    top1: float | None
    messages: dict[str, str] = field(default_factory=dict)  # termination messages by pod


def _run_attempt(
    local_pods: list[LocalPod], options: RunOptions, out: IO[str], lock: threading.RLock,
    say: Callable[[str], None], title: str = "job",
) -> _AttemptResult:
    """Start every replica's launcher in its own process group and supervise them together.

    On a terminal (and when writing to this process's stdout) a live table shows every replica's
    state and latest step, with rank 0's progress below it; otherwise the output is line by line.
    """
    from mnv2.console import live_table

    found: dict[str, float | None] = {"top1": None}
    table = live_table(title) if options.out is None else live_table(title, stream=options.out)
    activity = {lp.name: "" for lp in local_pods}

    def format_line(spec: ProcessSpec, line: str) -> str | None:
        result = parse_result_line(line)
        if result is not None:
            found["top1"] = result[0]
        latest = replica_activity(line)
        if latest is not None:
            activity[spec.name] = latest
            table.update({spec.name: f"{replica_state(None)}  {latest}"})
        if line.startswith("[launcher] "):
            return f"[launcher {spec.name}] {line[len('[launcher] '):]}"
        if line.startswith("["):
            return line  # already "[rank N] ..." or "[scheduler] ..."
        return f"[{spec.name}] {line}"

    # Each launcher kills its trainers a little before this runner would kill the launcher's group.
    launcher_grace = {STOP_GRACE: f"{max(1.0, options.grace - 5):g}"}
    supervisor = Supervisor(
        [replace(lp.spec, env={**lp.spec.env, **launcher_grace}) for lp in local_pods],
        grace=options.grace,
        out=out,
        own_process_group=True,
        stop_signal=signal.SIGTERM,  # the launchers forward it; trainers checkpoint and exit 143
        format_line=format_line,
        label="mnv2 run",
        lock=lock,
    )

    def show_states() -> None:
        codes = supervisor.codes
        table.update({name: f"{replica_state(codes.get(name))}  {text}".rstrip()
                      for name, text in activity.items()})

    live = table.live
    interval = min(options.progress_interval, 2.0) if live and options.progress_interval > 0 else (
        options.progress_interval)
    show = (lambda line: table.update({}, footer=f"rank 0: {line}")) if live else say
    rank0 = min(local_pods, key=lambda lp: lp.index)
    for lp in local_pods:  # an earlier attempt's message must not pass for this one's
        path = lp.spec.env.get(le.TERMINATION_MESSAGE_PATH)
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).unlink(missing_ok=True)
    show_states()
    try:
        with _Progress(rank0.metrics_port, interval, show, tick=show_states if live else None) as progress:
            code = supervisor.run()
        show_states()
    finally:
        table.close()
    interrupted = None
    if supervisor.signal_received is not None:
        interrupted = "Ctrl-C" if supervisor.signal_received == signal.SIGINT else "SIGTERM"
    messages = {}
    for lp in local_pods:
        path = lp.spec.env.get(le.TERMINATION_MESSAGE_PATH)
        if path and Path(path).is_file():
            messages[lp.name] = Path(path).read_text(errors="replace")[: artifacts.MESSAGE_LIMIT]
    return _AttemptResult(
        codes=supervisor.codes, exit_code=code, interrupted=interrupted,
        progress=progress.last, top1=found["top1"], messages=messages,
    )


def _observe(
    raw: dict[str, Any], status: dict[str, Any], pods: list[dict[str, Any]], attempt: int,
    results: _AttemptResult | None, compute_status: Callable[..., dict[str, Any]],
) -> dict[str, Any]:
    """The operator's status for the local replicas: all running (results None), or as they ended."""
    job = copy.deepcopy(raw)
    job["status"] = status
    if results is None:
        observed = [observed_pod(p, phase="Running", exit_code=None, attempt=attempt) for p in pods]
        return compute_status(job, observed, _now())
    if results.interrupted:
        job["spec"].setdefault("runPolicy", {})["restartPolicy"] = "Never"  # no restart after Ctrl-C
    observed = []
    for pod in pods:
        code = results.codes.get(pod["metadata"]["name"])
        phase = "Succeeded" if code == 0 else "Failed"
        message = results.messages.get(pod["metadata"]["name"])
        observed.append(observed_pod(pod, phase=phase, exit_code=code, attempt=attempt, message=message))
    return compute_status(job, observed, _now())


def _write_config_maps(
    objects: list[dict[str, Any]], pods: list[dict[str, Any]], *, job_name: str, run_dir: Path,
    base_dir: Path, overrides: Mapping[str, Path],
) -> None:
    """configMap volumes: the rendered ConfigMap's keys as files in the volume's local folder."""
    maps = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "ConfigMap"}
    for pod in pods:
        dirs = local_volume_dirs(
            pod, job_name=job_name, run_dir=run_dir, base_dir=base_dir, overrides=overrides
        )
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            source = volume.get("configMap")
            if source is None or source.get("name") not in maps:
                continue
            folder = dirs[volume["name"]]
            assert folder is not None
            folder.mkdir(parents=True, exist_ok=True)
            for key, value in (maps[source["name"]].get("data") or {}).items():
                with contextlib.suppress(OSError):
                    (folder / key).write_text(value)
