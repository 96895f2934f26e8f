"""Figures the reliability suite measures (runs, faults, violations, examples), printed at the end of a run.

Why a module: Hypothesis properties and chaos loops run inside test functions; they add their counts
here and the conftest prints one `reliability: ...` line per area in pytest's terminal summary.
"""

from __future__ import annotations

from collections import Counter, defaultdict

FIGURES: defaultdict[str, Counter[str]] = defaultdict(Counter)


def add(area: str, **counts: int) -> None:
    """Add counts (e.g. runs=1, faults=12) to an area such as "chaos" or "fuzz-values"."""
    FIGURES[area].update(counts)


def lines() -> list[str]:
    return [
        f"reliability[{area}]: " + " ".join(f"{key}={value}" for key, value in sorted(counts.items()))
        for area, counts in sorted(FIGURES.items())
    ]
