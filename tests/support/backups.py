"""A base backup and a WAL archive taken from a running test cluster, for the custom bootstrap
tests (the restore side is tests/support/restore_backup.sh and restore_wal.sh)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pgha.cli.localcluster import MemberProc
from tests.support.cluster import PG_BIN, psql, wait_until

SUPPORT = Path(__file__).resolve().parent
RESTORE_BACKUP = SUPPORT / "restore_backup.sh"
RESTORE_WAL = SUPPORT / "restore_wal.sh"


def archive_parameters(archive: Path) -> dict[str, str]:
    """PostgreSQL parameters that copy every finished WAL segment into ``archive``."""
    return {"archive_mode": "on",
            "archive_command": f"test ! -f {archive}/%f && cp %p {archive}/%f"}


def base_backup(m: MemberProc, target: Path) -> None:
    """pg_basebackup of member ``m`` (as the test clusters' replication user, WAL included)
    into the new directory ``target``."""
    subprocess.run(
        [str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(m.pg_port),
         "-U", "replicator", "-D", str(target), "-X", "stream", "-c", "fast", "-w"],
        env={**os.environ, "PGPASSWORD": "demo-repl"}, check=True, capture_output=True,
        timeout=120)


def archive_current_wal(m: MemberProc, archive: Path, timeout: float = 60.0) -> str:
    """Switch to a new WAL segment on the primary ``m`` and wait until the one it ended is in
    ``archive``; returns that segment's name."""
    name = psql(m, "SELECT pg_walfile_name(pg_current_wal_lsn())")
    psql(m, "SELECT pg_switch_wal()")
    wait_until(lambda: (archive / name).exists(), timeout, f"{name} in the archive")
    return name
