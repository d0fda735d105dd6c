"""The watch-event contract of every DCS backend (issue 15: the cluster view is fed by the watch).

For every server of :data:`tests.support.dcs_servers.SERVERS`: after a put, a create, an
ephemeral create, an overwrite, an ephemeral rebind and a delete, the watch reports the key
with

* ``kv`` equal, field by field, to the :class:`~pgha.dcs.base.KeyValue` ``get_prefix`` returns
  for that key at that revision, or ``kv=None`` where :data:`CARRIES_KV` says the backend only
  names the key (the caller then reads it);
* ``event.revision == event.kv.revision`` whenever ``kv`` is given;
* a deletion: ``deleted=True``, no ``kv``, a revision above the deleted key's last one;
* revisions never going backwards along the watch.

Each step waits for its event before the next one, so backends that coalesce a burst of
changes (ZooKeeper, Consul) report every step on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from tests.support.dcs_servers import SERVERS, DcsServer, available

from pgha.dcs.base import KeyValue, KVStore, WatchEvent

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

TIMEOUT = 2.0  # per-request timeout of the clients
WATCH_BOUND = 10.0  # a change is reported within this

#: whether the backend's watch events carry ``kv`` for created/changed keys
CARRIES_KV: dict[str, bool] = {
    "etcd": True,  # the gRPC watch event's mvccpb.KeyValue
    "etcd-http": True,  # the gateway's JSON watch event
    "zookeeper": True,  # the fire's re-read returns data with stat
    "consul-emulator": True,  # the blocking recursive read returns the values
    "consul": True,
}


@pytest.fixture(scope="module", params=sorted(SERVERS), ids=sorted(SERVERS))
def dcs(request: pytest.FixtureRequest) -> Iterator[tuple[str, DcsServer]]:
    name: str = request.param
    reason = available(name)
    if reason is not None:
        pytest.skip(f"{name}: {reason}")
    server = SERVERS[name][0]()
    try:
        yield name, server
    finally:
        server.close()


@contextlib.asynccontextmanager
async def connected(server: DcsServer) -> AsyncIterator[KVStore]:
    kv = server.make_kv(float(getattr(server, "contract_ttl", 4.0)), TIMEOUT)
    await kv.connect()
    try:
        yield kv
    finally:
        async with asyncio.timeout(10):
            await kv.close()


class Events:
    """``kv.watch(prefix, start)`` collected by a task of its own."""

    def __init__(self, kv: KVStore, prefix: str, start: int) -> None:
        self.queue: asyncio.Queue[WatchEvent | BaseException] = asyncio.Queue()
        self.seen: list[WatchEvent] = []
        self.task = asyncio.create_task(self._run(kv, prefix, start))

    async def _run(self, kv: KVStore, prefix: str, start: int) -> None:
        try:
            async for event in kv.watch(prefix, start):
                self.queue.put_nowait(event)
        except Exception as exc:  # handed to the test by for_key()
            self.queue.put_nowait(exc)

    async def for_key(self, key: str | None, what: str) -> WatchEvent:
        """The next event naming ``key``; other events are skipped, ``key=None`` ones too
        unless asked for (a backend may ask for a re-read, e.g. ZooKeeper's first read; the
        change is still named after it)."""
        try:
            async with asyncio.timeout(WATCH_BOUND):
                while True:
                    item = await self.queue.get()
                    if isinstance(item, BaseException):
                        raise AssertionError(f"watch failed waiting for {what}: {item!r}")
                    self.seen.append(item)
                    if item.key == key:
                        return item
        except TimeoutError:
            raise AssertionError(f"no event for {what}; seen: {self.seen}") from None

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def as_read(kv: KVStore, key: str) -> KeyValue | None:
    return (await kv.get_prefix(key)).items.get(key)


def check_written(name: str, event: WatchEvent, read: KeyValue | None, what: str) -> None:
    assert read is not None, f"{what}: the key is not there"
    assert not event.deleted, f"{what}: reported as a deletion: {event}"
    if event.kv is None:
        assert not CARRIES_KV[name], f"{what}: {name} should carry kv: {event}"
        assert event.revision == read.revision, f"{what}: {event} vs read {read}"
        return
    assert dataclasses.asdict(event.kv) == dataclasses.asdict(read), what  # field by field
    assert event.revision == event.kv.revision, f"{what}: {event}"


async def test_watch_events_carry_the_key_as_read(dcs: tuple[str, DcsServer]) -> None:
    name, server = dcs
    prefix = f"/service/watchkv-{uuid.uuid4().hex[:10]}/"
    plain, created, leader = prefix + "config", prefix + "initialize", prefix + "leader"
    async with connected(server) as kv, connected(server) as other:
        await other.put(prefix + "history", b"[]")  # the prefix exists before the watch
        events = Events(kv, prefix, (await kv.get_prefix(prefix)).revision)
        try:
            if name == "zookeeper":  # armed once its first read asked for a re-read
                await events.for_key(None, "the first read")

            async def step(key: str, what: str) -> None:
                event = await events.for_key(key, what)
                check_written(name, event, await as_read(kv, key), what)

            assert await kv.put(plain, b"v1")
            await step(plain, "put of a plain key")
            assert await kv.put(plain, b"v2")
            await step(plain, "overwrite of a plain key")
            assert await kv.create(created, b"7000")
            await step(created, "create")
            assert await other.create(leader, b"other", ephemeral=True)
            await step(leader, "ephemeral create by another client")
            assert (await as_read(kv, leader)).session == other.session_id  # type: ignore[union-attr]
            before = await as_read(kv, leader)
            assert before is not None
            assert await kv.put(leader, b"me", ephemeral=True, if_revision=before.revision)
            await step(leader, "ephemeral rebind (compare-and-set)")
            assert (await as_read(kv, leader)).session == kv.session_id  # type: ignore[union-attr]
            last = await as_read(kv, plain)
            assert last is not None
            assert await kv.delete(plain)
            event = await events.for_key(plain, "delete")
            assert event.deleted and event.kv is None, event
            assert event.revision > last.revision, (event, last)
            assert event.revision <= (await kv.get_prefix(prefix)).revision
            revisions = [e.revision for e in events.seen]
            assert revisions == sorted(revisions), events.seen
        finally:
            await events.stop()


async def test_a_burst_is_reported_in_revision_order(dcs: tuple[str, DcsServer]) -> None:
    """Two keys written back to back (the later one first in path order) while the consumer
    does not pull, so that backends diffing a whole re-read see both in one answer (ZooKeeper:
    the fires queue up until the next pull; Consul: the first read names every key written
    since ``start``; etcd replays its history): the events still come in revision order, each
    with its own key's revision and value."""
    name, server = dcs
    prefix = f"/service/watchkv-{uuid.uuid4().hex[:10]}/"
    first, second = prefix + "status", prefix + "failover"  # "failover" < "status"
    async with connected(server) as kv:
        await kv.put(prefix + "history", b"[]")
        watch = kv.watch(prefix, (await kv.get_prefix(prefix)).revision)
        try:
            if name == "zookeeper":  # its first read (arming the watches) asks for a re-read
                assert (await anext(watch)).key is None
            assert await kv.put(first, b"s")
            assert await kv.put(second, b"f")
            await asyncio.sleep(0.5)  # both changes happened before the next pull
            seen: list[WatchEvent] = []
            async with asyncio.timeout(WATCH_BOUND):
                while {first, second} - {e.key for e in seen}:
                    seen.append(await anext(watch))
            got = {e.key: e for e in seen if e.key is not None}
            for key in (first, second):
                check_written(name, got[key], await as_read(kv, key), f"burst write of {key}")
            assert got[first].revision < got[second].revision, seen
            revisions = [e.revision for e in seen]
            assert revisions == sorted(revisions), seen
        finally:
            await watch.aclose()  # type: ignore[attr-defined]
