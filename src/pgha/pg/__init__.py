"""The PostgreSQL layer: process control, configuration files, probes, bootstrap and rejoin.

The agent uses the :class:`~pgha.pg.postgres.Postgres` facade; the other modules are its parts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pgha.pg.errors import PgError
    from pgha.pg.postgres import Postgres
    from pgha.pg.settings import PgSettings, PgUser

__all__ = ["PgError", "PgSettings", "PgUser", "Postgres"]

# imported on first use, so that e.g. pgha.pg.catalogue does not pull in asyncpg
_LAZY = {"PgError": "pgha.pg.errors", "Postgres": "pgha.pg.postgres",
         "PgSettings": "pgha.pg.settings", "PgUser": "pgha.pg.settings"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
