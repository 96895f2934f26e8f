"""Where the model went: the summary of a finished training run, for people and for the operator.

Rank 0 writes the summary twice when training ends:
- `OUTPUT_DIR/artifacts.json`, beside the files it names, for whoever opens the output volume later;
- the container's termination message (the file named by `MNV2_TERMINATION_MESSAGE_PATH`, which the
  operator points at the container's `terminationMessagePath`), so the operator can copy it into the
  job's status without reading the volume. Kubernetes keeps at most 4096 bytes of each container's
  message ("Determine the Reason for Pod Failure", kubernetes.io), so the message is compact and
  never larger than that.

Paths are relative to the output folder, so they mean the same inside the pod, on the volume and on
the machine of `mnv2 run`. The operator reads a message written by a container whose image a job
author may choose, so `parse` keeps only the known keys, with bounded, printable values.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mnv2 import launchenv

SUMMARY_FILE = "artifacts.json"
MESSAGE_LIMIT = 4096  # bytes Kubernetes keeps of one container's termination message
MAX_TEXT = 256  # characters kept of one path
MAX_EXPORTS = 8


def summary(
    output_dir: str | Path,
    *,
    checkpoint: str | Path | None,
    top1: float | None = None,
    best_checkpoint: str | Path | None = None,
    best_top1: float | None = None,
    exports: list[str | Path] | None = None,
) -> dict[str, Any]:
    """The run's artifacts with paths relative to `output_dir`; absent ones are left out."""
    root = Path(output_dir)

    def relative(path: str | Path) -> str:
        path = Path(path)
        return str(path.relative_to(root)) if path.is_absolute() and path.is_relative_to(root) else str(path)

    found: dict[str, Any] = {"outputPath": str(root)}
    if checkpoint:
        found["checkpoint"] = relative(checkpoint)
    if best_checkpoint:
        found["bestCheckpoint"] = relative(best_checkpoint)
    if best_top1 is not None:
        found["bestTop1"] = round(float(best_top1), 6)
    if top1 is not None:
        found["top1"] = round(float(top1), 6)
    if exports:
        found["exports"] = [relative(path) for path in exports]
    return found


def message(artifacts: Mapping[str, Any]) -> str:
    """Compact JSON of `artifacts` within MESSAGE_LIMIT bytes: exports are dropped from the end first."""
    artifacts = dict(artifacts)
    while True:
        text = json.dumps(artifacts, separators=(",", ":"), sort_keys=True)
        if len(text.encode()) <= MESSAGE_LIMIT:
            return text
        exports = artifacts.get("exports") or []
        if not exports:
            return json.dumps({"outputPath": str(artifacts.get("outputPath", ""))[:MAX_TEXT]})
        artifacts["exports"] = exports[:-1]


def publish(artifacts: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> Path:
    """Write `artifacts.json` into the output folder (atomically) and the termination message."""
    folder = Path(str(artifacts["outputPath"]))
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / SUMMARY_FILE
    partial = target.with_name(f".{SUMMARY_FILE}.partial")
    partial.write_text(json.dumps(dict(artifacts), indent=2, sort_keys=True) + "\n")
    os.replace(partial, target)
    termination = environ.get(launchenv.TERMINATION_MESSAGE_PATH)
    if termination:
        try:
            Path(termination).write_text(message(artifacts))
        except OSError as error:  # no such file outside a container: the summary file still exists
            print(f"notice: termination message {termination} not written: {error}", flush=True)
    return target


def _text(value: Any) -> str | None:
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        return None
    return value if value.isprintable() else None


def _fraction(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) and 0.0 <= value <= 1.0 else None


def parse(text: str | None) -> dict[str, Any] | None:
    """The artifacts in a termination message, or None when it holds none; unknown keys are dropped."""
    try:
        raw = json.loads(text or "")
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    found: dict[str, Any] = {}
    for key in ("outputPath", "checkpoint", "bestCheckpoint"):
        if (value := _text(raw.get(key))) is not None:
            found[key] = value
    for key in ("top1", "bestTop1"):
        if (value := _fraction(raw.get(key))) is not None:
            found[key] = value
    exports = raw.get("exports")
    if isinstance(exports, list):
        kept = [value for item in exports[:MAX_EXPORTS] if (value := _text(item)) is not None]
        if kept:
            found["exports"] = kept
    return found if set(found) - {"outputPath"} else None


def describe(artifacts: Mapping[str, Any], volume: str = "the output volume") -> str:
    """One sentence saying where each artifact is, for events and `mnv2 run`."""
    where = artifacts.get("outputPath", "")
    parts = []
    if "checkpoint" in artifacts:
        parts.append(f"final checkpoint {artifacts['checkpoint']}")
    if "bestCheckpoint" in artifacts:
        best = f" (top-1 {artifacts['bestTop1']:.4f})" if "bestTop1" in artifacts else ""
        parts.append(f"best checkpoint {artifacts['bestCheckpoint']}{best}")
    if artifacts.get("exports"):
        parts.append("exported " + ", ".join(artifacts["exports"]))
    if "top1" in artifacts:
        parts.append(f"final top-1 {artifacts['top1']:.4f}")
    return f"on {volume} under {where}: " + "; ".join(parts) if parts else f"nothing recorded under {where}"
