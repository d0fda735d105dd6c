"""``postgresql.pg_ident``, ``postgresql.custom_conf`` and ``postgresql.config_dir`` on a real
PostgreSQL 15 (run as user postgres): the files pgha writes, what the server does with them."""

from __future__ import annotations

import getpass
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from test_pg_support import (
    Cluster,
    eventually,
    kill_postmaster,
    member_yaml,
    new_cluster,
    requires_pg,
    sync_member_slots,
    upstream,
)

from pgha.config import Config, parse_config
from pgha.core.actions import StopMode
from pgha.pg.dynconf import DynamicConfigApplier
from pgha.pg.from_config import pg_settings
from pgha.pg.postgres import Postgres
from pgha.pg.rewind import crash_recover

pytestmark = [pytest.mark.integration, requires_pg, pytest.mark.timeout(120)]

OS_USER = getpass.getuser()
HBA = ["local all alice peer map=ops",
       "local all all scram-sha-256",
       "host all all 127.0.0.1/32 scram-sha-256",
       "host replication replicator 127.0.0.1/32 scram-sha-256"]
MAPPINGS = "SELECT map_name, sys_name, pg_username FROM pg_ident_file_mappings ORDER BY line_number"


def raw_config(cluster: Cluster, name: str, **pg: Any) -> dict[str, Any]:
    return member_yaml(cluster.base / name, "files", name, **pg)


async def start_primary(cluster: Cluster, config: Config) -> Postgres:
    pg = Postgres(pg_settings(config, config.bootstrap.dcs))
    cluster.nodes.append(pg)
    assert await pg.initdb()
    assert await pg.start("primary", None)
    await pg.create_roles()
    return pg


def dcs(**pg: Any) -> dict[str, Any]:
    return {"ttl": 30, "postgresql": {"parameters": {"max_wal_senders": 10}, **pg}}


async def peer_login(pg: Postgres, user: str) -> bool:
    """Whether ``user`` gets in over the unix socket by ``peer`` (as this OS user)."""
    try:
        conn = await asyncpg.connect(host=str(pg.settings.socket_dir), port=pg.settings.port,
                                     user=user, database="postgres", timeout=5)
    except (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError):
        return False
    await conn.close()
    return True


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with new_cluster() as c:
        yield c


async def test_pg_ident_written_reloaded_and_local_wins(cluster: Cluster) -> None:
    raw = raw_config(cluster, "a", pg_hba=HBA)
    config = parse_config(raw, env={})
    pg = await start_primary(cluster, config)
    await pg.execute("CREATE ROLE alice LOGIN")
    ident = pg.settings.data_dir / "pg_ident.conf"
    applier = DynamicConfigApplier(pg, config)
    await applier.apply(dcs())
    assert not await peer_login(pg, "alice")  # no mapping yet: peer refuses
    assert await pg.execute(MAPPINGS) == []

    first = await applier.apply(dcs(pg_ident=[f"ops {OS_USER} alice"]))
    assert first.reloaded and first.files == ("pg_ident.conf",)
    assert ident.read_text().splitlines()[1:] == [f"ops {OS_USER} alice"]
    assert [tuple(r) for r in await pg.execute(MAPPINGS)] == [("ops", OS_USER, "alice")]
    assert await peer_login(pg, "alice")  # the reloaded server uses the mapping

    second = await applier.apply(dcs(pg_ident=["ops nobody alice"]))
    assert second.reloaded and second.files == ("pg_ident.conf",)
    assert [tuple(r) for r in await pg.execute(MAPPINGS)] == [("ops", "nobody", "alice")]
    assert not await peer_login(pg, "alice")

    # the local YAML's lines win over the dynamic ones
    raw["postgresql"]["pg_ident"] = [f"ops {OS_USER} alice", "ops /^x(.*)$ \\1"]
    applier.set_local_config(parse_config(raw, env={}))
    local = await applier.apply(dcs(pg_ident=["ops nobody alice"]))
    assert local.reloaded and local.files == ("pg_ident.conf",)
    assert [tuple(r) for r in await pg.execute(MAPPINGS)] == [
        ("ops", OS_USER, "alice"), ("ops", "/^x(.*)$", "\\1")]
    assert await peer_login(pg, "alice")

    # a line PostgreSQL refuses: the previous list is written back, the error reported
    raw["postgresql"]["pg_ident"] = [f"ops {OS_USER} alice", "broken"]
    applier.set_local_config(parse_config(raw, env={}))
    bad = await applier.apply(dcs(pg_ident=["ops nobody alice"]))
    # (line 3 of the file: pgha's header is line 1)
    assert bad.state.ident_rejected == ("line 3: missing entry at end of line",)
    assert "broken" not in ident.read_text()
    assert await pg.execute("SELECT * FROM pg_ident_file_mappings WHERE error IS NOT NULL") \
        == []
    assert await peer_login(pg, "alice")


