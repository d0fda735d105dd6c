"""Promotion, divergence detection and rejoin (pg_rewind / re-clone) with real PostgreSQL 15."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator

import pytest
from test_pg_support import (
    Cluster,
    insert,
    kill_postmaster,
    make_primary,
    make_replica,
    new_cluster,
    requires_pg,
    rows,
    sync_member_slots,
    upstream,
    wait_rows,
)

from pgha.core.actions import StopMode
from pgha.core.model import ControlState, PgRole
from pgha.core.timeline import diverged
from pgha.pg import controldata
from pgha.pg.postgres import Postgres
from pgha.pg.settings import PgUser

pytestmark = [pytest.mark.integration, requires_pg, pytest.mark.timeout(120)]


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with new_cluster() as c:
        yield c


async def test_clean_switchover_old_primary_follows_without_rewind(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pgha.pg")
    a = await make_primary(cluster, "a")
    b = await make_replica(cluster, a, "b", also_keep=frozenset({"c", "d"}))
    c = await make_replica(cluster, a, "c", also_keep=frozenset({"b", "d"}))
    d = await make_replica(cluster, a, "d", also_keep=frozenset({"b", "c"}))
    await insert(a, "common")
    for replica in (b, c, d):
        await wait_rows(replica, {"common"})
    assert await d.stop(StopMode.FAST)  # a stopped replica, behind the others
    await insert(a, "common-2")
    await wait_rows(b, {"common", "common-2"})

    # old primary stopped fast BEFORE the promotion: its shutdown checkpoint reached b
    assert await a.stop(StopMode.FAST)
    assert await b.promote()
    b_state = await b.observe()
    assert b_state.role == PgRole.PRIMARY and b_state.timeline == 2
    assert b_state.upstream is None
    assert await sync_member_slots(b, {"a", "c", "d", "e"}) == {}
    await insert(b, "after-promote")

    # the rule, checked on real data: checkpoint start < switch point -> can follow
    history = await a.timeline_history(upstream(b))
    assert [tl for tl, _ in history] == [1]
    position = controldata.checkpoint_position(await a.controldata())
    assert position is not None and position[0] == 1
    assert position[1] < history[0][1]
    assert diverged(position[0], position[1], 2, history) is False

    # another replica simply follows the new primary
    assert await c.follow(upstream(b))
    await wait_rows(c, {"common", "after-promote"})
    assert (await c.observe()).upstream == "b"

    marker = a.settings.data_dir / "pgha-test-marker"
    marker.write_text("kept unless wiped")
    assert await a.rejoin(upstream(b), use_pg_rewind=False)
    assert marker.exists(), "rejoin re-cloned data that could follow"
    assert "can follow" in caplog.text
    await wait_rows(a, {"common", "after-promote"})
    state = await a.observe()
    assert state.role == PgRole.REPLICA and state.upstream == "b"

    await insert(b, "later")
    await wait_rows(a, {"common", "after-promote", "later"})
    assert (await a.observe()).timeline == 2

    # the stopped replica is behind the switch point: it follows as is
    assert (await d.observe()).control_state == ControlState.SHUT_DOWN_IN_RECOVERY
    (d.settings.data_dir / "pgha-test-marker").write_text("kept unless wiped")
    assert await d.rejoin(upstream(b), use_pg_rewind=False)
    assert (d.settings.data_dir / "pgha-test-marker").exists()
    await wait_rows(d, {"common", "common-2", "after-promote", "later"})

    # an empty member is simply cloned
    e = cluster.node("e")
    assert await e.rejoin(upstream(b), use_pg_rewind=True)
    await wait_rows(e, {"common", "after-promote", "later"})
    assert (await e.observe()).upstream == "b"


async def _diverge(cluster: Cluster) -> tuple[Postgres, Postgres]:
    """a (primary) and b (replica); b is promoted while a keeps writing, then a is killed."""
    a = await make_primary(cluster, "a")
    b = await make_replica(cluster, a, "b")
    await insert(a, "common")
    await wait_rows(b, {"common"})
    assert await b.promote()
    await insert(b, "new-primary")
    await insert(a, "lost-1", "lost-2")  # split brain: never reaches b
    await a.execute("CHECKPOINT")
    await insert(a, "lost-3")
    await kill_postmaster(a)
    assert await sync_member_slots(b, {"a"}) == {}
    return a, b


@pytest.mark.parametrize("mode", ["rewind", "reclone", "rewind-fails-reclone"])
async def test_diverged_old_primary_is_rewound_or_recloned(
        cluster: Cluster, caplog: pytest.LogCaptureFixture, mode: str) -> None:
    caplog.set_level(logging.INFO, logger="pgha.pg")
    a, b = await _diverge(cluster)
    assert (await a.observe()).control_state == ControlState.IN_PRODUCTION
    if mode == "rewind-fails-reclone":
        a.settings = dataclasses.replace(a.settings, rewind=PgUser("rewinder", "wrong"),
                                         remove_data_directory_on_rewind_failure=True)
    if mode == "reclone":
        a.settings = dataclasses.replace(a.settings,
                                         remove_data_directory_on_diverged_timelines=True)

    assert await a.rejoin(upstream(b), use_pg_rewind=(mode != "reclone"))

    assert "-> diverged" in caplog.text
    assert "single-user crash recovery" in caplog.text
    if mode == "rewind":
        assert "pg_rewind from b done" in caplog.text
        assert "cloning from b" not in caplog.text
    else:
        assert "cloning from b" in caplog.text
    if mode == "rewind-fails-reclone":
        assert "pg_rewind from b failed" in caplog.text

    await insert(b, "after-rejoin")
    await wait_rows(a, {"common", "new-primary", "after-rejoin"})
    assert not {"lost-1", "lost-2", "lost-3"} & await rows(a)
    state = await a.observe()
    assert state.role == PgRole.REPLICA and state.timeline == 2 and state.upstream == "b"


async def test_rewind_failure_without_permission_to_wipe_keeps_data(cluster: Cluster) -> None:
    a, b = await _diverge(cluster)
    a.settings = dataclasses.replace(a.settings, rewind=PgUser("rewinder", "wrong"))
    assert not await a.rejoin(upstream(b), use_pg_rewind=True)
    assert not a.is_running()
    assert (await a.observe()).control_state == ControlState.SHUT_DOWN  # crash-recovered only


async def test_diverged_without_rewind_or_consent_stays_stopped(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    a, b = await _diverge(cluster)
    marker = a.settings.data_dir / "pgha-test-marker"
    marker.write_text("kept unless wiped")
    assert not await a.rejoin(upstream(b), use_pg_rewind=False)
    assert not a.is_running() and marker.exists()
    assert "remove_data_directory_on_diverged_timelines" in caplog.text


async def test_rejoin_refuses_to_wipe_when_leader_unreachable(cluster: Cluster) -> None:
    a, b = await _diverge(cluster)
    assert await b.stop(StopMode.FAST)
    assert not await a.rejoin(upstream(b), use_pg_rewind=False)
    assert (a.settings.data_dir / "PG_VERSION").exists()
