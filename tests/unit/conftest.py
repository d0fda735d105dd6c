"""Fixtures shared by the unit tests."""

from tests.support.cli_env import apis  # noqa: F401  (scripted member REST servers)
