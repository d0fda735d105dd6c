"""An in-process :class:`~pgha.dcs.base.KVStore` for tests and simulations.

A :class:`MemoryBackend` plays the server: the data, one global revision counter (etcd
semantics: every change, or every batch of deletions caused by one expired session, takes the
next revision; a key's revision is the revision of its last change; a missing key has revision
0), sessions with expiry on an injected clock, and the watch event log. Several
:class:`MemoryStore` clients connect to one backend.

Sessions expire lazily: :meth:`MemoryBackend.expire_sessions` runs at the start of every call
of every client (and may be called directly), so with a fake clock a test advances the clock and
then makes any call.

Fault injection: ``backend.fail = True`` makes every call of every client raise DCSError (the
server keeps expiring sessions meanwhile); ``store.partitioned = True`` does the same for one
client, whose watches then miss events and report ``WatchEvent(key=None)`` once reachable
again; ``backend.disconnect_watches()`` sends ``WatchEvent(key=None)`` to every watch;
``backend.revoke_session(id)`` kills a session server-side; ``backend.compact()`` drops the
event log so watches from older revisions get ``key=None`` and resume at the current revision.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from pgha.dcs.base import DCSError, KeyValue, KVStore, SessionExpired, Snapshot, WatchEvent


@dataclass
class _Entry:
    value: bytes
    revision: int
    session: int | None

    def key_value(self, key: str) -> KeyValue:
        """This entry as a read (and a watch event) returns it."""
        return KeyValue(key, self.value, self.revision, self.session is not None,
                        None if self.session is None else str(self.session))


@dataclass
class _Session:
    ttl: float
    expires: float


@dataclass(eq=False)
class _Watch:
    prefix: str
    owner: MemoryStore
    queue: asyncio.Queue[WatchEvent | None] = field(default_factory=asyncio.Queue)
    missed: bool = False


class MemoryBackend:
    """The shared state of an in-memory DCS (see the module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.fail = False
        self.revision = 0
        self.compacted = 0  # watches must start after this revision
        self.calls = 0  # number of client calls served (or refused), for request counting
        self._data: dict[str, _Entry] = {}
        self._sessions: dict[int, _Session] = {}
        self._next_session = 1
        self._log: list[WatchEvent] = []
        self._watches: set[_Watch] = set()

    # -- inspection and fault injection ------------------------------------------------------

    def dump(self) -> dict[str, bytes]:
        """Current keys and values (no expiry check)."""
        return {k: e.value for k, e in sorted(self._data.items())}

    def sessions(self) -> dict[int, float]:
        """Live session ids and their expiry instants."""
        return {sid: s.expires for sid, s in self._sessions.items()}

    def revoke_session(self, session: int) -> None:
        """End ``session`` now, deleting its keys (like an expiry)."""
        if self._sessions.pop(session, None) is not None:
            self._drop_session_keys([session])

    def expire_sessions(self) -> list[int]:
        """Drop every session whose expiry has passed and delete its keys (one revision per
        session, like an etcd lease revocation). Returns the expired ids."""
        now = self.clock()
        expired = [sid for sid, s in self._sessions.items() if s.expires <= now]
        for sid in expired:
            del self._sessions[sid]
        self._drop_session_keys(expired)
        return expired

    def disconnect_watches(self) -> None:
        """Every watch reports ``WatchEvent(current revision, key=None)``."""
        for w in self._watches:
            w.queue.put_nowait(WatchEvent(self.revision, None))

    def compact(self, revision: int | None = None) -> None:
        """Forget watch history up to ``revision`` (default: the current revision)."""
        self.compacted = self.revision if revision is None else revision
        self._log = [ev for ev in self._log if ev.revision > self.compacted]

    # -- server operations (synchronous; called by MemoryStore) -----------------------------

    def _drop_session_keys(self, sessions: list[int]) -> None:
        for sid in sessions:
            keys = [k for k, e in self._data.items() if e.session == sid]
            if keys:
                self.revision += 1
                for k in keys:
                    del self._data[k]
                    self._emit(k, deleted=True)

    def _emit(self, key: str, deleted: bool) -> None:
        entry = None if deleted else self._data.get(key)
        event = WatchEvent(self.revision, key, deleted,
                           None if entry is None else entry.key_value(key))
        self._log.append(event)
        for w in self._watches:
            if not key.startswith(w.prefix):
                continue
            if self.fail or w.owner.partitioned:
                w.missed = True
                continue
            if w.missed:
                w.missed = False
                w.queue.put_nowait(WatchEvent(self.revision - 1, None))
            w.queue.put_nowait(event)

    def _grant(self, ttl: float) -> int:
        sid = self._next_session
        self._next_session += 1
        self._sessions[sid] = _Session(ttl, self.clock() + ttl)
        return sid

    def _write(self, key: str, value: bytes, session: int | None) -> None:
        self.revision += 1
        self._data[key] = _Entry(value, self.revision, session)
        self._emit(key, deleted=False)

    def _delete(self, key: str) -> None:
        self.revision += 1
        del self._data[key]
        self._emit(key, deleted=True)


class MemoryStore(KVStore):
    """One client of a :class:`MemoryBackend`. Calls yield to the event loop once (so
    concurrent tasks interleave) and then act atomically."""

    def __init__(self, backend: MemoryBackend, ttl: float = 30.0, timeout: float = 5.0) -> None:
        super().__init__(ttl, timeout)
        self.backend = backend
        self.partitioned = False
        self._session: int | None = None
        self._retired: tuple[int, float] | None = None  # session id, ttl
        self._closed = False
        self._watches: set[_Watch] = set()

    @property
    def session_id(self) -> str | None:
        return None if self._session is None else str(self._session)

    @property
    def retired_session_id(self) -> str | None:
        return None if self._retired is None else str(self._retired[0])

    @property
    def session_ttl(self) -> float:
        return min(self.ttl, self._retired[1]) if self._retired is not None else self.ttl

    async def _enter(self) -> MemoryBackend:
        await asyncio.sleep(0)
        b = self.backend
        b.calls += 1
        b.expire_sessions()
        if self._closed:
            raise DCSError("memory store is closed")
        if b.fail or self.partitioned:
            raise DCSError("memory store unreachable (injected fault)")
        return b

    def _live_session(self, b: MemoryBackend) -> int:
        """Our session for an ephemeral write, granted on demand."""
        if self._session is None:
            self._session = b._grant(self.ttl)
        elif self._session not in b._sessions:
            self._session = None
            raise SessionExpired("memory session expired")
        return self._session

    async def connect(self) -> None:
        self._closed = False

    async def close(self) -> None:
        """Revoke the sessions (their keys vanish at once) and end this client's watches."""
        b = self.backend
        if not (b.fail or self.partitioned):
            for sid in (self._session, self.retired_session_id):
                if sid is not None:
                    b.revoke_session(int(sid))
        self._session, self._retired = None, None
        self._closed = True
        for w in list(self._watches):
            w.queue.put_nowait(None)

    async def keepalive(self) -> None:
        b = await self._enter()
        if self._retired is not None:
            retired = b._sessions.get(self._retired[0])
            if retired is None:
                self._retired = None
                raise SessionExpired("memory retired session expired")
            retired.expires = b.clock() + retired.ttl
        if self._session is None:
            self._session = b._grant(self.ttl)
            return
        session = b._sessions.get(self._session)
        if session is None:
            self._session = None
            raise SessionExpired("memory session expired")
        session.expires = b.clock() + session.ttl

    async def open_session(self, ttl: float) -> None:
        if self._retired is not None:
            raise ValueError("a retired session is still open")
        b = await self._enter()
        new = b._grant(ttl)
        if self._session is not None and self._session in b._sessions:
            self._retired = (self._session, b._sessions[self._session].ttl)
        self._session, self.ttl = new, ttl

    async def close_retired(self) -> None:
        retired, self._retired = self._retired, None
        b = self.backend
        if retired is not None and not (b.fail or self.partitioned or self._closed):
            b.calls += 1
            b.revoke_session(retired[0])

    async def get_prefix(self, prefix: str) -> Snapshot:
        b = await self._enter()
        items = {k: e.key_value(k) for k, e in sorted(b._data.items()) if k.startswith(prefix)}
        return Snapshot(b.revision, items)

    async def create(self, key: str, value: bytes, *, ephemeral: bool = False) -> bool:
        b = await self._enter()
        session = self._live_session(b) if ephemeral else None
        if key in b._data:
            return False
        b._write(key, bytes(value), session)
        return True

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        ephemeral: bool = False,
        if_revision: int | None = None,
    ) -> bool:
        b = await self._enter()
        session = self._live_session(b) if ephemeral else None
        if if_revision is not None:
            current = b._data.get(key)
            if (current.revision if current else 0) != if_revision:
                return False
        b._write(key, bytes(value), session)
        return True

    async def delete(
        self,
        key: str,
        *,
        if_value: bytes | None = None,
        if_revision: int | None = None,
    ) -> bool:
        b = await self._enter()
        current = b._data.get(key)
        if current is None:
            return False
        if if_value is not None and current.value != if_value:
            return False
        if if_revision is not None and current.revision != if_revision:
            return False
        b._delete(key)
        return True

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        """Replays logged events after ``start_revision``, then live ones, in revision order.
        A compacted ``start_revision`` gives ``WatchEvent(current, key=None)`` first. Ends when
        this client is closed."""
        b = self.backend
        w = _Watch(prefix, self)
        if start_revision < b.compacted:
            w.queue.put_nowait(WatchEvent(b.revision, None))
        else:
            for ev in b._log:
                if ev.revision > start_revision and ev.key and ev.key.startswith(prefix):
                    w.queue.put_nowait(ev)
        b._watches.add(w)
        self._watches.add(w)
        try:
            while not self._closed:
                event = await w.queue.get()
                if event is None:
                    return
                yield event
        finally:
            b._watches.discard(w)
            self._watches.discard(w)
