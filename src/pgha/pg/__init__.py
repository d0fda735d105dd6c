"""The PostgreSQL layer: process control, configuration files, probes, bootstrap and rejoin.

The agent uses the :class:`~pgha.pg.postgres.Postgres` facade; the other modules are its parts.
"""

from pgha.pg.errors import PgError
from pgha.pg.postgres import Postgres
from pgha.pg.settings import PgSettings, PgUser

__all__ = ["PgError", "PgSettings", "PgUser", "Postgres"]
