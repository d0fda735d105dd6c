"""Stand-ins for the parts an executor test does not exercise: a world for the fake
PostgreSQL (tests/support/fake_pg.py) on a settable clock, a status sink that records nothing,
a lease gate that always confirms, and a PostgreSQL for a bootstrap that records its calls."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from pgha.core.actions import StopMode, Upstream
from pgha.core.model import PgState
from tests.support.fake_pg import FakePostgres


@dataclass
class StillWorld:
    """The FakeWorld protocol with a clock that moves only when ``t`` is set, and no hooks."""

    t: float = 1000.0
    pgs: dict[str, FakePostgres] = field(default_factory=dict)

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return 1_700_000_000.0 + self.t

    def member_names(self) -> list[str]:
        return list(self.pgs)

    def pg(self, name: str) -> FakePostgres | None:
        return self.pgs.get(name)

    def before_start_primary(self, pg: FakePostgres) -> None: ...

    def before_promote(self, pg: FakePostgres) -> None: ...

    def after_promote(self, pg: FakePostgres, old_timeline: int) -> None: ...

    def after_rejoin(self, pg: FakePostgres, leader: FakePostgres) -> None: ...


class NullSink:
    """The executor's status sink (PgStatusSink) that records nothing."""

    async def pg_changed(self) -> None: ...

    async def busy(self, what: str) -> None: ...


class OpenLease:
    """The executor's lease gate (LeaseGate): always confirmed, never busy."""

    async def confirm(self) -> bool:
        return True

    def busy(self, seconds: float) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


@dataclass
class BootPg:
    """What a cluster bootstrap needs of PostgreSQL, recording each call in ``calls``;
    ``initdb`` answers ``initdb_ok``; the system identifier is ``7000``."""

    settings: Any = None
    initdb_ok: bool = True
    calls: list[str] = field(default_factory=list)

    async def initdb(self) -> bool:
        self.calls.append("initdb")
        return self.initdb_ok

    async def start(self, role: str, upstream: Upstream | None) -> bool:
        self.calls.append("start")
        return True

    async def create_roles(self) -> None:
        self.calls.append("roles")

    async def observe(self) -> PgState:
        return PgState(sysid="7000")

    async def stop(self, mode: StopMode, timeout: float | None = None) -> bool:
        self.calls.append(f"stop {mode}")
        return True

    async def wipe(self) -> None:
        self.calls.append("wipe")
