"""PrefixCache: watch events applied, per-key reads when an event carries no kv, full re-read
after a gap (``key=None``: reconnect, compaction)."""

from __future__ import annotations

import asyncio

import pytest

from pgha.dcs.base import DCSError, KeyValue, Snapshot, WatchEvent
from pgha.dcs.cache import PrefixCache
from pgha.dcs.memory import MemoryBackend, MemoryStore

P = "/s/d/"


async def _store() -> MemoryStore:
    kv = MemoryStore(MemoryBackend(), ttl=10.0, timeout=2.0)
    await kv.connect()
    return kv


async def _reload_held_in_flight(
        kv: MemoryStore) -> tuple[PrefixCache, asyncio.Event, asyncio.Task[Snapshot]]:
    """An attached cache whose full read has been answered but is held (until ``gate`` is
    set) before the cache sees the answer: what happens meanwhile races with the read."""
    cache = PrefixCache(kv, P)
    cache.attach()
    gate = asyncio.Event()
    real = kv.get_prefix

    async def held(prefix: str) -> Snapshot:
        snapshot = await real(prefix)
        await gate.wait()
        return snapshot

    kv.get_prefix = held  # type: ignore[method-assign]
    reading = asyncio.create_task(cache.reload())
    await asyncio.sleep(0)
    return cache, gate, reading


async def test_a_cache_answers_nothing_before_the_first_read() -> None:
    cache = PrefixCache(await _store(), P)
    cache.attach()
    assert cache.snapshot() is None and not cache.current


async def test_a_cache_answers_only_while_its_watch_is_attached() -> None:
    cache = PrefixCache(await _store(), P)
    await cache.reload()
    assert cache.current and cache.snapshot() is None  # no watch feeds it yet
    cache.attach()
    assert cache.snapshot() is not None
    cache.detach()  # the watch ended: changes may be missed from now on
    assert cache.snapshot() is None and not cache.current
    cache.attach()
    assert cache.snapshot() is None  # stale until read again
    await cache.reload()
    assert cache.snapshot() is not None


async def test_our_own_write_makes_the_next_answer_a_read() -> None:
    kv = await _store()
    cache = PrefixCache(kv, P)
    cache.attach()
    await cache.reload()
    cache.wrote()  # announced before the write is sent
    await kv.put(P + "leader", b"pg1")
    assert cache.snapshot() is None  # reading our own write never waits for the watch
    snap = await cache.reload()
    assert cache.snapshot() == snap and P + "leader" in snap.items


async def test_a_write_announced_during_a_read_keeps_the_cache_unusable() -> None:
    kv = await _store()
    cache, gate, reading = await _reload_held_in_flight(kv)
    cache.wrote()
    await kv.put(P + "leader", b"pg1")
    gate.set()
    await reading
    assert cache.snapshot() is None  # the read may predate the write


async def test_events_delivered_during_a_read_are_applied_after_it() -> None:
    kv = await _store()
    cache, gate, reading = await _reload_held_in_flight(kv)
    await kv.put(P + "leader", b"pg1")  # after the read was answered
    rev = (await MemoryStore.get_prefix(kv, P)).revision
    await cache.apply(WatchEvent(rev, P + "leader", kv=KeyValue(P + "leader", b"pg1", rev)))
    gate.set()
    await reading
    snap = cache.snapshot()
    assert snap is not None and snap.items[P + "leader"].value == b"pg1"
    assert snap.revision == rev


@pytest.mark.parametrize("event", ["gap", "no kv"])
async def test_a_gap_or_an_unknown_value_during_a_read_leaves_the_cache_stale(
        event: str) -> None:
    kv = await _store()
    cache, gate, reading = await _reload_held_in_flight(kv)
    await kv.put(P + "leader", b"pg1")
    rev = (await MemoryStore.get_prefix(kv, P)).revision
    await cache.apply(WatchEvent(rev, None if event == "gap" else P + "leader"))
    gate.set()
    await reading
    assert cache.snapshot() is None and not cache.current


async def test_events_with_kv_are_applied_without_reads() -> None:
    kv = await _store()
    await kv.put(P + "config", b"{}")
    cache = PrefixCache(kv, P)
    cache.attach()
    first = await cache.reload()
    assert set(first.items) == {P + "config"} and cache.full_reads == 1
    rev = first.revision
    await cache.apply(WatchEvent(rev + 1, P + "members/pg1",
                                 kv=KeyValue(P + "members/pg1", b"x", rev + 1)))
    await cache.apply(WatchEvent(rev + 2, P + "config", deleted=True))
    snap = cache.snapshot()
    assert snap is not None and snap.revision == rev + 2
    assert set(snap.items) == {P + "members/pg1"}
    assert snap.items[P + "members/pg1"].value == b"x"
    assert cache.full_reads == 1


