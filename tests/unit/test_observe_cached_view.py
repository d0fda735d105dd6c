"""The observer's DCS view from the watch-fed cache (issue 15): no request while the cache is
usable and the DCS answered recently; a read when the DCS went quiet, when our own write must
show, when the watch is detached, and when a fresh view is asked for."""

from __future__ import annotations

from types import SimpleNamespace

from pgha.agent.observe import Observer
from pgha.core.lease import keepalive_interval
from pgha.core.model import HaSettings
from pgha.dcs.base import Snapshot, WatchEvent
from pgha.dcs.memory import MemoryBackend, MemoryStore
from pgha.dcs.store import ClusterStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_700_000_000.0 + self.now


class CountingKV(MemoryStore):
    """A memory store counting full reads of the cluster prefix."""

    reads = 0

    async def get_prefix(self, prefix: str) -> Snapshot:
        if prefix.endswith("/demo/"):
            self.reads += 1
        return await super().get_prefix(prefix)


SETTINGS = HaSettings(ttl=20, loop_wait=2, retry_timeout=3)


async def observer_with_watch() -> tuple[Observer, CountingKV, Clock]:
    kv = CountingKV(MemoryBackend(), ttl=20, timeout=2.0)
    await kv.connect()
    store = ClusterStore(kv, "/service/", "demo", "m0")
    clock = Clock()
    pg = SimpleNamespace(settings=None, current_upstream=lambda: None)
    obs = Observer(store, pg, SimpleNamespace(), SETTINGS, clock)  # type: ignore[arg-type]
    store.cache.attach()  # as the agent's watch loop does
    return obs, kv, clock


async def feed(store: ClusterStore, kv: MemoryStore, key: str, since: int) -> int:
    """Deliver the watch events after ``since`` to the cache, as the watch loop would."""
    snap = await MemoryStore.get_prefix(kv, store.prefix)
    for name, item in sorted(snap.items.items(), key=lambda i: i[1].revision):
        if item.revision > since and name == store.key(key):
            await store.cache.apply(WatchEvent(item.revision, name, kv=item))
    return snap.revision


async def test_an_idle_cycle_sends_no_read_while_the_dcs_answers_keepalives() -> None:
    obs, kv, clock = await observer_with_watch()
    first = await obs.dcs_view(2.0)
    assert first is not None and obs.dcs_ok and kv.reads == 1
    window = keepalive_interval(kv.session_ttl, SETTINGS.retry_timeout) + SETTINGS.retry_timeout
    for _ in range(10):
        clock.now += 2.0
        obs.heard(clock.now - 0.5)  # the keep-alive loop's successes
        assert await obs.dcs_view(2.0) is first  # the same parsed view: nothing changed
    assert kv.reads == 1 and obs.dcs_ok
    assert obs.dcs_last_seen == clock.wall() - 0.5
    clock.now += window + 0.1  # no keep-alive answered within the window: read
    assert await obs.dcs_view(2.0) is not None and kv.reads == 2


async def test_changes_come_from_the_watch_and_a_fresh_view_is_read() -> None:
    obs, kv, clock = await observer_with_watch()
    other = ClusterStore(kv, "/service/", "demo", "m1")  # another member's writes
    first = await obs.dcs_view(2.0)
    assert first is not None and first.leader is None
    await other.acquire_leader()
    await feed(obs.store, kv, "leader", first.revision)
    obs.heard(clock.now)
    seen = await obs.dcs_view(2.0)
    assert seen is not None and seen.leader is not None and seen.leader.name == "m1"
    assert kv.reads == 1
    assert await obs.dcs_view(2.0, fresh=True) is not None and kv.reads == 2


async def test_our_own_decision_writes_are_read_back_at_once() -> None:
    obs, kv, clock = await observer_with_watch()
    await obs.dcs_view(2.0)
    obs.heard(clock.now)
    assert await obs.store.acquire_leader()  # no watch event delivered yet
    seen = await obs.dcs_view(2.0)
    assert seen is not None and seen.leader is not None and seen.leader.name == "m0"
    assert kv.reads == 2
    await obs.store.touch_member({"state": "running"})  # our member key: left to the watch
    await obs.dcs_view(2.0)
    assert kv.reads == 2


async def test_a_detached_watch_or_a_failing_dcs_means_reads() -> None:
    obs, kv, clock = await observer_with_watch()
    backend = kv.backend
    await obs.dcs_view(2.0)
    obs.heard(clock.now)
    obs.store.cache.detach()
    await obs.dcs_view(2.0)
    assert kv.reads == 2
    obs.store.cache.attach()
    await obs.dcs_view(2.0)
    assert kv.reads == 2  # read again after the detach: usable from here
    backend.fail = True
    clock.now += 60
    last = obs.view
    assert await obs.dcs_view(2.0) is last and not obs.dcs_ok
