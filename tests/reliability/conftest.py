"""Reliability suite options: `-m soak` (or `--soak`) switches the chaos and fuzz loops to their long mode."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak", action="store_true", default=False,
        help="run the reliability loops in their long mode (also implied by -m soak or MNV2_SOAK=1)",
    )


@pytest.fixture(scope="session")
def soak(request: pytest.FixtureRequest) -> bool:
    """True in the long mode: many chaos runs, more fuzz examples."""
    markexpr = request.config.getoption("-m") or ""
    return bool(
        request.config.getoption("--soak")
        or os.environ.get("MNV2_SOAK") == "1"
        or ("soak" in markexpr and "not soak" not in markexpr)
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the measured figures (runs, faults injected, violations, examples) after the run."""
    from figures import lines

    for line in lines():
        terminalreporter.write_line(line)
