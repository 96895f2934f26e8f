"""Fixtures of the API tests (builders live in api_builders.py)."""

from __future__ import annotations

import pytest
from mnv2_operator.profiles import OperatorConfig, load_operator_config


@pytest.fixture(scope="session")
def config() -> OperatorConfig:
    return load_operator_config(None)
