"""The launch environment: the variables the operator (or `mnv2 run`) sets on every pod, defined once.

The operator renders them into each pod; `mnv2 launch` reads them and derives the per-process
MindSpore variables (REFERENCE §2). No MindSpore, no kopf here.
"""

from __future__ import annotations

from enum import StrEnum


class LaunchMode(StrEnum):
    DYNAMIC = "dynamic"  # MindSpore dynamic cluster: a scheduler process plus workers (MS_* variables)
    RANK_TABLE = "ranktable"  # Ascend HCCL rank table (RANK_TABLE_FILE, RANK_ID, DEVICE_ID, RANK_SIZE)


# Set per pod by the operator (or by `mnv2 run`).
COMMAND = "MNV2_COMMAND"  # train | eval: what the launcher runs in each process
TRAINING_CONFIG = "MNV2_TRAINING_CONFIG"  # the TrainingConfig as JSON (snake_case keys)
PLATFORM = "MNV2_PLATFORM"  # Ascend | GPU | CPU
LAUNCH_MODE = "MNV2_LAUNCH_MODE"  # dynamic | ranktable
REPLICAS = "MNV2_REPLICAS"  # number of pods
REPLICA_INDEX = "MNV2_REPLICA_INDEX"  # this pod's index, 0-based
DEVICES_PER_REPLICA = "MNV2_DEVICES_PER_REPLICA"  # trainer processes in this pod
SCHEDULER_HOST = "MNV2_SCHEDULER_HOST"  # DNS name (or 127.0.0.1) of replica 0, which hosts the scheduler
SCHEDULER_PORT = "MNV2_SCHEDULER_PORT"
RANK_TABLE_PATH = "MNV2_RANK_TABLE_FILE"  # mounted hccl.json (rank-table mode)
RANK_TABLE_TIMEOUT = "MNV2_RANK_TABLE_TIMEOUT_SECONDS"  # how long to wait for status completed
POD_NAME = "MNV2_POD_NAME"  # downward API: matches the rank table's server entry
POD_IP = "MNV2_POD_IP"  # downward API
METRICS_PORT = "MNV2_METRICS_PORT"  # base port; local rank r serves on base + r
JOB_NAME = "MNV2_JOB_NAME"
STOP_GRACE = "MNV2_STOP_GRACE_SECONDS"  # launcher: SIGTERM -> SIGKILL delay for its children
SCHEDULER_DNS_TIMEOUT = "MNV2_SCHEDULER_DNS_TIMEOUT_SECONDS"  # launcher: wait for the scheduler's name
# downward API resourceFieldRef limits.cpu, divisor 1m: the pod's CPU limit in millicores; the launcher
# gives each trainer process its share for MindSpore's threads, OpenMP and the data pipeline
CPU_LIMIT_MILLICORES = "MNV2_CPU_LIMIT_MILLICORES"
# where the C++ kernels' build cache lives; pods have a read-only root filesystem, so the operator
# mounts a small emptyDir at KERNEL_CACHE_MOUNT and points this variable at it
KERNEL_CACHE_DIR = "MNV2_KERNEL_CACHE"
# the file rank 0 writes the run's artifacts to (mnv2.artifacts); the operator sets the container's
# terminationMessagePath to the same file and copies the message into the job's status
TERMINATION_MESSAGE_PATH = "MNV2_TERMINATION_MESSAGE_PATH"

DEFAULT_SCHEDULER_PORT = 8118
DEFAULT_METRICS_PORT = 9090
DEFAULT_RANK_TABLE_PATH = "/etc/mnv2/ranktable/hccl.json"
DEFAULT_RANK_TABLE_TIMEOUT_SECONDS = 600
DEFAULT_STOP_GRACE_SECONDS = 110.0  # below the pods' default terminationGracePeriodSeconds (120)
DEFAULT_SCHEDULER_DNS_TIMEOUT_SECONDS = 300.0
KERNEL_CACHE_MOUNT = "/var/cache/mnv2"  # the operator's emptyDir for KERNEL_CACHE_DIR
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"  # Kubernetes' default terminationMessagePath

# Set per process by the launcher (MindSpore's own names).
MS_SCHED_HOST = "MS_SCHED_HOST"
MS_SCHED_PORT = "MS_SCHED_PORT"
MS_WORKER_NUM = "MS_WORKER_NUM"
MS_ROLE = "MS_ROLE"  # MS_SCHED or MS_WORKER
MS_NODE_ID = "MS_NODE_ID"
RANK_TABLE_FILE = "RANK_TABLE_FILE"
RANK_ID = "RANK_ID"
DEVICE_ID = "DEVICE_ID"  # the card index MindSpore opens: logical (0..n-1) inside a container
ASCEND_DEVICE_ID = "ASCEND_DEVICE_ID"  # CANN's name for the same index (MindX-DL samples set both)
RANK_SIZE = "RANK_SIZE"
HCCL_CONNECT_TIMEOUT = "HCCL_CONNECT_TIMEOUT"
OMP_NUM_THREADS = "OMP_NUM_THREADS"  # OpenMP's team size: our C++ kernels (a value set on the pod wins)
# This process's share of the pod's CPUs (CPU_LIMIT_MILLICORES / processes, at least 1): the trainer
# sizes MindSpore's CPU kernel threads with it and caps the data pipeline's parallel workers at it.
THREADS = "MNV2_THREADS"

# Read by the trainer to know its place (set by the launcher in either mode).
RANK = "MNV2_RANK"
WORLD_SIZE = "MNV2_WORLD_SIZE"
LOCAL_RANK = "MNV2_LOCAL_RANK"
