"""Minimal :class:`PgSettings` for unit tests that never start PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from pgha.pg.settings import PgSettings, PgUser


def local_pg_settings(tmp: Path) -> PgSettings:
    """Member ``pg1`` of ``demo``, data directory ``tmp/data``, over the socket in ``tmp``."""
    return PgSettings(
        name="pg1", scope="demo", data_dir=tmp / "data", bin_dir=Path("/bin"),
        listen_host="127.0.0.1", port=5432, connect_host="127.0.0.1",
        superuser=PgUser("postgres"), replication=PgUser("replicator"),
        rewind=PgUser("rewind_user"), parameters={}, pg_hba=(), initdb_options=(),
        bootstrap_users={}, pgpass=tmp / "pgpass", socket_dir=tmp, use_unix_socket=True)
