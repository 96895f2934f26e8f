"""Fixtures for the custom-operator tests: MindSpore on CPU in a chosen execution mode."""

from __future__ import annotations

import pytest

ms = pytest.importorskip("mindspore")


@pytest.fixture(params=["graph", "pynative"])
def ms_mode(request):
    """Run the test in GRAPH_MODE and PYNATIVE_MODE, restoring the previous mode afterwards."""
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE if request.param == "graph" else ms.PYNATIVE_MODE, device_target="CPU")
    yield request.param
    ms.set_context(mode=previous)


@pytest.fixture
def graph_mode():
    """GRAPH_MODE on CPU (the trainer's mode), restoring the previous mode afterwards."""
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    yield
    ms.set_context(mode=previous)


@pytest.fixture
def pynative():
    """PYNATIVE_MODE on CPU, for tests of many shapes (a GRAPH_MODE compile per shape takes minutes)."""
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    yield
    ms.set_context(mode=previous)
