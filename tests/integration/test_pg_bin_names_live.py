"""``postgresql.bin_name`` and ``postgresql.rewind`` with real PostgreSQL 15: every node's
``bin_dir`` holds only renamed symlinks to the real programs (``pg_ctl.custom`` ->
.../bin/pg_ctl, ...), so each program pgha runs must be found under its configured name:
initdb, pg_ctl start/stop/promote (with the renamed postgres passed by ``-p``),
pg_controldata, pg_basebackup, single-user postgres, pg_rewind (with an extra option)."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_pg_support import (
    PG_BIN,
    Cluster,
    insert,
    kill_postmaster,
    new_cluster,
    requires_pg,
    rows,
    sync_member_slots,
    upstream,
    wait_rows,
)

from pgha.config import parse_config
from pgha.config.binaries import BINARIES
from pgha.core.actions import StopMode
from pgha.core.model import PgRole
from pgha.pg.controldata import SYSID
from pgha.pg.postgres import Postgres

pytestmark = [pytest.mark.integration, requires_pg, pytest.mark.timeout(180)]

RENAMED = ("pg_ctl", "initdb", "pg_controldata", "pg_basebackup", "postgres", "pg_rewind")


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with new_cluster() as c:
        yield c


def renamed_bin_dir(base: Path) -> Path:
    """A directory with ``<program>.custom`` symlinks to the real programs and nothing under
    the programs' own names (but pg_waldump, which has no bin_name key)."""
    bin_dir = base / "custom-bin"
    bin_dir.mkdir()
    for program in RENAMED:
        (bin_dir / f"{program}.custom").symlink_to(PG_BIN / program)
    (bin_dir / "pg_waldump").symlink_to(PG_BIN / "pg_waldump")
    return bin_dir


def names_from_config(base: Path, bin_dir: Path) -> dict[str, str]:
    """bin_name as the configuration gives it: YAML entries and one environment variable."""
    yaml_names = {p: f"{p}.custom" for p in RENAMED if p != "pg_ctl"}
    cfg = parse_config({"scope": "it", "name": "a", "etcd": {"hosts": "127.0.0.1:2379"},
                        "postgresql": {"data_dir": str(base / "x"), "bin_dir": str(bin_dir),
                                       "pgpass": str(base / "pgpass"),
                                       "bin_name": yaml_names}},
                       env={"PATRONI_POSTGRESQL_BIN_PG_CTL": "pg_ctl.custom"})
    names = cfg.postgresql.bin_names()
    assert set(names) == set(RENAMED) and set(names) < set(BINARIES)
    return names


def renamed_node(cluster: Cluster, name: str) -> Postgres:
    pg = cluster.node(name)
    bin_dir = cluster.base / "custom-bin"
    if not bin_dir.exists():
        renamed_bin_dir(cluster.base)
    pg.settings = dataclasses.replace(
        pg.settings, bin_dir=bin_dir, bin_names=names_from_config(cluster.base, bin_dir),
        rewind_options=(("debug", None),))
    assert not os.path.exists(pg.settings.bin_dir / "pg_ctl")
    return pg


async def test_a_cluster_runs_on_renamed_programs(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pgha.pg")
    a = renamed_node(cluster, "a")
    assert a.settings.binary("pg_ctl").endswith("custom-bin/pg_ctl.custom")
    assert await a.initdb()
    assert await a.start("primary", None)
    await a.create_roles()
    await a.execute("CREATE TABLE t (id int PRIMARY KEY, note text)")
    state = await a.observe()
    assert state.running and state.role == PgRole.PRIMARY
    assert state.sysid == (await a.controldata())[SYSID]

    b = renamed_node(cluster, "b")
    assert await sync_member_slots(a, {"b"}) == {}
    assert await b.clone(upstream(a))  # pg_basebackup.custom
    assert await b.start("replica", upstream(a))
    await insert(a, "common")
    await wait_rows(b, {"common"})

    # b takes over while a keeps writing; a is killed: diverged, needs crash recovery
    # (postgres.custom --single) and pg_rewind.custom --debug
    assert await b.promote()
    await insert(b, "new-primary")
    await insert(a, "lost")
    await kill_postmaster(a)
    assert await sync_member_slots(b, {"a"}) == {}
    assert await a.rejoin(upstream(b), use_pg_rewind=True)
    assert "single-user crash recovery" in caplog.text
    assert "pg_rewind from b done" in caplog.text
    started = next(r.getMessage() for r in caplog.records
                   if r.getMessage().startswith("running pg_rewind from b"))
    assert started.endswith(" --debug")
    await insert(b, "after-rejoin")
    await wait_rows(a, {"common", "new-primary", "after-rejoin"})
    assert "lost" not in await rows(a)
    assert (await a.observe()).role == PgRole.REPLICA

    assert await a.stop(StopMode.FAST)
    assert not (await a.observe()).running
