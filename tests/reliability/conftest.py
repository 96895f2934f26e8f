"""Reliability suite options: `-m soak` (or `--soak`) switches the chaos and fuzz loops to their long mode."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak", action="store_true", default=False,
        help="run the reliability loops in their long mode (also implied by -m soak or MNV2_SOAK=1)",
    )


def soak_mode(config: pytest.Config) -> bool:
    markexpr = config.getoption("-m") or ""
    return bool(
        config.getoption("--soak")
        or os.environ.get("MNV2_SOAK") == "1"
        or ("soak" in markexpr and "not soak" not in markexpr)
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With `-m soak`, the tests that have a long mode (they take the `soak` fixture) are selected.

    They are not marked statically: the default `-m 'not soak'` would then drop them from CI,
    where they run in their bounded mode.
    """
    if not soak_mode(config):
        return
    for item in items:
        if "soak" in getattr(item, "fixturenames", ()) and "tests/reliability/" in str(item.fspath):
            item.add_marker(pytest.mark.soak)


@pytest.fixture(scope="session")
def soak(request: pytest.FixtureRequest) -> bool:
    """True in the long mode: many chaos runs, more fuzz examples."""
    return soak_mode(request.config)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the measured figures (runs, faults injected, violations, examples) after the run."""
    from figures import lines

    for line in lines():
        terminalreporter.write_line(line)
