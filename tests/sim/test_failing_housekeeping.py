"""A leader whose replication-slot housekeeping keeps failing (``max_replication_slots``
exhausted, say) still publishes its WAL position every cycle: ``maximum_lag_on_failover`` must
never be judged against a stale ``status`` optime (issue 10, B3)."""

from __future__ import annotations

import json

from pgha.core.actions import SyncSlots
from pgha.core.decision import Reason
from pgha.pg.errors import PgError
from tests.sim.agent_parts import NAMESPACE, SCOPE
from tests.sim.scenario import run_commands
from tests.support.fake_pg import FakePostgres


class SlotsExhausted(FakePostgres):
    """Creating replication slots fails, as with every slot of max_replication_slots taken."""

    async def sync_slots(self, plan: SyncSlots) -> dict[str, str]:
        if plan.create:
            raise PgError("all replication slots are in use (max_replication_slots)")
        return await super().sync_slots(plan)


def test_failing_slot_housekeeping_does_not_stop_the_position_from_being_published() -> None:
    scenario = run_commands("""
        sim n=3 ttl=10 loop_wait=2 seed=3 write_rate=100kB
        start m0
        run 5s
        start m1 m2
        run 60s
    """, fake=SlotsExhausted)
    sim = scenario.sim_or_default()
    leader = sim.leader
    assert leader is not None
    primary = sim.members[leader].pg
    raw = sim.backend.dump().get(f"{NAMESPACE}/{SCOPE}/status")
    assert raw is not None
    optime = json.loads(raw)["optime"]
    # published within the last loop (write_rate is at most 100 kB/s, loop_wait 2 s)
    assert primary.wal - optime <= 2 * 2 * 100_000, (primary.wal, optime)
    assert any(d.reason is Reason.LEADER_HEALTHY for _, _, d in sim.decisions)
