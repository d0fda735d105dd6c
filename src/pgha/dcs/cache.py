"""A watch-fed copy of every key under the cluster prefix (issue 15: no full read per cycle).

:class:`PrefixCache` holds the keys of one prefix as of a store revision. It is filled by a full
read (:meth:`PrefixCache.reload`, one ``get_prefix``) and then kept current by the watch events
given to :meth:`PrefixCache.apply`:

* an event with ``kv`` replaces that key; a deletion removes it;
* an event naming a key without ``kv`` (backends that only know *which* key changed) makes
  the cache read that key (one ``get_prefix`` of the exact key; any other key it returns,
  sharing the name as a prefix, is ignored);
* an event with ``key=None`` (a watch gap: reconnect, compaction, lost events) marks the
  cache stale; :meth:`invalidate` does the same for the caller's own reasons (the watch
  ended, the session changed). A stale cache answers nothing until the next full read.

Events at or below the cache's revision are ignored (already reflected). :meth:`snapshot`
returns the cached :class:`~pgha.dcs.base.Snapshot` only when the cache is current, else
None: the caller then reads the store (and :meth:`reload` refills it). The cache never
decides whether the store is reachable: it only saves reads. Not thread-safe; one event
loop. A failed read (``DCSError``/``TimeoutError``) propagates and leaves the cache stale.
"""

from __future__ import annotations

import time

from pgha.dcs.base import KeyValue, KVStore, Snapshot, WatchEvent

#: seconds after which a leader-only key is rewritten even with unchanged content
REWRITE_AFTER = 60.0


class PrefixCache:
    """See the module docstring."""

    def __init__(self, kv: KVStore, prefix: str) -> None:
        self.kv = kv
        self.prefix = prefix
        self._items: dict[str, KeyValue] = {}
        self._revision = 0
        self._current = False
        self.full_reads = 0  # how many times the whole prefix was read (for tests/metrics)

    @property
    def current(self) -> bool:
        """The cache reflects every change up to :attr:`revision` and no gap since."""
        return self._current

    @property
    def revision(self) -> int:
        """The store revision the cache reflects (0 before the first read)."""
        return self._revision

    def invalidate(self) -> None:
        """Answer nothing until the next :meth:`reload` (a gap the caller knows of)."""
        self._current = False

    async def reload(self) -> Snapshot:
        """Read the whole prefix and replace the cache with it; the cache is current again."""
        self._current = False
        snapshot = await self.kv.get_prefix(self.prefix)
        self.full_reads += 1
        self._items = dict(snapshot.items)
        self._revision = snapshot.revision
        self._current = True
        return snapshot

    async def apply(self, event: WatchEvent) -> None:
        """Bring the cache up to ``event`` (see the module docstring)."""
        if event.key is None:
            self._current = False
            return
        if not event.key.startswith(self.prefix):
            return
        if self._current and event.revision <= self._revision:
            return
        if event.deleted:
            self._items.pop(event.key, None)
        elif event.kv is not None:
            self._items[event.key] = event.kv
        else:
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
            self._revision = max(self._revision, read.revision)
        self._revision = max(self._revision, event.revision)

    def snapshot(self) -> Snapshot | None:
        """The cached prefix when current, else None (read the store)."""
        if not self._current:
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
