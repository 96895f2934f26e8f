"""The trainer's exit codes: one table that the trainer, the launcher and the operator share.

The operator's `restartPolicy: ExitCode` asks this table whether a failed pod is worth a retry.
Codes not in the table follow Kubeflow's rule: 1-127 permanent, 128 and above (signals) retryable.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    SUCCESS = 0
    FAILURE = 1  # an unexpected error (uncaught exception)
    INVALID_CONFIG = 64  # configuration or command line rejected (like EX_USAGE)
    INVALID_INPUT = 65  # dataset missing, empty, corrupt (like EX_DATAERR)
    INVALID_CHECKPOINT = 66  # pretrained/resume checkpoint missing or incompatible
    DIVERGED = 67  # NaN or Inf loss
    IO_ERROR = 74  # writing checkpoints or outputs failed (disk full, ...) (like EX_IOERR)
    RANK_TABLE_TIMEOUT = 75  # the rank table never reached "completed" (like EX_TEMPFAIL)
    COMMUNICATION_ERROR = 76  # collective communication could not start or broke
    INTERRUPTED = 143  # SIGTERM: a checkpoint was saved, then the process exited (128 + 15)


@dataclass(frozen=True)
class ExitInfo:
    code: int
    reason: str
    retryable: bool
    meaning: str


EXIT_TABLE: dict[int, ExitInfo] = {
    info.code: info
    for info in (
        ExitInfo(0, "Succeeded", False, "training, evaluation or export finished"),
        ExitInfo(1, "Failed", False, "unexpected error; see the log"),
        ExitInfo(64, "InvalidConfig", False, "the configuration or command line is invalid"),
        ExitInfo(65, "InvalidInput", False, "the dataset is missing, empty or has unreadable images"),
        ExitInfo(66, "InvalidCheckpoint", False, "a checkpoint is missing or does not fit the model"),
        ExitInfo(67, "Diverged", False, "the loss became NaN or Inf"),
        ExitInfo(74, "IOError", True, "writing checkpoints or outputs failed"),
        ExitInfo(75, "RankTableTimeout", True, "the rank table did not reach status completed in time"),
        ExitInfo(76, "CommunicationError", True, "collective communication failed"),
        ExitInfo(137, "Killed", True, "killed by SIGKILL (often out of memory)"),
        ExitInfo(143, "Interrupted", True, "stopped by SIGTERM after saving a checkpoint"),
    )
}


def describe(code: int) -> ExitInfo:
    """What an exit code means, for codes inside and outside the table."""
    if code in EXIT_TABLE:
        return EXIT_TABLE[code]
    if code >= 128:
        return ExitInfo(code, "Signaled", True, f"terminated by signal {code - 128}")
    return ExitInfo(code, "Failed", False, "unknown error code")


def is_retryable(code: int) -> bool:
    return describe(code).retryable


class TrainerError(Exception):
    """An error that ends the trainer with a specific exit code and a message naming the culprit."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, exit_code: ExitCode | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(TrainerError):
    exit_code = ExitCode.INVALID_CONFIG


class InputError(TrainerError):
    exit_code = ExitCode.INVALID_INPUT


class CheckpointError(TrainerError):
    exit_code = ExitCode.INVALID_CHECKPOINT


class DivergedError(TrainerError):
    exit_code = ExitCode.DIVERGED
