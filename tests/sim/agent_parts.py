"""The agent's parts the simulation supplies itself: the DCS client with fault switches, the
memoised cluster store, the lease gate and the status sink the executor is given (and the
executor's DCS timeout, a module function so that a Sim stays picklable)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from pgha.agent.publish import Publisher
from pgha.core.model import ClusterView, HaSettings
from pgha.dcs.base import DCSError, SessionExpired
from pgha.dcs.memory import MemoryBackend, MemoryStore
from pgha.dcs.store import ClusterStore, parse_snapshot
from tests.support.fake_pg import FakePostgres

NAMESPACE, SCOPE = "/service", "sim"
DCS_TIMEOUT = 5.0
_copies_loop: list[asyncio.AbstractEventLoop] = []


def dcs_timeout() -> float:
    """The executor's limit of one DCS call (a module function: a Sim must stay picklable)."""
    return DCS_TIMEOUT


def copies_loop() -> asyncio.AbstractEventLoop:
    """The event loop of every copied or unpickled Sim of this process: each of their calls
    runs to completion, so sharing it never interleaves two Sims."""
    if not _copies_loop:
        _copies_loop.append(asyncio.new_event_loop())
    return _copies_loop[0]


class SimKV(MemoryStore):
    """A member's DCS client: a memory store whose keep-alives can be broken while reads and
    writes still work (``keepalive_broken_until``); ``partitioned`` (inherited) makes every
    call fail with DCSError."""

    def __init__(self, backend: MemoryBackend, ttl: float, now: Callable[[], float]) -> None:
        super().__init__(backend, ttl=ttl, timeout=1.0)
        self.now = now
        self.keepalive_broken_until = 0.0

    async def keepalive(self) -> None:
        if self.keepalive_broken_until > self.now():
            raise DCSError("keep-alive lost (injected fault)")
        await super().keepalive()


class SimClusterStore(ClusterStore):
    """The real ClusterStore; ``load`` parses each store revision once per simulation (the
    snapshot at one revision is the same for every member, and parsing is pure)."""

    def __init__(self, kv: MemoryStore, name: str, cache: dict[int, ClusterView]) -> None:
        super().__init__(kv, NAMESPACE, SCOPE, name)
        self.cache = cache

    async def load(self) -> ClusterView:
        snapshot = await self.kv.get_prefix(self.prefix)
        view = self.cache.get(snapshot.revision)
        if view is None:
            if len(self.cache) > 64:
                self.cache.clear()
            view = self.cache[snapshot.revision] = parse_snapshot(self.prefix, snapshot)
        return view


class SimLease:
    """The executor's LeaseGate and the agent's lease deadline (see pgha.agent.lease)."""

    def __init__(self, store: ClusterStore, kv: SimKV, publisher: Publisher,
                 now: Callable[[], float]) -> None:
        self.store, self.kv, self.publisher, self.now = store, kv, publisher, now
        self.deadline: float | None = None

    async def confirm(self) -> bool:
        sent = self.now()
        try:
            await self.store.keepalive()
        except SessionExpired:
            self.deadline = None
            self.publisher.forget_member_key()
            return False
        except DCSError:
            return False
        ttl = self.kv.session_ttl
        self.deadline = sent + ttl - HaSettings(ttl=ttl).safety_margin
        return True

    def busy(self, seconds: float) -> AbstractContextManager[None]:
        return contextlib.nullcontext()  # the simulation has no keep-alive gate


@dataclass
class StatusSink:
    """The executor's PgStatusSink: republish PostgreSQL's state after each action."""

    pg: FakePostgres
    publisher: Publisher

    async def pg_changed(self) -> None:
        self.publisher.update_postgres(self.pg.state(), self.pg.details())

    async def busy(self, what: str) -> None:
        self.publisher.set_busy(what)
