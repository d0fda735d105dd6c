"""Integration tests of the PostgreSQL facade with real PostgreSQL 15 (run as user postgres)."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from test_pg_support import (
    Cluster,
    eventually,
    insert,
    kill_postmaster,
    make_primary,
    make_replica,
    new_cluster,
    requires_pg,
    sync_member_slots,
    upstream,
    wait_rows,
)

from pgha.core.actions import StopMode, slot_name
from pgha.core.model import ControlState, DataState, PgRole
from pgha.pg.conf import HEADER
from pgha.pg.controldata import CHECKPOINT_LSN, SYSID, parse_lsn
from pgha.pg.observation import observation
from pgha.pg.postgres import Postgres
from pgha.pg.probe import local_connection, replication, snapshot
from pgha.pg.slots import read_slots

pytestmark = [pytest.mark.integration, requires_pg, pytest.mark.timeout(120)]


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with new_cluster() as c:
        yield c


async def test_bootstrap_primary(cluster: Cluster) -> None:
    pg = cluster.node("a")
    assert pg.data_state() == DataState.EMPTY
    assert pg.conn_url() == f"postgres://127.0.0.1:{pg.settings.port}/postgres"
    assert (await pg.observe()).data == DataState.EMPTY
    assert await pg.initdb()
    assert pg.data_state() == DataState.VALID
    assert await pg.start("primary", None)
    await pg.create_roles()
    await pg.create_roles()  # idempotent

    data = pg.settings.data_dir
    assert (data / "postgresql.base.conf").exists()
    assert (data / "postgresql.conf").read_text().startswith(HEADER)
    assert stat.S_IMODE(os.stat(pg.settings.pgpass).st_mode) == 0o600

    state = await pg.observe()
    controldata = await pg.controldata()
    assert state.running and state.accepting
    assert state.role == PgRole.PRIMARY
    assert state.sysid == controldata[SYSID]
    assert state.timeline == 1
    assert state.wal_position and state.wal_position > 0
    assert state.control_state == ControlState.IN_PRODUCTION
    assert state.upstream is None

    status = await pg.status()
    assert status["server_version"] >= 150000
    assert status["timeline"] == 1
    assert status["database_system_identifier"] == controldata[SYSID]
    assert isinstance(status["xlog"]["location"], int)
    assert status["postmaster_start_time"]
    assert status["replication"] == []

    roles = {r["rolname"]: r for r in await pg.execute(
        "SELECT rolname, rolreplication, rolcanlogin, rolcreaterole, rolcreatedb FROM pg_roles")}
    assert roles["replicator"]["rolreplication"] and roles["replicator"]["rolcanlogin"]
    assert roles["rewinder"]["rolcanlogin"] and not roles["rewinder"]["rolreplication"]
    assert roles["admin"]["rolcreaterole"] and roles["admin"]["rolcreatedb"]
    granted = await pg.execute(
        "SELECT has_function_privilege('rewinder', "
        "'pg_read_binary_file(text, bigint, bigint, boolean)', 'execute') AS ok")
    assert granted[0]["ok"]

    assert await pg.stop(StopMode.FAST)
    assert not pg.is_running()
    stopped = await pg.observe()
    assert not stopped.running and stopped.role is None
    assert stopped.control_state == ControlState.SHUT_DOWN
    assert stopped.timeline == 1
    assert stopped.wal_position == parse_lsn((await pg.controldata())[CHECKPOINT_LSN])
    assert stopped.sysid == state.sysid
    assert await pg.stop(StopMode.FAST)  # not running: still True
    assert await pg.start("primary", None)  # restart keeps the base conf and our header
    assert (await pg.observe()).role == PgRole.PRIMARY


async def test_replica_streams_through_its_slot(cluster: Cluster) -> None:
    primary = await make_primary(cluster, "a")
    await primary.execute("SELECT pg_create_physical_replication_slot('stale_member')")
    replica = await make_replica(cluster, primary, "replica-1")
    data = replica.settings.data_dir
    assert (data / "standby.signal").exists()
    assert "primary_slot_name = 'replica_1'" in (data / "postgresql.conf").read_text()

    await insert(primary, "one")
    await wait_rows(replica, {"one"})

    state = await replica.observe()
    assert state.role == PgRole.REPLICA and state.accepting
    assert state.upstream == "a"
    assert state.timeline == 1
    assert state.sysid == (await primary.observe()).sysid
    assert state.control_state == ControlState.IN_ARCHIVE_RECOVERY

    async def streaming() -> bool:
        status = await primary.status()
        return any(r["application_name"] == "replica-1" and r["state"] == "streaming"
                   for r in status["replication"])

    await eventually(streaming, what="replica streaming")
    replica_status = await replica.status()
    assert replica_status["replication_state"] == "streaming"
    assert set(replica_status["xlog"]) == {"received_location", "replayed_location",
                                           "replayed_timestamp", "paused"}

    # the member slot is the one in use; a stale inactive slot is dropped, the active one kept
    assert await sync_member_slots(primary, {"replica-1", "a"}) == {}
    slots = {r["slot_name"]: r["active"] for r in await primary.execute(
        "SELECT slot_name, active FROM pg_replication_slots")}
    assert slots == {slot_name("replica-1"): True}
    await _observation_matches_separate_reads(primary)
    await _observation_matches_separate_reads(replica)

    # follow() the same upstream again: reload, still streaming
    assert await replica.follow(upstream(primary))
    await insert(primary, "two")
    await wait_rows(replica, {"one", "two"})
    assert not await primary.follow(upstream(replica))  # a primary never follows


async def _observation_matches_separate_reads(pg: Postgres) -> None:
    """The one-statement observation holds what the separate status, pg_stat_replication and
    slot queries return: same rows, keys, order and Python types (WAL positions, which may
    move between two reads, compared by type)."""
    def steady(rows: list[dict[str, Any]], moving: str) -> list[dict[str, Any]]:
        assert all(isinstance(r[moving], int | None) for r in rows)
        return [{k: v for k, v in r.items() if k != moving} for r in rows]

    async with local_connection(pg.settings) as conn:
        obs = await observation(conn)
        rows = await replication(conn)
        found = await read_slots(conn)
        snap = await snapshot(conn)
    assert steady(obs.replication, "flush_lsn") == steady(rows, "flush_lsn")
    assert [replace(s, position=None) for s in obs.slots] == \
        [replace(s, position=None) for s in found]
    assert all(isinstance(s.position, int | None) for s in obs.slots)
    assert (obs.snapshot.in_recovery, obs.snapshot.sysid, obs.snapshot.timeline) == \
        (snap.in_recovery, snap.sysid, snap.timeline)
    state = await pg.observe()
    assert state.slots is not None and [s.name for s in state.slots] == [s.name for s in obs.slots]
    status = await pg.status()  # the observation's snapshot, used once
    assert [r["application_name"] for r in status["replication"]] == \
        [r["application_name"] for r in rows]


async def test_wait_postmaster_exit_returns_on_sigkill(cluster: Cluster) -> None:
    pg = await make_primary(cluster, "a")
    waiter = asyncio.create_task(pg.wait_postmaster_exit())
    await asyncio.sleep(0.3)
    assert not waiter.done()
    await kill_postmaster(pg)
    await asyncio.wait_for(waiter, 10)
    assert not pg.is_running()
    await pg.wait_postmaster_exit()  # not running: returns at once
    state = await pg.observe()
    assert not state.running and state.control_state == ControlState.IN_PRODUCTION
    # a stale postmaster.pid (killed postmaster) does not prevent the restart
    assert await pg.start("primary", None)
    assert (await pg.observe()).accepting


async def test_stop_modes_and_crash_recovery(cluster: Cluster) -> None:
    pg = await make_primary(cluster, "a")
    await insert(pg, "before")
    assert await pg.stop(StopMode.IMMEDIATE)
    assert (await pg.observe()).control_state == ControlState.IN_PRODUCTION
    assert await pg.crash_recover()
    assert (await pg.observe()).control_state == ControlState.SHUT_DOWN
    assert await pg.crash_recover()  # already clean: skipped
    assert await pg.start("primary", None)
    assert (await pg.execute("SELECT note FROM t"))[0]["note"] == "before"
    assert await pg.stop(StopMode.FAST)
    assert (await pg.observe()).control_state == ControlState.SHUT_DOWN


async def test_stopped_replica_started_as_primary_gets_new_timeline(cluster: Cluster) -> None:
    primary = await make_primary(cluster, "a")
    replica = await make_replica(cluster, primary, "b")
    await insert(primary, "x")
    await wait_rows(replica, {"x"})
    assert await primary.stop(StopMode.FAST)
    assert await replica.stop(StopMode.FAST)
    assert (await replica.observe()).control_state == ControlState.SHUT_DOWN_IN_RECOVERY
    assert await replica.start("primary", None)
    state = await replica.observe()
    assert state.role == PgRole.PRIMARY and state.timeline == 2


AGENT_SCRIPT = """
import asyncio, sys
from pathlib import PosixPath
from pgha.core.actions import Upstream
from pgha.pg.observation import observation
from pgha.pg.postgres import Postgres
from pgha.pg.probe import local_connection, replication, snapshot
from pgha.pg.slots import read_slots
from pgha.pg.settings import PgSettings, PgUser, ReplicaMethod

async def main() -> None:
    pg = Postgres({settings})
    ok = await pg.start("replica", Upstream({up_name!r}, {up_url!r}))
    print("started" if ok else "failed", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_postmaster_survives_agent_kill_and_is_adopted(cluster: Cluster) -> None:
    primary = await make_primary(cluster, "a")
    replica = cluster.node("b")
    assert await sync_member_slots(primary, {"b"}) == {}
    assert await replica.clone(upstream(primary))
    script = AGENT_SCRIPT.format(settings=repr(replica.settings), up_name="a",
                                 up_url=primary.conn_url())
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE)
    try:
        assert agent.stdout is not None
        line = await asyncio.wait_for(agent.stdout.readline(), 60)
        assert line.strip() == b"started"
    finally:
        agent.kill()
        await agent.wait()
    assert replica.is_running()
    adopted = Postgres(replica.settings)  # a restarted agent
    try:
        state = await adopted.observe()
        assert state.accepting and state.role == PgRole.REPLICA
        assert state.upstream == "a"  # recovered from our postgresql.conf header
        await insert(primary, "seen")
        await wait_rows(adopted, {"seen"})
        assert await adopted.stop(StopMode.FAST)
    finally:
        await adopted.close()
