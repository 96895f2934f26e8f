"""Fixtures of the observability tests (helpers live in obs_*.py modules beside this file)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from obs_prom import PrometheusServer


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[..., PrometheusServer]]:
    """Factory: start a real Prometheus scraping the given jobs; every one started is stopped."""
    started: list[PrometheusServer] = []

    def start(scrape_jobs: dict[str, dict[str, Any]], rule_files: list[Path] = ()) -> PrometheusServer:
        workdir = tmp_path / f"prometheus-{len(started)}"
        workdir.mkdir()
        server = PrometheusServer(workdir, scrape_jobs, list(rule_files))
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()