async def test_ident_file_set_leaves_pg_ident_alone(cluster: Cluster) -> None:
    own = cluster.base / "ident.conf"
    own.write_text(f"ops {OS_USER} alice\n")
    raw = raw_config(cluster, "b", pg_hba=HBA, pg_ident=["ops nobody alice"])
    raw["postgresql"]["parameters"]["ident_file"] = str(own)
    pg = await start_primary(cluster, parse_config(raw, env={}))
    await pg.execute("CREATE ROLE alice LOGIN")
    assert "nobody" not in (pg.settings.data_dir / "pg_ident.conf").read_text()
    assert own.read_text() == f"ops {OS_USER} alice\n"
    assert await peer_login(pg, "alice")


async def test_custom_conf_in_effect_and_untouched(cluster: Cluster) -> None:
    base = cluster.base / "etc" / "custom.conf"
    base.parent.mkdir()
    text = "# maintained by the operator\nwork_mem = '3MB'\ndefault_statistics_target = 321\n"
    base.write_text(text)
    mtime = base.stat().st_mtime_ns
    config = parse_config(raw_config(cluster, "c", custom_conf=str(base)), env={})
    pg = await start_primary(cluster, config)
    data = pg.settings.data_dir
    assert [r[0] for r in await pg.execute("SHOW work_mem")] == ["3MB"]
    assert [r[0] for r in await pg.execute("SHOW default_statistics_target")] == ["321"]
    assert not (data / "postgresql.base.conf").exists()
    assert f"include '{base}'" in (data / "postgresql.conf").read_text()

    # a dynamic parameter wins over the custom file; the file is still never written
    applier = DynamicConfigApplier(pg, config)
    await applier.apply(dcs())
    changed = dcs()
    changed["postgresql"]["parameters"]["work_mem"] = "5MB"
    result = await applier.apply(changed)
    assert result.reloaded and not result.state.pending_restart
    assert [r[0] for r in await pg.execute("SHOW work_mem")] == ["5MB"]
    assert [r[0] for r in await pg.execute("SHOW default_statistics_target")] == ["321"]
    assert base.read_text() == text and base.stat().st_mtime_ns == mtime


async def show(pg: Postgres, name: str) -> str:
    return str((await pg.execute(f"SHOW {name}"))[0][0])


async def test_config_dir_holds_the_files_and_the_cluster_runs(cluster: Cluster) -> None:
    etc_a, etc_b = cluster.base / "etc" / "a", cluster.base / "etc" / "b"
    raw = raw_config(cluster, "a", config_dir=str(etc_a), pg_ident=[f"ops {OS_USER} alice"])
    config = parse_config(raw, env={})
    pg = await start_primary(cluster, config)
    data = pg.settings.data_dir
    assert await show(pg, "config_file") == str(etc_a / "postgresql.conf")
    assert await show(pg, "hba_file") == str(etc_a / "pg_hba.conf")
    assert await show(pg, "ident_file") == str(etc_a / "pg_ident.conf")
    assert await show(pg, "data_directory") == str(data)
    assert {p.name for p in etc_a.iterdir()} == {
        "postgresql.conf", "postgresql.base.conf", "pg_hba.conf", "pg_ident.conf"}
    assert "max_wal_size" in (etc_a / "postgresql.base.conf").read_text()  # initdb's, moved
    assert not (data / "postgresql.conf").exists() and not (data / "postgresql.base.conf").exists()
    assert [tuple(r) for r in await pg.execute(MAPPINGS)] == [("ops", OS_USER, "alice")]

    # a dynamic change is written to config_dir and reloaded
    applier = DynamicConfigApplier(pg, config)
    await applier.apply(dcs())
    changed = dcs()
    changed["postgresql"]["parameters"]["work_mem"] = "6MB"
    result = await applier.apply(changed)
    assert result.reloaded and result.files == ("postgresql.conf",)
    assert await show(pg, "work_mem") == "6MB"
    assert "work_mem = '6MB'" in (etc_a / "postgresql.conf").read_text()

    # stop and start again; a replica cloned with its own config_dir streams from it
    assert await pg.stop(StopMode.FAST)
    assert await pg.start("primary", None)
    replica_cfg = parse_config(raw_config(cluster, "b", config_dir=str(etc_b)), env={})
    replica = Postgres(pg_settings(replica_cfg, replica_cfg.bootstrap.dcs))
    cluster.nodes.append(replica)
    assert await sync_member_slots(pg, {"b"}) == {}
    assert await replica.clone(upstream(pg))
    assert await replica.start("replica", upstream(pg))
    assert await show(replica, "config_file") == str(etc_b / "postgresql.conf")
    assert "primary_slot_name = 'b'" in (etc_b / "postgresql.conf").read_text()
    assert not (replica.settings.data_dir / "postgresql.conf").exists()
    await pg.execute("CREATE TABLE cd (v int)")
    await pg.execute("INSERT INTO cd VALUES (42)")

    async def replicated() -> bool:
        try:
            return [r[0] for r in await replica.execute("SELECT v FROM cd")] == [42]
        except Exception:
            return False

    await eventually(replicated, 30, "row on the replica")

    # single-user crash recovery of the killed primary reads the configuration there too
    await replica.stop(StopMode.FAST)
    await kill_postmaster(pg)
    assert await crash_recover(pg.settings) is True
    assert await pg.start("primary", None)
    assert [r[0] for r in await pg.execute("SELECT v FROM cd")] == [42]
