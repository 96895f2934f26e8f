"""A real Prometheus server (Debian package `prometheus`) for tests: loopback only, its own config
and storage in a temporary folder, queried over its HTTP API."""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from obs_helpers import free_port
from obs_tools import require

Vector = list[dict[str, Any]]


class PrometheusServer:
    """Start with `start()`, always `stop()` (the fixture does it in its finalizer)."""

    def __init__(self, workdir: Path, scrape_jobs: dict[str, dict[str, Any]], rule_files: list[Path] = ()):
        self.binary = require("prometheus")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        self.proc: subprocess.Popen | None = None
        self._log_file = None
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": name, **cfg} for name, cfg in scrape_jobs.items()],
        }
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self, timeout: float = 60.0) -> None:
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready after {timeout}s:\n{self.log_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self._log_file is not None:
            self._log_file.close()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as exc:  # 400/422: a bad query; the body says why
            body = json.load(exc)
        if body.get("status") != "success":
            raise AssertionError(f"prometheus {path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> Vector:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", f"{expr}: {data['resultType']}"
        return data["result"]

    def wait_for(self, expr: str, ok: Callable[[Vector], bool] = bool, timeout: float = 45.0) -> Vector:
        """Poll `expr` until `ok(result)`; on timeout fail with the last result and the log."""
        deadline = time.monotonic() + timeout
        result: Vector = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if ok(result):
                return result
            time.sleep(0.5)
        raise AssertionError(
            f"{expr}: condition not met in {timeout}s; last result {result}\n{self.log_text()}"
        )

    def alerts(self) -> list[dict[str, Any]]:
        return self.api("alerts")["alerts"]

    def wait_for_alert(self, name: str, timeout: float = 45.0, **labels: str) -> dict[str, Any]:
        """Poll the alerts API until `name` fires with `labels`; on timeout show every alert."""
        deadline = time.monotonic() + timeout
        alerts: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            alerts = self.alerts()
            for a in alerts:
                if (
                    a["labels"].get("alertname") == name
                    and a["state"] == "firing"
                    and all(a["labels"].get(k) == v for k, v in labels.items())
                ):
                    return a
            time.sleep(0.5)
        rules = self.api("rules")
        raise AssertionError(f"{name}{labels} not firing in {timeout}s; alerts {alerts}; rules {rules}")

    def targets_health(self) -> dict[str, str]:
        return {t["scrapeUrl"]: t["health"] for t in self.api("targets")["activeTargets"]}


def values(result: Vector) -> list[float]:
    return [float(r["value"][1]) for r in result]


def finite(result: Vector) -> bool:
    return bool(result) and all(math.isfinite(v) for v in values(result))


@contextlib.contextmanager
def running_prometheus(
    workdir: Path, scrape_jobs: dict[str, dict[str, Any]], rule_files: list[Path] = ()
) -> Iterator[PrometheusServer]:
    """A started Prometheus that is stopped on exit, also when starting it failed.

    A context manager rather than a shared fixture: this folder has no conftest.py, so it cannot
    shadow another folder's `conftest` module that tests there import by name.
    """
    server = PrometheusServer(workdir, scrape_jobs, list(rule_files))
    try:
        server.start()
        yield server
    finally:
        server.stop()
