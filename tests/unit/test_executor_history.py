"""The ``history`` entry a promotion records names the timeline that really ended (found by the
chaos campaign, Consul #84): a replica whose WAL receiver was down reported pg_control's older
timeline, the entry for that older timeline already existed, nothing was written, and a former
primary that had run past the real switch point was never told it diverged."""

from __future__ import annotations

from tests.support.agent_stubs import NullSink, OpenLease, StillWorld
from tests.support.fake_pg import FakePostgres, extend

from pgha.agent.executor import Executor
from pgha.core.actions import Promote
from pgha.core.model import DataState, HistoryEntry, PgRole
from pgha.dcs.memory import MemoryBackend, MemoryStore
from pgha.dcs.store import ClusterStore

SWITCH_53 = 0x67722F8  # where timeline 53 ended (already in the DCS history)
SWITCH_54 = 0x6884948  # how far the replica replayed timeline 54 before its primary died


def replica_on_54(world: StillWorld, reported: int | None) -> FakePostgres:
    pg = FakePostgres("pg1", world, data=DataState.VALID, running=True, role=PgRole.REPLICA,
                      timeline=54, sysid="7", history=((53, SWITCH_53),), known_tli=54,
                      segments=extend(((53, SWITCH_53),), 54, SWITCH_54),
                      stale_timeline=reported)
    world.pgs["pg1"] = pg
    return pg


async def promote_and_read_history(reported: int | None) -> tuple[HistoryEntry, ...]:
    world = StillWorld()
    pg = replica_on_54(world, reported)
    kv = MemoryStore(MemoryBackend(clock=world.now), ttl=10.0, timeout=2.0)
    async with kv:
        store = ClusterStore(kv, "/service/", "demo", "pg1")
        assert await store.append_history(HistoryEntry(53, SWITCH_53, "earlier promotion"))
        executor = Executor(pg, store, lease=OpenLease(), status=NullSink(), bootstrap_config={},
                            post_bootstrap=None, pg_ctl_timeout=5, dcs_timeout=1)
        assert await executor.run([Promote()])
        assert pg.role is PgRole.PRIMARY and pg.timeline == 55
        return await store.read_history()


async def test_promotion_records_the_timeline_its_history_file_says_ended() -> None:
    history = await promote_and_read_history(reported=53)  # pg_control's stale timeline
    assert [(e.timeline, e.lsn) for e in history] == [(53, SWITCH_53), (54, SWITCH_54)]
    assert history[-1].new_leader == "pg1"


async def test_promotion_observed_with_its_own_timeline_records_the_same_entry() -> None:
    history = await promote_and_read_history(reported=None)
    assert [(e.timeline, e.lsn) for e in history] == [(53, SWITCH_53), (54, SWITCH_54)]
