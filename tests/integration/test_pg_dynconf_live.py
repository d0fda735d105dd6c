"""Dynamic configuration applied to a real PostgreSQL 15 (run as user postgres)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from test_pg_support import (
    Cluster,
    eventually,
    member_yaml,
    new_cluster,
    requires_pg,
    sync_member_slots,
    upstream,
)

from pgha.config import Config, parse_config
from pgha.core.actions import StopMode
from pgha.pg import dynconf
from pgha.pg.dynconf import DynamicConfigApplier
from pgha.pg.from_config import pg_settings
from pgha.pg.postgres import Postgres

pytestmark = [pytest.mark.integration, requires_pg, pytest.mark.timeout(120)]

BASE_DCS: dict[str, Any] = {"postgresql": {"parameters": {
    "max_connections": 30, "max_wal_senders": 10, "wal_keep_size": "64MB"}}}


def dcs(**params: Any) -> dict[str, Any]:
    """A DCS ``config`` value: BASE_DCS with ``params`` added to postgresql.parameters."""
    return {"ttl": 30, "postgresql": {
        "parameters": {**BASE_DCS["postgresql"]["parameters"], **params}}}


def member(cluster: Cluster, name: str) -> tuple[Postgres, Config]:
    """A Postgres built from a real YAML-shaped configuration (stopped by the cluster)."""
    config = parse_config(member_yaml(cluster.base / name, "dyn", name, BASE_DCS), env={})
    pg = Postgres(pg_settings(config, config.bootstrap.dcs))
    cluster.nodes.append(pg)
    return pg, config


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with new_cluster() as c:
        yield c


async def primary(cluster: Cluster, name: str = "a") -> tuple[Postgres, Config]:
    pg, config = member(cluster, name)
    assert await pg.initdb()
    assert await pg.start("primary", None)
    await pg.create_roles()
    return pg, config


async def show(pg: Postgres, name: str) -> str:
    return str((await pg.execute(f"SHOW {name}"))[0][0])


async def test_reload_parameter_applied_and_unchanged_config_costs_nothing(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    pg, config = await primary(cluster)
    applier = DynamicConfigApplier(pg, config)
    first = await applier.apply(dcs())
    assert not first.reloaded and first.files == ()
    assert not first.state.pending_restart

    result = await applier.apply(dcs(work_mem="7MB"))
    assert result.reloaded and "postgresql.conf" in result.files
    assert await show(pg, "work_mem") == "7MB"
    assert pg.settings.parameters["work_mem"] == "7MB"
    assert not result.state.pending_restart and result.state.status_fields() == {}

    conf = pg.settings.data_dir / "postgresql.conf"
    mtime = conf.stat().st_mtime_ns

    async def no_reload(*_args: Any) -> Any:
        raise AssertionError("reloaded although nothing changed")

    def no_sql(*_args: Any) -> Any:
        raise AssertionError("SQL although nothing changed")

    monkeypatch.setattr(dynconf, "pg_ctl_reload", no_reload)
    monkeypatch.setattr(dynconf, "local_connection", no_sql)
    for _ in range(3):
        again = await applier.apply(dcs(work_mem="7MB"))
        assert not again.reloaded and again.files == ()
    assert conf.stat().st_mtime_ns == mtime


async def test_local_yaml_wins_over_dynamic(cluster: Cluster) -> None:
    pg, config = await primary(cluster)
    applier = DynamicConfigApplier(pg, config)
    await applier.apply(dcs(shared_buffers="32MB", work_mem="5MB"))
    assert await show(pg, "work_mem") == "5MB"
    # shared_buffers is set locally (16MB): the dynamic 32MB loses, so no restart is pending
    assert not applier.state.pending_restart
    assert await show(pg, "shared_buffers") == "16MB"


async def test_restart_parameter_reports_pending_until_restart(cluster: Cluster) -> None:
    pg, config = await primary(cluster)
    applier = DynamicConfigApplier(pg, config)
    result = await applier.apply(dcs(max_connections=40))
    assert result.reloaded
    assert result.state.pending_restart
    assert result.state.pending_restart_reason == {
        "max_connections": {"old_value": "30", "new_value": "40"}}
    assert result.state.status_fields() == {
        "pending_restart": True,
        "pending_restart_reason": {"max_connections": {"old_value": "30", "new_value": "40"}}}
    assert await show(pg, "max_connections") == "30"
    # unchanged config: the state is kept without asking PostgreSQL again
    assert (await applier.apply(dcs(max_connections=40))).state.pending_restart

    assert await pg.stop(StopMode.FAST)
    stopped = await applier.apply(dcs(max_connections=40))
    assert not stopped.state.pending_restart
    assert await pg.start("primary", None)
    after = await applier.apply(dcs(max_connections=40))
    assert not after.reloaded
    assert not after.state.pending_restart and after.state.pending_restart_reason == {}
    assert await show(pg, "max_connections") == "40"


async def test_restart_without_agent_noticing_the_stop_clears_pending(cluster: Cluster) -> None:
    pg, config = await primary(cluster)
    applier = DynamicConfigApplier(pg, config)
    assert (await applier.apply(dcs(max_connections=35))).state.pending_restart
    assert await pg.stop(StopMode.FAST)
    assert await pg.start("primary", None)  # new postmaster pid, never seen stopped
    assert not (await applier.apply(dcs(max_connections=35))).state.pending_restart


async def test_bad_values_keep_the_server_up_and_restartable(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    pg, config = await primary(cluster)
    applier = DynamicConfigApplier(pg, config)
    await applier.apply(dcs(work_mem="6MB"))
    caplog.set_level(logging.WARNING, logger="pgha.pg")
    bad = dcs(work_mem="bogus", max_connections="lots", no_such_parameter=1)
    result = await applier.apply(bad)
    assert "no_such_parameter" in caplog.text  # unknown names are dropped, named in a warning
    assert "no_such_parameter" not in pg.settings.parameters
    assert result.reloaded
    assert dict(result.state.rejected) == {"work_mem": "bogus", "max_connections": "lots"}
    assert not result.state.pending_restart
    assert pg.is_running()
    assert await show(pg, "work_mem") == "6MB"
    text = (pg.settings.data_dir / "postgresql.conf").read_text()
    assert "work_mem = '6MB'" in text and "max_connections = '30'" in text
    assert "'bogus'" not in text and "'lots'" not in text
    # the same bad config again: nothing to do, still reported
    again = await applier.apply(bad)
    assert not again.reloaded and "work_mem" in again.state.rejected
    # the server still restarts with the files as written
    assert await pg.stop(StopMode.FAST)
    assert await pg.start("primary", None)
    assert await show(pg, "work_mem") == "6MB"
    # fixing the value applies it
    fixed = await applier.apply(dcs(work_mem="9MB"))
    assert fixed.reloaded and dict(fixed.state.rejected) == {}
    assert await show(pg, "work_mem") == "9MB"


async def test_pg_hba_from_dcs_applied_and_bad_list_rejected(cluster: Cluster) -> None:
    pg, config = await primary(cluster)
    applier = DynamicConfigApplier(pg, config)
    await applier.apply(dcs())
    good = ["local all all trust", "host all all 127.0.0.1/32 scram-sha-256",
            "host replication replicator 127.0.0.1/32 scram-sha-256"]
    cfg = dcs()
    cfg["postgresql"]["pg_hba"] = good
    result = await applier.apply(cfg)
    assert result.reloaded and "pg_hba.conf" in result.files
    rules = await pg.execute("SELECT count(*) FROM pg_hba_file_rules WHERE error IS NULL")
    assert rules[0][0] == 3

    bad = dcs()
    bad["postgresql"]["pg_hba"] = [*good, "host all all 127.0.0.1/32 no-such-method"]
    rejected = await applier.apply(bad)
    assert rejected.state.hba_rejected
    assert "no-such-method" not in (pg.settings.data_dir / "pg_hba.conf").read_text()
    assert pg.settings.pg_hba == tuple(good)
    assert await pg.stop(StopMode.FAST)
    assert await pg.start("primary", None)


async def test_replica_keeps_shared_memory_values_of_its_primary(cluster: Cluster) -> None:
    prim, pconfig = await primary(cluster, "a")
    replica, rconfig = member(cluster, "b")
    assert await sync_member_slots(prim, {"b"}) == {}
    assert await replica.clone(upstream(prim))
    assert await replica.start("replica", upstream(prim))
    on_primary = DynamicConfigApplier(prim, pconfig)
    on_replica = DynamicConfigApplier(replica, rconfig)
    lower = dcs(max_connections=25)

    assert (await on_primary.apply(lower)).state.pending_restart
    r = await on_replica.apply(lower)
    # the replica may not go below the primary's recorded 30 yet: nothing pending there
    assert replica.settings.parameters["max_connections"] == 30
    assert not r.state.pending_restart

    assert await prim.stop(StopMode.FAST)
    assert await prim.start("primary", None)
    assert not (await on_primary.apply(lower)).state.pending_restart
    await prim.execute("SELECT pg_switch_wal()")

    async def lowered() -> bool:
        result = await on_replica.apply(lower)
        return result.state.pending_restart

    await eventually(lowered, what="replica to see the primary's lower max_connections")
    assert replica.settings.parameters["max_connections"] == 25
    assert on_replica.state.pending_restart_reason == {
        "max_connections": {"old_value": "30", "new_value": "25"}}