async def test_old_events_and_other_prefixes_are_ignored() -> None:
    kv = await _store()
    await kv.put(P + "config", b"new")
    cache = PrefixCache(kv, P)
    cache.attach()
    snap = await cache.reload()
    await cache.apply(WatchEvent(snap.revision, P + "config",
                                 kv=KeyValue(P + "config", b"old", snap.revision - 1)))
    await cache.apply(WatchEvent(snap.revision + 5, "/s/other/config",
                                 kv=KeyValue("/s/other/config", b"x", snap.revision + 5)))
    now = cache.snapshot()
    assert now is not None and now.items[P + "config"].value == b"new"
    assert set(now.items) == {P + "config"}


async def test_an_event_without_kv_reads_that_key() -> None:
    kv = await _store()
    cache = PrefixCache(kv, P)
    cache.attach()
    await cache.reload()
    await kv.put(P + "leader", b"pg2")
    await kv.put(P + "leader2", b"other")  # shares the name as a prefix: not taken for it
    snap = await kv.get_prefix(P)
    await cache.apply(WatchEvent(snap.revision, P + "leader"))
    now = cache.snapshot()
    assert now is not None and set(now.items) == {P + "leader"}
    assert now.items[P + "leader"].value == b"pg2"
    assert cache.full_reads == 1


async def test_a_gap_makes_the_cache_stale_until_a_full_read() -> None:
    kv = await _store()
    cache = PrefixCache(kv, P)
    cache.attach()
    await cache.reload()
    await kv.put(P + "leader", b"pg1")
    await cache.apply(WatchEvent(0))  # reconnect / compaction: which keys changed is unknown
    assert cache.snapshot() is None
    snap = await cache.reload()
    assert set(snap.items) == {P + "leader"} and cache.full_reads == 2
    assert cache.snapshot() == snap
    cache.invalidate()
    assert cache.snapshot() is None


async def test_a_failed_read_leaves_the_cache_stale() -> None:
    backend = MemoryBackend()
    kv = MemoryStore(backend, ttl=10.0, timeout=2.0)
    await kv.connect()
    cache = PrefixCache(kv, P)
    cache.attach()
    await cache.reload()
    backend.fail = True
    with pytest.raises(DCSError):
        await cache.apply(WatchEvent(99, P + "leader"))
    assert cache.snapshot() is None
    with pytest.raises(DCSError):
        await cache.reload()
    assert cache.snapshot() is None


# --------------------------------------------------------------------------- leader-only keys


async def test_an_unchanged_status_is_not_written_again_until_the_lock_is_taken() -> None:
    from pgha.dcs.store import ClusterStore

    kv = await _store()
    store = ClusterStore(kv, "/s", "d", "pg1")
    await store.write_status(100)
    rev = (await kv.get_prefix(store.key("status"))).revision
    await store.write_status(100)
    await store.write_failsafe({"pg1": "http://a"})
    await store.write_failsafe({"pg1": "http://a"})
    snap = await kv.get_prefix("/s/d/")
    assert snap.items[store.key("status")].revision == rev  # the second write was skipped
    failsafe_rev = snap.items[store.key("failsafe")].revision
    await kv.put(store.key("status"), b"written by another leader")
    assert await store.acquire_leader()  # taking the lock forgets what we wrote
    await store.write_status(100)
    await store.write_failsafe({"pg1": "http://a"})
    snap = await kv.get_prefix("/s/d/")
    assert snap.items[store.key("status")].value != b"written by another leader"
    assert snap.items[store.key("failsafe")].revision > failsafe_rev
    await store.write_status(101)  # a changed position is written at once
    assert b"101" in (await kv.get_prefix(store.key("status"))).items[store.key("status")].value


async def test_events_sharing_a_revision_are_all_applied() -> None:
    """One transaction (etcd) or one ZooKeeper watch fire changes several keys under one
    revision: each of them reaches the cache."""
    kv = await _store()
    cache = PrefixCache(kv, P)
    cache.attach()
    rev = (await cache.reload()).revision
    for key in ("leader", "members/pg1"):
        await cache.apply(WatchEvent(rev + 1, P + key, kv=KeyValue(P + key, b"x", rev + 1)))
    await kv.put(P + "members/pg2", b"y")
    await cache.apply(WatchEvent(rev + 1, P + "members/pg2"))  # no kv: read
    snap = cache.snapshot()
    assert snap is not None
    assert set(snap.items) == {P + "leader", P + "members/pg1", P + "members/pg2"}
