"""Fixtures for the custom-operator tests: MindSpore on CPU in a chosen execution mode."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

ms = pytest.importorskip("mindspore")


@contextmanager
def _mode(mode: int) -> Iterator[None]:
    """MindSpore on CPU in `mode`, the previous mode restored afterwards."""
    previous = ms.get_context("mode")
    ms.set_context(mode=mode, device_target="CPU")
    try:
        yield
    finally:
        ms.set_context(mode=previous)


@pytest.fixture(params=["graph", "pynative"])
def ms_mode(request):
    """Run the test in GRAPH_MODE and PYNATIVE_MODE."""
    with _mode(ms.GRAPH_MODE if request.param == "graph" else ms.PYNATIVE_MODE):
        yield request.param


@pytest.fixture
def graph_mode():
    """GRAPH_MODE (the trainer's mode)."""
    with _mode(ms.GRAPH_MODE):
        yield


@pytest.fixture
def pynative():
    """PYNATIVE_MODE, for tests of many shapes (a GRAPH_MODE compile per shape takes minutes)."""
    with _mode(ms.PYNATIVE_MODE):
        yield
