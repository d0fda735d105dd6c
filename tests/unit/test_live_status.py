"""``GET /patroni`` answers with WAL positions read from PostgreSQL at the time of the request
(as Patroni's does), not those of the agent's last cycle: peers compare them in a leader race
and, in quorum mode, count a vote only from a voter that is not ahead (issue 10)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from tests.unit.test_decide import replica_pg

from pgha.agent.publish import Publisher
from pgha.core.model import PgRole, PgState, Tags
from pgha.core.status import AgentStatus
from pgha.dcs.memory import MemoryBackend, MemoryStore
from pgha.dcs.store import ClusterStore
from pgha.pg.errors import PgError

PUBLISHED = replica_pg(wal_position=1000)


def publisher() -> Publisher:
    store = ClusterStore(MemoryStore(MemoryBackend(), ttl=10, timeout=1.0), "/service/", "c",
                         "pg2")
    status = AgentStatus("pg2", "c", Tags(), "postgres://pg2", "http://pg2:8008/patroni",
                         pg=PUBLISHED, pg_details={"xlog": {"received_location": 1000}})
    return Publisher(store, status)


def probe(state: PgState, details: dict[str, Any] | None = None, delay: float = 0.0) -> Any:
    async def read() -> tuple[PgState, dict[str, Any]]:
        await asyncio.sleep(delay)
        return state, details or {}
    return read


async def test_positions_received_since_the_last_cycle_are_answered() -> None:
    live = await publisher().live(probe(replica_pg(wal_position=5000),
                                        {"xlog": {"received_location": 5000}}))
    assert live.pg.wal_position == 5000
    assert live.to_patroni_json()["xlog"]["received_location"] == 5000


async def test_the_published_status_when_postgresql_cannot_tell() -> None:
    p = publisher()
    assert (await p.live(probe(replace(PUBLISHED, role=PgRole.PRIMARY)))) is p.status
    assert (await p.live(probe(PUBLISHED, delay=1.0), timeout=0.01)) is p.status

    async def failing() -> tuple[PgState, dict[str, Any]]:
        raise PgError("connection refused")
    assert (await p.live(failing)) is p.status
    p.status = replace(p.status, pg=replace(PUBLISHED, running=False, accepting=False))
    assert (await p.live(probe(replica_pg(wal_position=9)))) is p.status
