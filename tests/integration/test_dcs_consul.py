"""ConsulStore against the Consul emulator: what the backend-independent contract suite
(test_dcs_contract.py, ``-k consul``) does not cover. The contract suite also runs against a
real ``consul agent -dev`` when a ``consul`` binary is on PATH; these tests need the emulator's
hooks (its clock, tombstone reaping, losing its state) and run against it only.

Session expiry is tested on the emulator's clock (``advance``): Consul's 10 s minimum session
TTL is kept, and a dead client's keys go 2 * TTL after its last renewal (see the emulator's
invalidation rule), so real-time expiry (about 20 s) is left to the contract suite.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from tests.support.consul_emulator import ConsulEmulator

from pgha.dcs.base import DCSError, SessionExpired, WatchEvent
from pgha.dcs.consul import LOCK_DELAY, ConsulStore
from pgha.dcs.store import ClusterStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TTL = 20.0


@pytest.fixture(scope="module")
def emulator() -> Iterator[ConsulEmulator]:
    with ConsulEmulator() as emu:
        yield emu


Factory = Callable[..., ClusterStore]


@pytest.fixture
async def make_store(emulator: ConsulEmulator, request: pytest.FixtureRequest
                     ) -> AsyncIterator[Factory]:
    opened: list[ConsulStore] = []
    scope = request.node.name.replace("[", "-").replace("]", "")

    def factory(name: str, emu: ConsulEmulator | None = None, ttl: float = TTL,
                **options: object) -> ClusterStore:
        server = emu or emulator
        kv = ConsulStore(server.host, server.port, ttl=ttl, timeout=2.0, **options)  # type: ignore[arg-type]
        opened.append(kv)
        return ClusterStore(kv, "/service/", scope, name)

    yield factory
    for kv in opened:
        await kv.close()


class Events:
    def __init__(self, store: ClusterStore, start: int) -> None:
        self.queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        self.task = asyncio.create_task(self._run(store, start))

    async def _run(self, store: ClusterStore, start: int) -> None:
        async for event in store.watch(start):
            await self.queue.put(event)

    async def until(self, pred: Callable[[WatchEvent], bool], limit: float = 10.0
                    ) -> list[WatchEvent]:
        seen: list[WatchEvent] = []
        async with asyncio.timeout(limit):
            while True:
                seen.append(await self.queue.get())
                if pred(seen[-1]):
                    return seen


@contextlib.asynccontextmanager
async def watching(store: ClusterStore, start: int) -> AsyncIterator[Events]:
    events = Events(store, start)
    try:
        yield events
    finally:
        events.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await events.task


async def test_session_parameters(make_store: Factory, emulator: ConsulEmulator) -> None:
    a = make_store("a", ttl=30)
    assert await a.acquire_leader()
    session = emulator.sessions()[a.kv.session_id or ""]
    assert session.ttl == 15 and session.behavior == "delete"
    assert session.lock_delay == pytest.approx(LOCK_DELAY) and session.checks == []
    entry = emulator.dump()[a.key("leader").lstrip("/")]
    assert entry.session == a.kv.session_id and entry.value == b"a"
    assert a.kv.session_ttl == 15.0


async def test_expiry_on_the_emulator_clock(make_store: Factory,
                                            emulator: ConsulEmulator) -> None:
    a, b = make_store("a"), make_store("b")
    assert await a.acquire_leader()
    await a.touch_member({"state": "running"})
    await b.touch_member({"state": "running"})
    await a.keepalive()  # a's last renewal
    emulator.advance(10)
    await b.keepalive()
    emulator.advance(a.kv.session_ttl * 2 - 10 - 0.1)  # just before 2 * TTL
    view = await b.load()
    assert view.leader is not None and view.leader.name == "a" and "a" in view.members
    emulator.advance(0.2)
    view = await b.load()
    assert view.leader is None and set(view.members) == {"b"}
    with pytest.raises(SessionExpired):
        await a.keepalive()
    assert a.kv.session_id is None
    await a.keepalive()  # a new session
    assert a.kv.session_id is not None
    emulator.advance(LOCK_DELAY)  # the expired session's lock-delay still guards the key
    assert await a.acquire_leader()


async def test_write_naming_a_lost_session_raises(make_store: Factory,
                                                  emulator: ConsulEmulator) -> None:
    a = make_store("a")
    await a.keepalive()
    emulator.advance(2 * a.kv.session_ttl + 1)
    with pytest.raises(SessionExpired):
        await a.acquire_leader()  # a transaction (check-not-exists + lock)
    assert a.kv.session_id is None
    assert await a.acquire_leader()  # opens a new session
    emulator.advance(2 * a.kv.session_ttl + 1)
    with pytest.raises(SessionExpired):
        await a.touch_member({"state": "running"})  # PUT ?acquire=
    await a.touch_member({"state": "running"})
    assert "a" in (await a.load()).members


async def test_ephemeral_writes(make_store: Factory, emulator: ConsulEmulator) -> None:
    old, new = make_store("a"), make_store("a")
    await old.touch_member({"state": "running", "timeline": 1})
    # a restarted member (new session) takes its key over from the old session
    await new.touch_member({"state": "running", "timeline": 2})
    key = new.key("members/a").lstrip("/")
    assert emulator.dump()[key].session == new.kv.session_id
    await old.kv.close()  # the old session's end no longer touches the key
    view = await new.load()
    assert view.members["a"].timeline == 2
    # ephemeral compare-and-set keeps the key bound to our session
    kv = new.kv
    k = new.key("eph")
    assert await kv.put(k, b"1", ephemeral=True, if_revision=0)
    assert await kv.put(k, b"x", ephemeral=True, if_revision=0) is False
    rev = (await kv.get_prefix(k)).items[k].revision
    assert await kv.put(k, b"2", ephemeral=True, if_revision=rev + 1) is False
    assert await kv.put(k, b"2", ephemeral=True, if_revision=rev)
    item = (await kv.get_prefix(k)).items[k]
    assert item.value == b"2" and item.ephemeral
    # another session's compare-and-set takes the key over, as on etcd and ZooKeeper (the
    # rebind of a leader key, DESIGN.md rule 7); a stale revision still loses
    other = make_store("o")
    assert await other.kv.put(k, b"3", ephemeral=True, if_revision=item.revision - 1) is False
    assert await other.kv.put(k, b"3", ephemeral=True, if_revision=item.revision)
    key_path = k.lstrip("/")
    assert emulator.dump()[key_path].session == other.kv.session_id


async def test_watch_names_changed_and_deleted_keys(make_store: Factory,
                                                    emulator: ConsulEmulator) -> None:
    a, b = make_store("a"), make_store("b")
    assert isinstance(b.kv, ConsulStore)
    b.kv.watch_wait = 0.5  # blocking reads return after 0.5 s without a change
    assert await a.acquire_leader()
    await a.touch_member({"state": "running"})  # stays: the prefix is never empty
    view = await b.load()
    async with watching(b, view.revision) as events:
        await a.write_status(1)
        seen = await events.until(lambda e: e.key == a.key("status"))
        assert not seen[-1].deleted and seen[-1].revision > view.revision
        assert await a.release_leader()
        seen = await events.until(lambda e: e.key == a.key("leader"))
        assert seen[-1].deleted
        # tombstones reaped: the prefix index goes backwards (seen when the blocking read
        # times out); the watch says "re-read" and goes on
        await a.kv.delete(a.key("status"))
        deleted = await events.until(lambda e: e.key == a.key("status") and e.deleted)
        emulator.reap_tombstones()
        seen = await events.until(lambda e: e.key is None, limit=5)
        assert seen[-1].revision < deleted[-1].revision
        await a.write_status(2)
        await events.until(lambda e: e.key == a.key("status") and not e.deleted)


async def test_watch_from_an_old_revision(make_store: Factory) -> None:
    a = make_store("a")
    start = (await a.load()).revision
    await a.write_status(1)
    await a.kv.put(a.key("gone"), b"x")
    await a.kv.delete(a.key("gone"))
    async with watching(a, start) as events:
        seen = await events.until(lambda e: e.key is None, limit=5)
    assert [e.key for e in seen] == [a.key("status"), None]  # deletions cannot be named


async def test_restart_losing_state_like_consul_dev(make_store: Factory) -> None:
    async with ConsulEmulator(keep_state=False) as emu:
        a, b = make_store("a", emu), make_store("b", emu)
        assert await a.acquire_leader()
        view = await b.load()
        async with watching(b, view.revision) as events:
            await emu.astop()
            with pytest.raises(DCSError) as info:
                await a.keepalive()
            assert not isinstance(info.value, SessionExpired)
            with pytest.raises(DCSError):
                await b.load()
            await emu.astart()
            with pytest.raises(SessionExpired):
                await a.keepalive()
            await a.keepalive()  # a new session
            assert await a.acquire_leader()
            await events.until(lambda e: e.key is None)  # told to re-read
            await a.write_status(3)
            await events.until(lambda e: e.key == a.key("status"))
        view = await b.load()
        assert view.leader is not None and view.leader.name == "a" and view.optime == 3


async def test_token_and_datacenter(make_store: Factory) -> None:
    async with ConsulEmulator(acl_token="s3cret") as emu:
        anonymous = make_store("x", emu)
        with pytest.raises(DCSError, match=r"403|[Pp]ermission"):
            await anonymous.load()
        a = make_store("a", emu, token="s3cret", dc="dc1")
        assert await a.acquire_leader()  # a transaction: the token must be sent there too
        await a.touch_member({"state": "running"})
        assert await a.release_leader()
        await a.keepalive()
        assert set((await a.load()).members) == {"a"}
        elsewhere = make_store("e", emu, token="s3cret", dc="mars")
        with pytest.raises(DCSError, match="datacenter"):
            await elsewhere.load()
        with pytest.raises(DCSError, match="datacenter"):
            await elsewhere.acquire_leader()


async def test_errors_and_close(make_store: Factory) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # never answers
    port = server.sockets[0].getsockname()[1]
    silent = ConsulStore("127.0.0.1", port, ttl=TTL, timeout=0.5)
    try:
        with pytest.raises(DCSError, match="timed out"):
            await silent.get_prefix("/service/")
    finally:
        await silent.close()
        server.close()
    async with ConsulEmulator() as emu:
        a = make_store("a", emu)
        assert await a.acquire_leader()
        await emu.astop()
        with pytest.raises(DCSError):
            await a.load()
        async with asyncio.timeout(5):
            await a.kv.close()  # the agent is gone: close() still returns, quietly
        with pytest.raises(DCSError, match="closed"):
            await a.load()
