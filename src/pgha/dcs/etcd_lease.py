"""etcd leases as KVStore sessions, shared by both etcd clients (:mod:`pgha.dcs.etcd`, gRPC, and
:mod:`pgha.dcs.etcd_http`, the JSON gateway): a client only says how to grant, refresh and
revoke one lease.

Contract: a session is one etcd lease of ``floor(ttl - 0.5)`` seconds (at least 1), granted on
demand; etcd revokes expired leases in a loop that runs every 500 ms, so such a lease is gone
within ``ttl`` of its last keep-alive. :meth:`open_session` retires the current lease (renewed
by :meth:`keepalive` until :meth:`close_retired`); ``session_ttl`` is then the smaller of both.
A lease etcd reports as gone (TTL <= 0, "lease not found") is forgotten and SessionExpired
raised; the next keep-alive grants a new one.
"""

from __future__ import annotations

import abc
import asyncio
import math

from pgha.dcs.base import KVStore, SessionExpired


def lease_seconds(ttl: float) -> int:
    """The lease TTL granted for a session of ``ttl`` seconds."""
    return max(1, math.floor(ttl - 0.5))


class EtcdLeaseSessions(KVStore):
    """The session half of an etcd KVStore (see the module docstring)."""

    def __init__(self, endpoints: list[tuple[str, int]], ttl: float, timeout: float,
                 username: str | None, password: str | None) -> None:
        """``endpoints``: ``[(host, port), ...]``, at least one; ``username`` and ``password``
        (etcd authentication) both or neither. ValueError otherwise."""
        super().__init__(ttl, timeout)
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        if (username is None) != (password is None):
            raise ValueError("etcd username and password must be given together")
        self.endpoints = list(endpoints)
        self._username = username
        self._password = password
        self._index = 0
        self._lease_id: int | None = None
        self._retired: tuple[int, float] | None = None  # lease id, its session_ttl
        self._lease_lock = asyncio.Lock()

    @abc.abstractmethod
    async def _grant(self, ttl: float) -> int:
        """Grant a lease of :func:`lease_seconds` (``ttl``); its id. DCSError on failure."""

    @abc.abstractmethod
    async def _refresh(self, lease: int) -> bool:
        """One keep-alive of ``lease``; False (or SessionExpired) when etcd dropped it."""

    @abc.abstractmethod
    async def _revoke(self, lease: int) -> None:
        """Revoke ``lease``, best effort. Never raises."""

    @property
    def session_id(self) -> str | None:
        return None if self._lease_id is None else f"{self._lease_id:x}"

    @property
    def retired_session_id(self) -> str | None:
        return None if self._retired is None else f"{self._retired[0]:x}"

    @property
    def session_ttl(self) -> float:
        """Whole seconds (etcd leases are integral), half a second under ``ttl`` at least;
        while a lease is retired, the smaller of both."""
        current = float(lease_seconds(self.ttl))
        return current if self._retired is None else min(current, self._retired[1])

    async def _ensure_lease(self) -> int:
        async with self._lease_lock:
            if self._lease_id is None:
                self._lease_id = await self._grant(self.ttl)
            return self._lease_id

    async def keepalive(self) -> None:
        """One keep-alive round trip (or a grant when there is no lease), and one for the
        retired lease if any."""
        retired = self._retired
        if retired is not None:
            try:
                alive = await self._refresh(retired[0])
            except SessionExpired:
                alive = False
            if not alive:
                if self._retired == retired:
                    self._retired = None
                raise SessionExpired(f"etcd retired lease {retired[0]:x} expired")
        lease = self._lease_id
        if lease is None:
            await self._ensure_lease()
            return
        if not await self._refresh(lease):
            if self._lease_id == lease:
                self._lease_id = None
            raise SessionExpired(f"etcd lease {lease:x} expired")

    async def open_session(self, ttl: float) -> None:
        """Grant a lease for ``ttl`` and make it current; the previous one is retired."""
        if self._retired is not None:
            raise ValueError("a retired etcd lease is still open")
        async with self._lease_lock:
            new = await self._grant(ttl)
            old, old_ttl = self._lease_id, self.session_ttl
            self._lease_id, self.ttl = new, ttl
            if old is not None:
                self._retired = (old, old_ttl)

    async def close_retired(self) -> None:
        """Revoke the retired lease (best effort; forgotten either way)."""
        retired, self._retired = self._retired, None
        if retired is not None:
            await self._revoke(retired[0])
