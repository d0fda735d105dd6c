"""The small key-value protocol every DCS backend implements.

The domain operations (leader lock, members, config, history, ...) are written once in
``pgha.dcs.store`` on top of this protocol; a backend only maps these few calls onto its store.

Keys are absolute strings such as ``/service/demo/leader``. Values are bytes.

Sessions: each client owns at most one *session* (etcd lease, Consul session, ZooKeeper session)
with a TTL. Keys written with ``ephemeral=True`` are bound to it and vanish when it expires or is
closed. ``keepalive()`` renews it; the caller measures time from the moment it *sent* the request.
``ttl`` is the TTL the current session is (or will be) granted for: it changes only with
:meth:`KVStore.open_session`, so ``session_ttl`` always describes sessions the store really holds.
``timeout`` (the per-call limit) may be changed at any time and applies from the next call.

Session switch (a ``ttl`` change, DESIGN.md safety rules 2 and 7): :meth:`KVStore.open_session`
grants a new session and makes it the current one while the previous one is kept as the
*retired* session: ``keepalive()`` renews both and ``session_ttl`` is the smaller of their TTLs,
so whichever of them a key is bound to stays alive and is counted conservatively. The caller
(:meth:`pgha.dcs.store.ClusterStore.switch_session`) moves its keys from the retired session to
the current one with compare-and-set puts, then calls :meth:`KVStore.close_retired`.

Failure behaviour: every call raises :class:`DCSError` when the store cannot be reached or
answers with an error (after the backend's own endpoint failover, bounded by its timeout).
A lost compare-and-set is not an error: the call returns False.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Self


class DCSError(Exception):
    """The store could not be reached or refused the request."""


class SessionExpired(DCSError):
    """Our session no longer exists in the store: every ephemeral key of ours is gone."""


@dataclass(frozen=True)
class KeyValue:
    """One key as stored. ``revision`` is the store's modification index for the key, the value
    to pass as ``if_revision`` for a compare-and-set. ``ephemeral`` is True when the key is bound
    to some session (ours or another client's); ``session`` names that session exactly as the
    binding client's :attr:`KVStore.session_id` does (etcd: lease id, ZooKeeper: the znode's
    ephemeral owner, Consul: the Session holding the key), None when the key is bound to none.
    ``kv.session == store.session_id`` tells whether a key is bound to our session."""

    key: str
    value: bytes
    revision: int
    ephemeral: bool = False
    session: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """A consistent read of every key under a prefix at store revision ``revision``."""

    revision: int
    items: Mapping[str, KeyValue]


@dataclass(frozen=True)
class WatchEvent:
    """Something changed under the watched prefix. ``key`` is None when the backend cannot tell
    which key (e.g. after a reconnect): callers must then re-read everything. ``kv`` is the key
    as written by this change when the backend delivers it with the event (None for a deletion,
    or when the backend only knows that ``key`` changed: callers must then read it)."""

    revision: int
    key: str | None = None
    deleted: bool = False
    kv: KeyValue | None = None


class KVStore(abc.ABC):
    """Async client of one DCS. Use as ``async with``: entering connects, leaving closes the
    session (so its ephemeral keys disappear at once) and the connection."""

    def __init__(self, ttl: float, timeout: float) -> None:
        self.ttl = ttl
        self.timeout = timeout

    @property
    def session_ttl(self) -> float:
        """The TTL our session is granted with. A backend may choose less than ``ttl`` so that
        our ephemeral keys are gone within ``ttl`` of the last renewal despite the store's own
        expiry granularity; never more. While a retired session exists (:meth:`open_session`),
        the smaller of its TTL and the current one's. The agent counts its lease deadline with
        this value."""
        return self.ttl

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the connection. Does not create a session."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Revoke our session (best effort) and close the connection. Never raises."""

    @abc.abstractmethod
    async def get_prefix(self, prefix: str) -> Snapshot:
        """Every key under ``prefix`` in one consistent read."""

    @abc.abstractmethod
    async def create(self, key: str, value: bytes, *, ephemeral: bool = False) -> bool:
        """Create ``key`` only if it does not exist. True if created. ``ephemeral`` binds it to
        our session (opened on demand)."""

    @abc.abstractmethod
    async def put(
        self,
        key: str,
        value: bytes,
        *,
        ephemeral: bool = False,
        if_revision: int | None = None,
    ) -> bool:
        """Write ``key``. With ``if_revision`` the write happens only if the key's current
        revision equals it (compare-and-set); returns False when it does not. ``ephemeral``
        binds the key to our session even when it was bound to another session before (with
        ``if_revision``: atomically with the revision check), which is how a key left by a
        previous process is taken over (DESIGN.md safety rule 7)."""

    @abc.abstractmethod
    async def delete(
        self,
        key: str,
        *,
        if_value: bytes | None = None,
        if_revision: int | None = None,
    ) -> bool:
        """Delete ``key``, optionally only if its value/revision matches. True if it was
        deleted (a missing key gives False)."""

    @abc.abstractmethod
    async def keepalive(self) -> None:
        """Renew our session, opening one if there is none, and the retired session if there
        is one (see the module docstring). Raises :class:`SessionExpired` if the store no
        longer knows our session (a new one is opened on the next call) or the retired one
        (which is then forgotten: the keys bound to it are gone)."""

    @abc.abstractmethod
    async def open_session(self, ttl: float) -> None:
        """Grant a new session for ``ttl`` and make it the current one (``ttl``,
        ``session_id`` and the binding of later ephemeral writes follow it). The session that
        was current becomes the retired session (nothing to retire when there was none): it
        is renewed by ``keepalive()`` until :meth:`close_retired`; no key changes its binding.
        Raises DCSError when the new session cannot be opened: then nothing changed. Must not
        be called while a retired session exists (ValueError)."""

    @abc.abstractmethod
    async def close_retired(self) -> None:
        """End the retired session (its ephemeral keys vanish at once); a no-op when there is
        none. Call it only once no key of ours is bound to it any more. Never raises: when
        the store cannot be told, the session is forgotten and expires on its own."""

    @property
    @abc.abstractmethod
    def retired_session_id(self) -> str | None:
        """Identifier of the retired session (see :meth:`open_session`), None when there is
        none."""

    @abc.abstractmethod
    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        """Events for changes under ``prefix`` after ``start_revision``. The iterator survives
        reconnects (resuming from the last revision seen; a ``WatchEvent(key=None)`` tells the
        caller to re-read). It ends only when cancelled or the store is closed."""

    @property
    @abc.abstractmethod
    def session_id(self) -> str | None:
        """Identifier of our current session, None when there is none."""


def scope_prefix(namespace: str, scope: str) -> str:
    """``/service/`` + ``demo`` -> ``/service/demo/``."""
    ns = "/" + namespace.strip("/")
    if ns == "/":
        return f"/{scope}/"
    return f"{ns}/{scope}/"


KNOWN_KEYS: Mapping[str, str] = {
    "initialize": "system identifier",
    "config": "dynamic configuration JSON",
    "leader": "leader member name (ephemeral)",
    "status": "leader optime and slots JSON",
    "history": "timeline history JSON list",
    "failover": "manual failover request JSON",
    "sync": "synchronous standby state JSON",
    "failsafe": "failsafe member map JSON",
}
