"""Hypothesis profiles for the whole suite: CI results depend only on the code.

- `ci` (the default): derandomized (examples derived from each test's source, not from a random seed)
  and no example database, so a run on a fresh clone and a rerun of the same commit draw the same
  examples and pass or fail alike.
- `explore` (selected by `-m soak`, `--soak`, `MNV2_SOAK=1`, or HYPOTHESIS_PROFILE=explore): random
  exploration with Hypothesis' example database (.hypothesis/, not committed) replaying what earlier
  runs found. Every failure found this way is added to the test as an explicit `@example(...)`
  regression case (see tests/reliability/README.md), so CI keeps checking it.
HYPOTHESIS_PROFILE names a profile explicitly (it wins over the soak switches).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("ci", derandomize=True, database=None, print_blob=True, **_COMMON)
settings.register_profile("explore", derandomize=False, print_blob=True, **_COMMON)


def profile_for(markexpr: str, soak_option: bool, environ: dict[str, str]) -> str:
    """The profile a run uses: HYPOTHESIS_PROFILE, else `explore` in soak mode, else `ci`."""
    if environ.get("HYPOTHESIS_PROFILE"):
        return environ["HYPOTHESIS_PROFILE"]
    soak = (
        soak_option or environ.get("MNV2_SOAK") == "1" or ("soak" in markexpr and "not soak" not in markexpr)
    )
    return "explore" if soak else "ci"


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("hypothesis_profile", default=None):
        return  # --hypothesis-profile given: Hypothesis' own plugin has loaded it
    markexpr = config.getoption("-m") or ""
    soak = bool(config.getoption("--soak", default=False))
    settings.load_profile(profile_for(markexpr, soak, dict(os.environ)))
