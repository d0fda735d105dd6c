"""The interfaces the executor (:class:`pgha.agent.executor.Executor`) drives: the local
PostgreSQL, the lease keeper and the status publisher. The agent passes the real components,
the simulation its fakes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Protocol

from pgha.core.actions import SlotSpec, StopMode, SyncSlots, Upstream
from pgha.core.model import PgState
from pgha.pg.settings import PgSettings


class PgControl(Protocol):
    """What the executor needs of the local PostgreSQL (:class:`pgha.pg.postgres.Postgres`;
    the simulation passes a fake). Methods return False (or raise PgError/OSError) on
    failure."""

    @property
    def settings(self) -> PgSettings: ...

    def conn_url(self) -> str: ...

    async def observe(self) -> PgState: ...

    async def initdb(self) -> bool: ...

    async def create_roles(self) -> None: ...

    async def clone(self, source: Upstream | None, *, basebackup_only: bool = False,
                    replace_data: bool = False) -> bool: ...

    async def start(self, role: str, upstream: Upstream | None) -> bool: ...

    async def stop(self, mode: StopMode, timeout: float | None = None) -> bool: ...

    async def promote(self) -> bool: ...

    async def follow(self, upstream: Upstream) -> bool: ...

    async def rejoin(self, leader: Upstream, use_pg_rewind: bool) -> bool: ...

    async def wipe(self) -> None: ...

    async def sync_slots(self, plan: SyncSlots) -> dict[str, str]: ...

    async def copy_logical_slots(self, source: Upstream, slots: tuple[SlotSpec, ...]) -> bool: ...

    async def set_sync_standby_names(self, value: str | None) -> bool: ...

    async def checkpoint(self) -> None: ...

    async def timeline_history(self, source: Upstream) -> list[tuple[int, int]]: ...

    def peer_received_position(self, conn_url: str,
                               ) -> AbstractAsyncContextManager[
                                   Callable[[], Awaitable[int | None]]]: ...


class LeaseGate(Protocol):
    """What the executor needs of the lease keeper."""

    async def confirm(self) -> bool:
        """One keep-alive round trip; True when the lease is confirmed from now."""
        ...

    def busy(self, seconds: float) -> AbstractContextManager[None]:
        """Around a long action that runs for up to ``seconds`` (``math.inf``: no limit of
        its own): not a stuck loop until the block exits, however it exits."""
        ...


class PgStatusSink(Protocol):
    """Told after every action that changed PostgreSQL's state, before the next action, and
    when a long action starts (``busy``: Patroni's state string such as ``creating replica``,
    shown by ``GET /patroni`` and the member key until the next ``pg_changed``)."""

    async def pg_changed(self) -> None: ...

    async def busy(self, what: str) -> None: ...
