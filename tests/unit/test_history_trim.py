"""``max_timelines_history``: the leader keeps the last N entries of the DCS ``history`` key
when it records a promotion (0: all); the rule is :func:`pgha.core.timeline.trim_history`."""

from __future__ import annotations

import pytest
from tests.support.agent_stubs import NullSink, OpenLease, StillWorld
from tests.support.fake_pg import FakePostgres, extend

from pgha.agent.executor import Executor
from pgha.core.actions import Promote
from pgha.core.model import DataState, HaSettings, HistoryEntry, PgRole
from pgha.core.timeline import trim_history
from pgha.dcs.memory import MemoryBackend, MemoryStore
from pgha.dcs.store import ClusterStore


@pytest.mark.parametrize(("keep", "expected"), [
    (0, [1, 2, 3, 4]),   # 0: keep all
    (-1, [1, 2, 3, 4]),  # never below 0 in practice: also all
    (1, [4]),
    (3, [2, 3, 4]),
    (4, [1, 2, 3, 4]),
    (10, [1, 2, 3, 4]),  # more than there are: all
])
def test_the_last_entries_are_kept(keep: int, expected: list[int]) -> None:
    assert trim_history([1, 2, 3, 4], keep) == expected
    assert trim_history([], keep) == []


def test_the_setting_is_read_from_the_dynamic_configuration() -> None:
    assert HaSettings().max_timelines_history == 0
    assert HaSettings.from_config({"max_timelines_history": 5}).max_timelines_history == 5
    assert HaSettings.from_config({"max_timelines_history": "7"}).max_timelines_history == 7
    for bad in (-1, "many", True, 2.5, None):  # lenient: the default, never an error
        assert HaSettings.from_config({"max_timelines_history": bad}).max_timelines_history == 0


async def history_after_promotion(earlier: int, max_history: int) -> list[int]:
    """Timelines in the DCS history after pg1, a replica on timeline ``earlier + 1`` with
    ``earlier`` entries recorded, is promoted with ``max_history``."""
    world = StillWorld()
    lineage = tuple((tl, tl * 0x1000000) for tl in range(1, earlier + 1))
    pg = FakePostgres("pg1", world, data=DataState.VALID, running=True, role=PgRole.REPLICA,
                      timeline=earlier + 1, sysid="7", history=lineage, known_tli=earlier + 1,
                      segments=extend(lineage, earlier + 1, (earlier + 1) * 0x1000000 + 0x100))
    world.pgs["pg1"] = pg
    kv = MemoryStore(MemoryBackend(clock=world.now), ttl=10.0, timeout=2.0)
    async with kv:
        store = ClusterStore(kv, "/service/", "demo", "pg1")
        for tl, lsn in lineage:
            assert await store.append_history(HistoryEntry(tl, lsn, "earlier promotion"))
        executor = Executor(pg, store, lease=OpenLease(), status=NullSink(), bootstrap_config={},
                            post_bootstrap=None, pg_ctl_timeout=5, dcs_timeout=1,
                            max_history=lambda: max_history)
        assert await executor.run([Promote()])
        assert pg.timeline == earlier + 2
        return [e.timeline for e in await store.read_history()]


async def test_a_promotion_trims_the_history_to_the_setting() -> None:
    assert await history_after_promotion(4, 0) == [1, 2, 3, 4, 5]
    assert await history_after_promotion(4, 2) == [4, 5]
    assert await history_after_promotion(4, 1) == [5]
    assert await history_after_promotion(2, 10) == [1, 2, 3]


async def test_the_store_trims_with_the_same_rule() -> None:
    kv = MemoryStore(MemoryBackend(), ttl=10.0, timeout=2.0)
    async with kv:
        store = ClusterStore(kv, "/service/", "demo", "pg1")
        for tl in (1, 2, 3):
            assert await store.append_history(HistoryEntry(tl, tl * 10), max_entries=0)
        assert [e.timeline for e in await store.read_history()] == [1, 2, 3]
        assert await store.append_history(HistoryEntry(4, 40), max_entries=9)
        assert [e.timeline for e in await store.read_history()] == [1, 2, 3, 4]
        assert await store.append_history(HistoryEntry(5, 50), max_entries=2)
        assert [e.timeline for e in await store.read_history()] == [4, 5]
        # a timeline already recorded writes nothing, trimmed or not
        assert await store.append_history(HistoryEntry(5, 50), max_entries=1)
        assert [e.timeline for e in await store.read_history()] == [4, 5]
