"""``Postgres.promote`` signals the promotion again while recovery goes on: PostgreSQL 15's
startup process may take a request that arrives just before it sleeps out
``wal_retrieve_retry_interval`` only after that sleep (5 s by default; seen in the synchronous
failover benchmark right after a reload)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from tests.unit.test_pg_helpers import settings

from pgha.pg import postgres as pg_module
from pgha.pg.cmd import CmdResult
from pgha.pg.postgres import Postgres
from pgha.pg.probe import Snapshot

IN_RECOVERY = Snapshot(in_recovery=True, server_version=150000, postmaster_start_time=None,
                       sysid="1", flush_lsn=None, walfile_tli=None, receive_lsn=100,
                       replay_lsn=100, replay_timestamp=None, paused=False, checkpoint_tli=1,
                       receiver_status=None, received_tli=1)


async def test_a_promotion_not_done_is_signalled_again(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    pg = Postgres(replace(settings(tmp_path), pg_ctl_timeout=5))
    signals: list[int] = []

    async def promote(_: Any) -> CmdResult:
        signals.append(1)
        return CmdResult(("pg_ctl", "promote"), 0, "", "")

    async def snapshot() -> Snapshot:
        # the first request is lost in the retry sleep; the second one ends recovery
        return replace(IN_RECOVERY, in_recovery=len(signals) < 2)

    async def reload(_: Any) -> CmdResult:
        return CmdResult(("pg_ctl", "reload"), 0, "", "")

    monkeypatch.setattr(pg_module, "pg_ctl_promote", promote)
    monkeypatch.setattr(pg_module, "pg_ctl_reload", reload)
    monkeypatch.setattr(pg_module, "_PROMOTE_RESIGNAL", 0.05)
    monkeypatch.setattr(pg, "_snapshot", snapshot)
    monkeypatch.setattr(pg, "is_running", lambda: True)
    assert await pg.promote()
    assert len(signals) == 2
