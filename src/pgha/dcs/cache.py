"""A watch-fed copy of every key under the cluster prefix (issue 15: no full read per cycle).

:class:`PrefixCache` holds the keys of one prefix as of a store revision. A full read
(:meth:`PrefixCache.reload`, one ``get_prefix``) fills it; the watch events given to
:meth:`PrefixCache.apply` keep it current:

* an event with ``kv`` replaces that key; a deletion removes it;
* an event naming a key without ``kv`` (backends that only know *which* key changed) makes
  the cache read that key (one ``get_prefix`` of the exact key; any other key it returns,
  sharing the name as a prefix, is ignored);
* an event with ``key=None`` (a watch gap: reconnect, compaction, lost events) makes the
  cache stale.

When it answers: :meth:`snapshot` returns the cached keys only while the cache is *usable*:

* current: filled by a full read and no gap since;
* attached: the owner's watch runs (:meth:`attach` when it starts iterating a watch that
  resumes at or before the cache's revision, :meth:`detach` when it ends or fails - a
  detached cache is stale as well);
* clean: no write of this client that could change what the cache shows (:meth:`wrote`,
  called BEFORE such a write is sent - a write that failed or timed out may still have
  applied) since the last full read started. Reading one's own writes thus never depends
  on the watch's delivery delay.

Otherwise it answers None and the caller reads the store (which refills the cache).

Ordering across a full read: events delivered while a :meth:`reload` is in flight are kept
and those newer than the read's revision are applied after it (an event without ``kv`` among
them, or a gap, leaves the cache stale: the next read settles it). Events delivered while the
cache is stale and no read is in flight are dropped: a read sent later sees their changes.
Events at or below the revision of the last full read are ignored (already reflected); any
later one is applied in delivery order, also when it repeats the revision of the event before
(several keys changed by one transaction, or one ZooKeeper watch fire).

The cache never decides whether the store is reachable: it only saves reads. Not thread-safe;
one event loop. A failed read (``DCSError``/``TimeoutError``) propagates and leaves the cache
stale.
"""

from __future__ import annotations

import time

from pgha.dcs.base import KeyValue, KVStore, Snapshot, WatchEvent

#: seconds after which a leader-only key is rewritten even with unchanged content
REWRITE_AFTER = 60.0

#: events kept while full reads are in flight; more count as a gap (stale after the read)
MAX_PENDING = 10_000


