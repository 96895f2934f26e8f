"""Training progress read back from a trainer's Prometheus exposition.

The operator's timer fetches rank 0's `/metrics` and writes `status.progress`; `mnv2 run` prints the
same model. Reading the metrics text (rather than a second progress endpoint) means what people see
in `kubectl get` is exactly what Prometheus stores. Pure parsing plus one small HTTP GET; no
MindSpore, no kopf.
"""

from __future__ import annotations

import ipaddress
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

PREFIX = "mnv2_trainer_"
MAX_BODY_BYTES = 4 * 1024 * 1024  # a trainer's exposition is a few KiB; refuse anything absurd


class ProgressError(ValueError):
    """The metrics could not be fetched or read; the message names the URL or the problem."""


class Progress(BaseModel):
    """What `status.progress` shows. Fields are None until the trainer has reported them.

    `step` is the global step (steps completed), `percent` is 0-100, `top1` is a ratio 0-1 like the
    metric, `eta_seconds` is the estimated time left at the current throughput.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    epoch: int | None = None
    step: int | None = None
    total_steps: int | None = None
    percent: float | None = Field(None, ge=0, le=100)
    loss: float | None = None
    top1: float | None = None
    images_per_second: float | None = None
    eta_seconds: int | None = Field(None, ge=0)

    def to_status(self) -> dict:
        """camelCase dict without unknown fields, ready for a status patch."""
        return self.model_dump(by_alias=True, exclude_none=True)


def _samples(metrics_text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples of every mnv2_trainer_* series, by sample name."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    try:
        for family in text_string_to_metric_families(metrics_text):
            for s in family.samples:
                if s.name.startswith(PREFIX):
                    out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    except (ValueError, TypeError, IndexError) as exc:
        raise ProgressError(f"trainer metrics text is not valid Prometheus exposition: {exc}") from exc
    return out


def _rank_key(labels: dict[str, str]) -> tuple[int, str]:
    rank = labels.get("rank", "")
    return (int(rank), "") if rank.isdigit() else (1 << 30, rank)


def _pick(samples: Iterable[tuple[dict[str, str], float]], rank: str | None) -> float | None:
    """The value for `rank` (or the lowest rank present when `rank` is None)."""
    items = list(samples)
    if rank is not None:
        items = [it for it in items if it[0].get("rank") == rank]
    if not items:
        return None
    return min(items, key=lambda it: _rank_key(it[0]))[1]


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def parse_progress(metrics_text: str, rank: str | None = None) -> Progress:
    """Progress from a trainer exposition (rank 0's, or the lowest rank in the text).

    percent = global_step / total_steps; eta = remaining steps x images per step / images per
    second, rounded up (a job never looks closer to done than it is). Images per step is this
    process's images_total / steps it observed, so a resumed run, whose counters restart at 0
    while global_step does not, still gets a right ETA. A NaN loss becomes None: Kubernetes
    status is JSON, and the MNV2LossNaN alert reports it instead.
    """
    s = _samples(metrics_text)
    if not s:
        raise ProgressError(f"no {PREFIX}* series in the metrics text: is this a trainer's /metrics?")

    def get(name: str) -> float | None:
        return _finite(_pick(s.get(PREFIX + name, []), rank))

    epoch = get("epoch")
    step = get("global_step")
    total = get("total_steps")
    ips = get("images_per_second")
    images = get("images_total")
    steps_seen = get("step_duration_seconds_count")
    step_time_sum = get("step_duration_seconds_sum")

    percent = None
    if step is not None and total:
        percent = round(min(100.0, max(0.0, 100.0 * step / total)), 1)

    eta = None
    if step is not None and total is not None:
        remaining = max(0.0, total - step)
        if remaining == 0:
            eta = 0
        elif ips and ips > 0 and images and steps_seen:
            eta = math.ceil(remaining * (images / steps_seen) / ips)
        elif steps_seen and step_time_sum is not None:
            eta = math.ceil(remaining * step_time_sum / steps_seen)  # no throughput yet: mean step time

    return Progress(
        epoch=None if epoch is None else int(epoch),
        step=None if step is None else int(step),
        total_steps=None if total is None else int(total),
        percent=percent,
        loss=get("loss"),
        top1=get("top1_accuracy"),
        images_per_second=None if ips is None else round(ips, 2),
        eta_seconds=eta,
    )


def progress_url(host: str, port: int) -> str:
    """The metrics URL of a trainer at a pod IP (or 127.0.0.1) and port."""
    ip = ipaddress.ip_address(host)
    netloc = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"http://{netloc}:{port}/metrics"


def _check_url(url: str) -> None:
    """Only plain HTTP to an IP literal: the operator reads pod IPs, `mnv2 run` reads loopback.

    Refusing host names keeps a job spec from steering the operator's requests through DNS.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        raise ProgressError(f"progress URL {url!r}: only http:// is supported")
    try:
        ipaddress.ip_address(parts.hostname or "")
    except ValueError:
        raise ProgressError(
            f"progress URL {url!r}: host must be an IP address (pod IP or loopback)"
        ) from None
    if parts.port is None:
        raise ProgressError(f"progress URL {url!r}: port is missing")


def fetch_metrics_text(url: str, timeout: float = 2.0) -> str:
    """GET a /metrics page; every failure becomes a ProgressError naming the URL."""
    _check_url(url)
    req = urllib.request.Request(url, headers={"Accept": "text/plain"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with opener.open(req, timeout=timeout) as resp:
            body = resp.read(MAX_BODY_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise ProgressError(f"progress URL {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ProgressError(f"progress URL {url}: {reason}") from exc
    if len(body) > MAX_BODY_BYTES:
        raise ProgressError(f"progress URL {url}: response larger than {MAX_BODY_BYTES} bytes")
    return body.decode("utf-8", errors="replace")


def fetch_progress(url: str, timeout: float = 2.0) -> Progress:
    """Fetch a trainer's /metrics over HTTP and parse it (the operator's timer, `mnv2 run`)."""
    return parse_progress(fetch_metrics_text(url, timeout))
