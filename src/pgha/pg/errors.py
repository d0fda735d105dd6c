"""Exceptions of the PostgreSQL layer."""

from __future__ import annotations


class PgError(Exception):
    """A PostgreSQL command or query failed, timed out, or the server could not be reached."""
