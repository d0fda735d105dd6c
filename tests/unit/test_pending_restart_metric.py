"""``patroni_pending_restart`` reports the pending restart the agent tracks: what PostgreSQL's
configurator reports reaches the published status, GET /patroni, the member key and the metric
in the same decision cycle (the decision loop with its real components on the memory DCS)."""

from __future__ import annotations

from tests.support.prom import parse
from tests.unit.test_agent_cycle import Member, member  # noqa: F401  # the fixture

from pgha.api.metrics import render_metrics
from pgha.pg.dynconf import PgConfigState

REASON = {"shared_buffers": {"old_value": "128MB", "new_value": "256MB"}}


def pending_gauge(text: str) -> float:
    return parse(text).value("patroni_pending_restart")


async def test_pending_restart_reaches_the_metric(member: Member) -> None:  # noqa: F811
    assert await member.lease.confirm()
    assert await member.cycle.run_once()
    assert pending_gauge(render_metrics(member.publisher.status, None)) == 0
    member.cycle.s.configurator.state = PgConfigState(  # type: ignore[misc]
        pending_restart=True, pending_restart_reason=REASON)
    assert await member.cycle.run_once()
    status = member.publisher.status
    assert pending_gauge(render_metrics(status, None)) == 1
    assert status.to_patroni_json()["pending_restart"] is True
    assert status.to_patroni_json()["pending_restart_reason"] == REASON
    assert (await member.store.load()).members["m0"].pending_restart
    member.cycle.s.configurator.state = PgConfigState()  # type: ignore[misc]
    assert await member.cycle.run_once()
    assert pending_gauge(render_metrics(member.publisher.status, None)) == 0