class PrefixCache:
    """See the module docstring."""

    def __init__(self, kv: KVStore, prefix: str) -> None:
        self.kv = kv
        self.prefix = prefix
        self._items: dict[str, KeyValue] = {}
        self._revision = 0
        self._read_revision = 0  # the revision of the last full read
        self._current = False
        self._attached = False
        self._writes = 0  # writes announced by :meth:`wrote`
        self._clean_at = -1  # ``_writes`` when the last completed full read was sent
        self._reloads = 0  # full reads in flight
        self._pending: list[WatchEvent] = []  # delivered while a full read is in flight
        self.version = 0  # bumped on every change of the cached content
        self.full_reads = 0  # how many times the whole prefix was read (for tests/metrics)

    @property
    def current(self) -> bool:
        """The cache reflects every change up to :attr:`revision` and no gap since."""
        return self._current

    @property
    def usable(self) -> bool:
        """:meth:`snapshot` answers (current, attached and clean)."""
        return self._current and self._attached and self._clean_at == self._writes

    @property
    def revision(self) -> int:
        """The store revision the cache reflects (0 before the first read)."""
        return self._revision

    def invalidate(self) -> None:
        """Answer nothing until the next :meth:`reload` (a gap the caller knows of)."""
        self._current = False

    def attach(self) -> None:
        """The owner's watch starts delivering every change after a revision at or before
        :attr:`revision` (or the cache is stale and the next full read settles it)."""
        self._attached = True

    def detach(self) -> None:
        """The owner's watch ended or failed: stale and unusable until attached and read."""
        self._attached = False
        self._current = False

    def wrote(self) -> None:
        """This client is about to write under the prefix: unusable until the next full
        read sent after this call completes."""
        self._writes += 1

    async def reload(self) -> Snapshot:
        """Read the whole prefix and replace the cache with it (see the module docstring for
        the events delivered meanwhile)."""
        writes = self._writes
        self._reloads += 1
        try:
            snapshot = await self.kv.get_prefix(self.prefix)
        except BaseException:
            self._reloads -= 1
            self._current = False
            if not self._reloads:
                self._pending.clear()
            raise
        self._reloads -= 1
        self.full_reads += 1
        if self._current and snapshot.revision < self._revision:
            return snapshot  # an older read finished after a newer one: keep the newer state
        pending = [e for e in self._pending if e.revision > snapshot.revision
                   or e.key is None]
        if not self._reloads:
            self._pending.clear()
        self._items = dict(snapshot.items)
        self._revision = self._read_revision = snapshot.revision
        self._clean_at = max(self._clean_at, writes)
        self._current = True
        self.version += 1
        for event in pending:
            if not self._current:
                break
            if event.key is None or (not event.deleted and event.kv is None):
                self._current = False  # settled by the next full read
            else:
                self._apply_known(event)
        return snapshot

    async def apply(self, event: WatchEvent) -> None:
        """Bring the cache up to ``event`` (see the module docstring)."""
        if self._reloads:
            if len(self._pending) < MAX_PENDING:
                self._pending.append(event)
            else:
                self._pending[-1] = WatchEvent(event.revision, None)  # too many: a gap
        if event.key is None:
            self._current = False
            return
        if not self._current or not event.key.startswith(self.prefix) \
                or event.revision <= self._read_revision:
            return
        if event.deleted or event.kv is not None:
            self._apply_known(event)
            return
        try:
            read = await self.kv.get_prefix(event.key)
        except BaseException:
            self._current = False
            raise
        found = read.items.get(event.key)
        if found is None:
            self._items.pop(event.key, None)
        else:
            self._items[event.key] = found
        self._revision = max(self._revision, read.revision, event.revision)
        self.version += 1

    def _apply_known(self, event: WatchEvent) -> None:
        """An event that carries its outcome (a deletion, or the written ``kv``)."""
        assert event.key is not None
        if not event.key.startswith(self.prefix) or event.revision <= self._read_revision:
            return
        if event.deleted:
            self._items.pop(event.key, None)
        elif event.kv is not None:
            self._items[event.key] = event.kv
        self._revision = max(self._revision, event.revision)
        self.version += 1

    def snapshot(self) -> Snapshot | None:
        """The cached prefix when :attr:`usable`, else None (read the store)."""
        if not self.usable:
            return None
        return Snapshot(self._revision, dict(self._items))


class WrittenMemo:
    """What this member last wrote to its leader-only keys (``status``, ``failsafe``), so an
    idle leader does not rewrite them every cycle (issue 15). A write is :meth:`due` unless
    these very bytes were :meth:`record`-ed for the key less than :data:`REWRITE_AFTER`
    seconds ago. The owner :meth:`clear`-s it whenever it takes, rebinds or releases the
    leader lock or removes the cluster, so a key another leader wrote meanwhile is always
    overwritten by our first write as leader; a key deleted by hand comes back within
    :data:`REWRITE_AFTER`. A failed write records nothing (the next one is due). Readers see
    the leader's position as fresh as before: it changes in the DCS on the first cycle it
    changes locally."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[bytes, float]] = {}

    def due(self, key: str, value: bytes) -> bool:
        last = self._last.pop(key, None)
        if last is None or last[0] != value or time.monotonic() - last[1] >= REWRITE_AFTER:
            return True
        self._last[key] = last
        return False

    def record(self, key: str, value: bytes) -> None:
        self._last[key] = (value, time.monotonic())

    def clear(self) -> None:
        self._last.clear()
