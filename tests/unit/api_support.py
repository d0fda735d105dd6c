"""Shared fixtures of the REST API tests: a fake status source (records submitted commands and
answers scripted outcomes) and representative primary/replica statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from pgha.agent.decisions import DecisionLog
from pgha.agent.metrics import AgentMetrics
from pgha.api.security import HostResolver
from pgha.api.server import build_app
from pgha.config.models import RestApiConfig
from pgha.core.commands import Command, Outcome
from pgha.core.model import (
    ClusterView,
    ControlState,
    DataState,
    HaSettings,
    HistoryEntry,
    Leader,
    Member,
    PgRole,
    PgState,
    Tags,
)
from pgha.core.status import AgentStatus
from pgha.dcs.codec import sync_from_json

SYSID = "7123456789012345678"
MB = 1024 * 1024
HEAD_POS = 0x5000000  # the leader's published position


@dataclass
class Source:
    """Implements what the API needs from the agent. ``outcomes`` scripts the answer per
    command type (default: ``default``); every submitted command is recorded."""

    status: AgentStatus
    failsafe_answer: tuple[int, str] = (200, "Accepted")
    failsafe_calls: list[str] = field(default_factory=list)
    outcomes: dict[type, Outcome] = field(default_factory=dict)
    default: Outcome = field(default_factory=lambda: Outcome(200, "done"))
    commands: list[Command] = field(default_factory=list)
    metrics: AgentMetrics | None = None
    discarded: list[dict[str, Any]] = field(default_factory=list)  # discarded-WAL reports
    failsafe_slots: dict[str, int] = field(default_factory=dict)  # slots of the last POST
    records: DecisionLog = field(default_factory=DecisionLog)  # GET /decisions

    def decisions(self, limit: int | None = None) -> list[dict[str, Any]]:
        return self.records.to_json(limit)

    def discarded_reports(self) -> list[dict[str, Any]]:
        return self.discarded

    async def live_status(self) -> AgentStatus:
        return self.status

    def accept_failsafe(self, name: str,
                        slots: Mapping[str, int] | None = None) -> tuple[int, str]:
        self.failsafe_calls.append(name)
        self.failsafe_slots = dict(slots or {})
        return self.failsafe_answer

    async def submit(self, command: Command) -> Outcome:
        self.commands.append(command)
        return self.outcomes.get(type(command), self.default)


def cluster_view(leader: str | None = "pg1", optime: int | None = None,
                 leader_xlog: int | None = HEAD_POS, pause: bool = False,
                 **kw: Any) -> ClusterView:
    members = {
        "pg1": Member("pg1", conn_url="postgres://10.0.0.1:5432/postgres",
                      api_url="http://10.0.0.1:8008/patroni", role="primary", state="running",
                      xlog_location=leader_xlog, timeline=2),
        "pg2": Member("pg2", conn_url="postgres://10.0.0.2:5433/postgres",
                      api_url="http://10.0.0.2:8008/patroni", role="replica", state="running",
                      replication_state="streaming", xlog_location=HEAD_POS - 3 * MB,
                      timeline=2, tags=Tags(nofailover=True)),
        "pg3": Member("pg3", conn_url="postgres://10.0.0.3:5432/postgres",
                      api_url="http://10.0.0.3:8008/patroni", role="replica", state="stopped",
                      xlog_location=None, timeline=None),
    }
    if kw.get("sync") is not None:
        kw["sync"] = sync_from_json(kw["sync"])  # the key's JSON, decoded as the store does
    settings = replace(HaSettings.from_config(kw.get("config") or {}), pause=pause)
    return ClusterView(initialize=SYSID, leader=Leader(leader) if leader else None,
               members=members, optime=optime, settings=settings, **kw)


def primary_status(**kw: Any) -> AgentStatus:
    base = AgentStatus(
        name="pg1", scope="demo", tags=Tags(), conn_url="postgres://10.0.0.1:5432/postgres",
        api_url="http://10.0.0.1:8008/patroni",
        pg=PgState(data=DataState.VALID, running=True, accepting=True, role=PgRole.PRIMARY,
                   sysid=SYSID, timeline=2, wal_position=HEAD_POS,
                   control_state=ControlState.IN_PRODUCTION),
        pg_details={"postmaster_start_time": "2024-06-01 10:00:00.000 UTC",
                    "server_version": 150007, "xlog": {"location": HEAD_POS}},
        view=cluster_view(), holds_lock=True, dcs_last_seen=1717236000.7,
        reason="leader_healthy", message="holding the leader lock as a running primary")
    return replace(base, **kw)


def replica_status(wal: int | None = HEAD_POS - 2 * MB, **kw: Any) -> AgentStatus:
    base = AgentStatus(
        name="pg2", scope="demo", tags=Tags(), conn_url="postgres://10.0.0.2:5433/postgres",
        api_url="http://10.0.0.2:8008/patroni",
        pg=PgState(data=DataState.VALID, running=True, accepting=True, role=PgRole.REPLICA,
                   sysid=SYSID, timeline=2, wal_position=wal, upstream="pg1",
                   control_state=ControlState.IN_ARCHIVE_RECOVERY),
        pg_details={"xlog": {"received_location": wal, "replayed_location": wal,
                             "replayed_timestamp": None, "paused": False},
                    "replication_state": "streaming"},
        view=cluster_view(), holds_lock=False)
    return replace(base, **kw)


def with_pg(status: AgentStatus, **kw: Any) -> AgentStatus:
    return replace(status, pg=replace(status.pg, **kw))


STOPPED: dict[str, Any] = dict(running=False, accepting=False, down_since=100.0)

HISTORY = (HistoryEntry(1, 0x3000060, "no recovery target specified",
                        "2024-06-01T10:00:00+00:00", "pg1"),
           HistoryEntry(2, 0x4000000, "switchover", "2024-06-02T11:00:00+00:00", "pg2"))


def restapi(**kw: Any) -> RestApiConfig:
    """A ``restapi`` section from keyword values (as in the YAML)."""
    return RestApiConfig.model_validate({"listen": "127.0.0.1:8008", **kw})


class FakeResolver(HostResolver):
    """Resolves from a table instead of DNS; unknown names fail like an NXDOMAIN."""

    def __init__(self, table: Mapping[str, list[str]]) -> None:
        self.table = dict(table)
        self.lookups: list[str] = []

        async def resolve(host: str) -> list[str]:
            self.lookups.append(host)
            if host not in self.table:
                raise OSError(f"no such host {host}")
            return self.table[host]

        super().__init__(resolve)


@asynccontextmanager
async def api(source: Source, config: RestApiConfig | None = None,
              resolver: HostResolver | None = None) -> AsyncIterator[TestClient[Any, Any]]:
    """An in-process client of the real app over ``source``."""
    async with TestClient(TestServer(build_app(source, config, resolver))) as client:
        yield client


async def call(status: AgentStatus, path: str, method: str = "GET") -> tuple[int, bytes]:
    async with api(Source(status)) as client:
        resp = await client.request(method, path)
        return resp.status, await resp.read()


async def code(status: AgentStatus, path: str, method: str = "GET") -> int:
    return (await call(status, path, method))[0]
