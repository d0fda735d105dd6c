"""A :class:`KVStore` wrapper that times every call and counts failures, for ``/metrics``.

It forwards every call unchanged to the wrapped backend, so no backend needs to know about
metrics. Per operation (``connect``, ``get_prefix``, ``create``, ``put``, ``delete``,
``keepalive``; ``open_session``, a session grant as well, counts as ``keepalive``):

* the call's duration goes into the ``duration`` histogram, whether it answered or failed;
* every call adds 1 to ``requests`` when it starts, answered or not, so the request rate per
  operation is visible (``rate(pgha_dcs_requests_total[1m])``);
* a call that raised (``DCSError``, a timeout, any other error) or was cancelled before it
  answered (the agent abandons a DCS call at its ``retry_timeout``) adds 1 to ``errors``.
  A lost compare-and-set returns False and is not an error.

The watch is a long-lived stream: it is not timed, each (re)opening of it counts one ``watch``
request and each error it raises counts under ``watch``. ``close`` and ``close_retired`` never
raise and are not measured. ``ttl``, ``timeout`` and ``session_ttl`` are the wrapped backend's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Protocol, TypeVar

from pgha.dcs.base import KVStore, Snapshot, WatchEvent

T = TypeVar("T")
M_co = TypeVar("M_co", covariant=True)


class Observer(Protocol):
    """A histogram child: one observation per call."""

    def observe(self, value: float) -> None: ...


class Incrementer(Protocol):
    """A counter child."""

    def inc(self, amount: float = 1.0) -> None: ...


class ByOperation(Protocol[M_co]):
    """A metric family labelled by ``operation`` (the agent passes its registry's families;
    this layer needs nothing else of them)."""

    def labels(self, *values: str) -> M_co: ...


class InstrumentedKV(KVStore):
    """Wraps ``inner``; use it exactly like the backend itself (also as ``async with``)."""

    def __init__(self, inner: KVStore, duration: ByOperation[Observer],
                 errors: ByOperation[Incrementer],
                 requests: ByOperation[Incrementer] | None = None) -> None:
        self.inner = inner
        self._duration = duration
        self._errors = errors
        self._requests = requests
        # KVStore.__init__ is not called: ttl and timeout live on the inner store.

    @property
    def ttl(self) -> float:
        return self.inner.ttl

    @ttl.setter
    def ttl(self, value: float) -> None:
        self.inner.ttl = value

    @property
    def timeout(self) -> float:
        return self.inner.timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self.inner.timeout = value

    @property
    def session_ttl(self) -> float:
        return self.inner.session_ttl

    @property
    def session_id(self) -> str | None:
        return self.inner.session_id

    @property
    def retired_session_id(self) -> str | None:
        return self.inner.retired_session_id

    def _count(self, operation: str) -> None:
        if self._requests is not None:
            self._requests.labels(operation).inc()

    async def _timed(self, operation: str, call: Awaitable[T]) -> T:
        self._count(operation)
        started = time.monotonic()
        try:
            return await call
        except (Exception, asyncio.CancelledError):
            self._errors.labels(operation).inc()
            raise
        finally:
            self._duration.labels(operation).observe(time.monotonic() - started)

    async def connect(self) -> None:
        await self._timed("connect", self.inner.connect())

    async def close(self) -> None:
        await self.inner.close()

    async def get_prefix(self, prefix: str) -> Snapshot:
        return await self._timed("get_prefix", self.inner.get_prefix(prefix))

    async def create(self, key: str, value: bytes, *, ephemeral: bool = False) -> bool:
        return await self._timed("create", self.inner.create(key, value, ephemeral=ephemeral))

    async def put(self, key: str, value: bytes, *, ephemeral: bool = False,
                  if_revision: int | None = None) -> bool:
        return await self._timed("put", self.inner.put(key, value, ephemeral=ephemeral,
                                                       if_revision=if_revision))

    async def delete(self, key: str, *, if_value: bytes | None = None,
                     if_revision: int | None = None) -> bool:
        return await self._timed("delete", self.inner.delete(key, if_value=if_value,
                                                             if_revision=if_revision))

    async def keepalive(self) -> None:
        await self._timed("keepalive", self.inner.keepalive())

    async def open_session(self, ttl: float) -> None:
        await self._timed("keepalive", self.inner.open_session(ttl))

    async def close_retired(self) -> None:
        await self.inner.close_retired()

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        self._count("watch")
        events = self.inner.watch(prefix, start_revision)
        try:
            async for event in events:
                yield event
        except Exception:
            self._errors.labels("watch").inc()
            raise
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()  # close the backend's stream now, not when collected
