"""Fixtures shared by the unit tests."""

import logging
from collections.abc import Iterator

import pytest
from tests.support.cli_env import apis  # noqa: F401  (scripted member REST servers)


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    """``pgha run``/``validate-config`` reconfigure the root logger onto the runner's (later
    closed) stderr: put its handlers and level back after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
