"""Replication slots with real PostgreSQL 15 (run as user postgres): the slot plan's drops,
creations and advances on a primary and on a standby, logical slots copied to a replica and
usable after its promotion, copies whose WAL is gone, and the parameters slots need."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import stat
from collections.abc import AsyncIterator
from typing import Any

import pytest
from test_pg_dynconf_live import dcs, primary, show
from test_pg_support import (
    PARAMETERS,
    Cluster,
    eventually,
    insert,
    make_primary,
    make_replica,
    new_cluster,
    requires_pg,
    sync_member_slots,
    upstream,
    wait_rows,
)

from pgha.core.actions import SlotSpec, StopMode, SyncSlots
from pgha.core.model import ObservedSlot, PgRole
from pgha.pg.dynconf import DynamicConfigApplier
from pgha.pg.postgres import Postgres
from pgha.pg.probe import Connection, close_quietly, connect_local
from pgha.pg.process import postmaster_pid
from pgha.pg.slotcopy import state_restart_lsn

pytestmark = [pytest.mark.integration, requires_pg, pytest.mark.timeout(180)]

LOGICAL: dict[str, Any] = {"wal_level": "logical", "hot_standby_feedback": True,
                           "max_replication_slots": 14}
SPEC = SlotSpec("ld", "logical", "app", "test_decoding")


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with new_cluster() as c:
        yield c


async def observed(pg: Postgres) -> dict[str, ObservedSlot]:
    state = await pg.observe()
    assert state.slots is not None, "slots not observed"
    return {s.name: s for s in state.slots}


async def current_lsn(pg: Postgres) -> int:
    return int((await pg.execute("SELECT pg_current_wal_lsn() - '0/0'"))[0][0])


async def replayed(pg: Postgres) -> int:
    return int((await pg.execute("SELECT pg_last_wal_replay_lsn() - '0/0'"))[0][0])


async def wait_replayed(pg: Postgres, lsn: int) -> None:
    async def done() -> bool:
        return await replayed(pg) >= lsn

    await eventually(done, what=f"{pg.settings.name} to replay {lsn}")


@contextlib.asynccontextmanager
async def app(pg: Postgres) -> AsyncIterator[Connection]:
    conn = await connect_local(pg.settings, database="app")
    try:
        yield conn
    finally:
        await close_quietly(conn)


async def app_insert(pg: Postgres, *notes: str) -> None:
    async with app(pg) as conn:
        for note in notes:
            await conn.execute("INSERT INTO t (note) VALUES ($1)", note)


async def consume(pg: Postgres) -> str:
    """A consumer of slot ``ld``: read (and confirm) every pending change."""
    async with app(pg) as conn:
        rows = await conn.fetch("SELECT data FROM pg_logical_slot_get_changes('ld', NULL, NULL)")
    return "\n".join(str(r["data"]) for r in rows)


async def logical_pair(cluster: Cluster, **replica_params: Any) -> tuple[Postgres, Postgres]:
    """Primary a (with database app, table t) and its streaming replica b, both with the
    parameters logical slots need (``slot_parameters``)."""
    a = cluster.node("a")
    a.settings = dataclasses.replace(a.settings, slot_parameters=LOGICAL)
    assert await a.initdb()
    assert await a.start("primary", None)
    await a.create_roles()
    await a.execute("CREATE DATABASE app")
    async with app(a) as conn:
        await conn.execute("CREATE TABLE t (id serial PRIMARY KEY, note text)")
    b = cluster.node("b")
    b.settings = dataclasses.replace(b.settings, slot_parameters=LOGICAL,
                                     parameters={**PARAMETERS, **replica_params})
    assert await sync_member_slots(a, {"b"}) == {}
    assert await b.clone(upstream(a))
    assert await b.start("replica", upstream(a))
    return a, b


async def test_physical_slots_on_primary_and_standby(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pgha.pg")
    a = await make_primary(cluster, "a")
    b = await make_replica(cluster, a, "b")
    await a.execute("SELECT pg_create_physical_replication_slot('stale')")

    async def b_streams() -> bool:
        return (await observed(a))["b"].active

    await eventually(b_streams, what="b streaming through its slot")
    # drops first, each only while inactive; then creations (WAL reserved at once)
    result = await a.sync_slots(SyncSlots(create=(SlotSpec("perm"),), drop=("stale", "b")))
    assert result == {"b": "not dropped: it is in use"}
    slots = await observed(a)
    assert set(slots) == {"b", "perm"}
    perm = slots["perm"]
    assert perm.position is not None
    assert perm == ObservedSlot("perm", "physical", None, None, False, perm.position, False)

    # advanced on the primary, never backwards
    await insert(a, "one")
    target = await current_lsn(a)
    assert await a.sync_slots(SyncSlots(advance=(("perm", target),))) == {}
    assert (await observed(a))["perm"].position == target
    assert await a.sync_slots(SyncSlots(advance=(("perm", target - 100),))) == {}
    assert (await observed(a))["perm"].position == target

    # on the standby: physical slots reserve WAL at once, advance up to what was replayed
    assert await b.sync_slots(SyncSlots(create=(SlotSpec("a"), SlotSpec("perm")))) == {}
    on_b = await observed(b)
    assert set(on_b) == {"a", "perm"}
    before = on_b["perm"].position
    assert before is not None and on_b["a"].position is not None
    await insert(a, "two")
    await wait_rows(b, {"one", "two"})
    far = await current_lsn(a) + 64 * 1024 * 1024
    assert await b.sync_slots(SyncSlots(advance=(("perm", far),))) == {}
    moved = (await observed(b))["perm"].position
    assert moved is not None and before < moved <= await replayed(b)
    assert await b.sync_slots(SyncSlots(drop=("a",))) == {}
    assert set(await observed(b)) == {"perm"}

    # a logical slot needs wal_level logical, and says so
    lg = SlotSpec("lg", "logical", "postgres", "test_decoding")
    assert "wal_level is not logical" in (await a.sync_slots(SyncSlots(create=(lg,))))["lg"]

    # bad names touch nothing; a persistent problem is warned about once
    bad = SyncSlots(create=(SlotSpec("Bad-Name"),), drop=("x'; DROP TABLE t; --",),
                    advance=(("missing", target),))
    for _ in range(3):
        problems = await a.sync_slots(bad)
        assert set(problems) == {"Bad-Name", "x'; DROP TABLE t; --", "missing"}
        assert problems["missing"] == "cannot be advanced: it does not exist"
    warned = [r for r in caplog.records
              if r.levelno == logging.WARNING and "slot missing:" in r.getMessage()]
    assert len(warned) == 1
    assert set(await observed(a)) == {"b", "perm"}

    assert await b.stop(StopMode.FAST)
    assert (await b.observe()).slots is None


async def test_logical_slot_copied_to_replica_advanced_and_usable_after_promotion(
        cluster: Cluster) -> None:
    a, b = await logical_pair(cluster)
    for name, value in (("hot_standby_feedback", "on"), ("wal_level", "logical"),
                        ("max_replication_slots", "14")):
        assert str((await b.execute(f"SHOW {name}"))[0][0]) == value

    assert await a.sync_slots(SyncSlots(create=(SPEC,))) == {}
    made = (await observed(a))["ld"]
    assert (made.type, made.database, made.plugin, made.active) == (
        "logical", "app", "test_decoding", False)
    assert "standby" in (await b.sync_slots(SyncSlots(create=(SPEC,))))["ld"]

    await app_insert(a, "before-copy")
    assert "before-copy" in await consume(a)

    # a slot that does not match the plan's spec is not copied: nothing is restarted
    pid = postmaster_pid(b.settings.data_dir)
    wrong = dataclasses.replace(SPEC, plugin="pgoutput")
    assert not await b.copy_logical_slots(upstream(a), (wrong,))
    assert postmaster_pid(b.settings.data_dir) == pid

    assert await b.copy_logical_slots(upstream(a), (SPEC,))
    assert postmaster_pid(b.settings.data_dir) != pid
    state = await b.observe()
    assert state.role == PgRole.REPLICA and state.upstream == "a"
    copy = {s.name: s for s in state.slots or ()}["ld"]
    assert (copy.type, copy.database, copy.plugin) == ("logical", "app", "test_decoding")
    slot_dir = b.settings.data_dir / "pg_replslot" / "ld"
    assert stat.S_IMODE(os.stat(slot_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(slot_dir / "state").st_mode) == 0o600

    # the consumer reads on; the copy follows the primary's confirmed position
    await app_insert(a, "consumed")
    assert "consumed" in await consume(a)
    confirmed = (await observed(a))["ld"].position
    assert confirmed is not None
    await wait_replayed(b, confirmed)
    assert await b.sync_slots(SyncSlots(advance=(("ld", confirmed),))) == {}
    assert (await observed(b))["ld"].position == confirmed

    # committed after the consumer's last confirmed position, then the primary is lost
    await app_insert(a, "after-1", "after-2")
    await wait_replayed(b, await current_lsn(a))
    assert await a.stop(StopMode.IMMEDIATE)
    assert await b.promote()
    changes = await consume(b)
    assert "'after-1'" in changes and "'after-2'" in changes, changes
    assert "'consumed'" not in changes and "'before-copy'" not in changes, changes


async def test_copies_whose_wal_is_gone_are_replaced(cluster: Cluster) -> None:
    # the replica keeps no WAL for its slots beyond 1MB: its copies become lost
    a, b = await logical_pair(cluster, wal_keep_size=0, max_slot_wal_keep_size="1MB")
    assert await a.sync_slots(SyncSlots(create=(SPEC,))) == {}
    await a.checkpoint()
    state = (await a.execute(
        "SELECT pg_read_binary_file('pg_replslot/ld/state') AS s, "
        "restart_lsn - '0/0' AS r FROM pg_replication_slots WHERE slot_name = 'ld'"))[0]
    assert state_restart_lsn(bytes(state["s"])) == int(state["r"])
    await wait_replayed(b, await current_lsn(a))
    assert await b.copy_logical_slots(upstream(a), (SPEC,))
    assert await b.sync_slots(SyncSlots(create=(SlotSpec("ph"),))) == {}

    for i in range(4):
        await app_insert(a, f"filler-{i}")
        await a.execute("SELECT pg_switch_wal()")
    await a.checkpoint()
    await wait_replayed(b, await current_lsn(a))

    async def lost() -> bool:
        await b.checkpoint()  # a restartpoint removes the WAL and invalidates the slots
        slots = await observed(b)
        return slots["ld"].lost and slots["ph"].lost

    await eventually(lost, what="the copies on b to be lost")
    target = await replayed(b)
    result = await b.sync_slots(SyncSlots(advance=(("ph", target), ("ld", target))))
    assert result == {"ph": "recreated: its WAL was removed",
                      "ld": "dropped: its WAL was removed"}
    slots = await observed(b)
    assert set(slots) == {"ph"} and not slots["ph"].lost and slots["ph"].position is not None

    # the primary's slot still needs WAL this replica no longer holds: not copied, no restart
    pid = postmaster_pid(b.settings.data_dir)
    assert not await b.copy_logical_slots(upstream(a), (SPEC,))
    assert postmaster_pid(b.settings.data_dir) == pid
    assert "ld" not in await observed(b)


async def test_slot_parameters_applied_to_a_running_server(cluster: Cluster) -> None:
    pg, config = await primary(cluster)
    applier = DynamicConfigApplier(pg, config)
    await applier.apply(dcs())
    assert await show(pg, "hot_standby_feedback") == "off"

    result = await applier.apply(dcs(), slot_parameters=LOGICAL)
    assert result.reloaded
    assert await show(pg, "hot_standby_feedback") == "on"
    assert {"wal_level", "max_replication_slots"} <= set(result.state.pending_restart_reason)
    assert result.state.pending_restart_reason["wal_level"]["new_value"] == "logical"

    again = await applier.apply(dcs())  # None: the last slot parameters stay
    assert not again.reloaded and again.state.pending_restart
    assert pg.settings.slot_parameters == LOGICAL
    assert await pg.stop(StopMode.FAST)
    assert await pg.start("primary", None)
    assert await show(pg, "wal_level") == "logical"
    assert await show(pg, "max_replication_slots") == "14"
    assert not (await applier.apply(dcs())).state.pending_restart


async def test_nostream_replica_replays_from_the_archive_only(cluster: Cluster) -> None:
    archive = cluster.base / "archive"
    archive.mkdir()
    a = cluster.node("a")
    a.settings = dataclasses.replace(a.settings, parameters={
        **PARAMETERS, "archive_mode": "on", "archive_command": f"cp %p {archive}/%f"})
    assert await a.initdb()
    assert await a.start("primary", None)
    await a.create_roles()
    await a.execute("CREATE TABLE t (id int PRIMARY KEY, note text)")
    b = cluster.node("b")
    b.settings = dataclasses.replace(
        b.settings, nostream=True,
        recovery_conf={"restore_command": f"cp {archive}/%f %p",
                       "primary_conninfo": "host=127.0.0.1 port=1"})  # ignored: pgha's own
    assert await b.clone(upstream(a))
    assert await b.start("replica", upstream(a))
    assert "b" not in await observed(a)  # no slot for a member that never streams
    await insert(a, "archived")
    await a.execute("SELECT pg_switch_wal()")
    await wait_rows(b, {"archived"})
    assert await b.execute("SELECT pid FROM pg_stat_wal_receiver") == []
    assert str((await b.execute("SHOW primary_conninfo"))[0][0]) == ""
    assert (await b.observe()).role == PgRole.REPLICA
