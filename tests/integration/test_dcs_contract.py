"""The DCS contract suite: the same cases against every real DCS server the tests can start.

Every test is parametrized by the server name of :data:`tests.support.dcs_servers.SERVERS`
(test IDs such as ``test_acquire_is_exclusive[etcd]``, so ``-k zookeeper`` selects a backend).
A server whose availability check gives a reason is skipped with that reason. Each server is
started once per module (module-scoped fixture) and closed at the end; each test talks to it
through fresh clients (``server.make_kv(ttl, timeout)`` wrapped in a ClusterStore) in a scope of
its own, so tests never see each other's keys, and closes every client and task it started.

What the suite needs from a :class:`~tests.support.dcs_servers.DcsServer` adapter:

* the factory returns a running server; ``start()``/``stop()`` restart it on the same address
  (test_survives_server_restart stops and starts it, and always leaves it running);
  ``make_kv(ttl, timeout)`` returns an unconnected KVStore (the suite calls ``connect()``
  and, at the end, ``close()``); ``close()`` stops the server for good.
* optional ``contract_ttl`` (float, default :data:`DEFAULT_TTL`): the ``ttl`` the suite's clients
  use. A backend whose sessions have a minimum TTL sets it higher (Consul: 20, since its session
  TTL is ``ttl / 2`` and Consul refuses less than 10 s).
* optional ``abandon(kv)`` (sync or async): make the client ``kv`` go silent like a node that
  died, WITHOUT closing or revoking its session, so that the session is left to expire on the
  server side (e.g. ZooKeeper: stop kazoo's background pings / cut its socket). The suite calls
  it right after the client's last ``keepalive()`` and afterwards only calls ``kv.close()`` at
  teardown (which must not raise). Without the hook the suite simply stops calling
  ``keepalive()`` and never touches the client again, which is a dead node for stores whose
  sessions are renewed only by explicit requests (etcd leases, Consul sessions).

Cases: exclusive acquisition under concurrency; session expiry (bounds: gone within
``kv.ttl + EXPIRY_TOLERANCE`` of the last renewal, present until ``session_ttl - EARLY_MARGIN``);
keepalive holds the session; close() removes ephemeral keys at once; compare-and-set conflicts;
the session a key is bound to and the rebind of the leader key (DESIGN.md safety rule 7);
the session switch of a TTL change (keys moved to the new session without a gap);
watch (leader deleted, member added, ends on close); survival of a server restart; garbage
values ignored by ClusterStore.load; get_prefix scoping and revisions; initialize semantics.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from tests.support.dcs_servers import SERVERS, DcsServer, available

from pgha.core.model import HistoryEntry
from pgha.dcs.base import DCSError, KVStore, WatchEvent
from pgha.dcs.store import ClusterStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

T = TypeVar("T")

NAMESPACE = "/service/"
DEFAULT_TTL = 4.0  # when the adapter has no ``contract_ttl``
TIMEOUT = 2.0  # per-request timeout of the suite's clients
EXPIRY_TOLERANCE = 1.5  # keys of a dead client are gone within kv.ttl + this (seconds)
EARLY_MARGIN = 0.5  # ... and still there until session_ttl - this after the last renewal
WATCH_BOUND = 5.0  # a change is reported by a running watch within this
RECOVERY_BOUND = 20.0  # after a server restart, calls work again within this
CLOSE_BOUND = 10.0  # KVStore.close() returns within this
POLL = 0.1


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(SERVERS), ids=sorted(SERVERS))
def dcs(request: pytest.FixtureRequest) -> Iterator[DcsServer]:
    """One running server of the parametrized kind for the whole module."""
    name: str = request.param
    reason = available(name)
    if reason is not None:
        pytest.skip(f"{name}: {reason}")
    factory = SERVERS[name][0]
    server = factory()  # returns a running server
    try:
        yield server
    finally:
        server.close()


class Clients:
    """Makes connected ClusterStores of one test's scope and closes them all at the end."""

    def __init__(self, server: DcsServer) -> None:
        self.server = server
        self.scope = f"contract-{uuid.uuid4().hex[:10]}"
        self.ttl = float(getattr(server, "contract_ttl", DEFAULT_TTL))
        self._open: list[KVStore] = []

    async def new(self, name: str, *, scope: str | None = None) -> ClusterStore:
        kv = self.server.make_kv(self.ttl, TIMEOUT)
        self._open.append(kv)
        await kv.connect()
        return ClusterStore(kv, NAMESPACE, scope or self.scope, name)

    async def close(self, store: ClusterStore) -> None:
        """Close one client now (and not again at the end)."""
        if store.kv in self._open:
            self._open.remove(store.kv)
        async with asyncio.timeout(CLOSE_BOUND):
            await store.kv.close()

    async def abandon(self, store: ClusterStore) -> None:
        """Let ``store`` die silently: its session is neither renewed nor closed (see the
        module docstring for the adapter's optional ``abandon`` hook)."""
        hook = getattr(self.server, "abandon", None)
        if hook is not None:
            result = hook(store.kv)
            if inspect.isawaitable(result):
                await result

    async def close_all(self) -> None:
        failures: list[str] = []
        for kv in self._open:
            try:
                async with asyncio.timeout(CLOSE_BOUND):
                    await kv.close()
            except Exception as exc:  # close every client, report after
                failures.append(f"{type(kv).__name__}.close(): {exc!r}")
        self._open.clear()
        if failures:
            raise AssertionError("closing clients failed: " + "; ".join(failures))


@pytest.fixture
async def clients(dcs: DcsServer) -> AsyncIterator[Clients]:
    c = Clients(dcs)
    try:
        yield c
    finally:
        await c.close_all()


# -- helpers ------------------------------------------------------------------------------------


class Watch:
    """A running ``store.watch(start)`` collected into a queue by a task of its own."""

    _END = object()

    def __init__(self, store: ClusterStore, start: int) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self.seen: list[WatchEvent] = []
        self.ended = False
        self._task = asyncio.create_task(self._run(store, start))

    async def _run(self, store: ClusterStore, start: int) -> None:
        try:
            async for event in store.watch(start):
                self._queue.put_nowait(event)
        except Exception as exc:  # handed to the test by next()
            self._queue.put_nowait(exc)
            return
        self._queue.put_nowait(self._END)

    async def next(self, pred: Callable[[WatchEvent], bool], limit: float, what: str
                   ) -> WatchEvent:
        """The first further event matching ``pred``; AssertionError after ``limit`` s."""
        start = len(self.seen)
        try:
            async with asyncio.timeout(limit):
                while True:
                    item = await self._queue.get()
                    if item is self._END:
                        self.ended = True
                        raise AssertionError(f"watch ended while waiting for {what}")
                    if isinstance(item, Exception):
                        raise AssertionError(f"watch failed waiting for {what}: {item!r}")
                    event: WatchEvent = item
                    self.seen.append(event)
                    if pred(event):
                        return event
        except TimeoutError:
            raise AssertionError(
                f"no watch event for {what} within {limit}s; events: {self.seen[start:]}"
            ) from None

    async def wait_ended(self, limit: float) -> None:
        async with asyncio.timeout(limit):
            while not self.ended:
                item = await self._queue.get()
                if item is self._END:
                    self.ended = True
                elif isinstance(item, Exception):
                    raise AssertionError(f"watch failed instead of ending: {item!r}")

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def watching(store: ClusterStore, start: int) -> AsyncIterator[Watch]:
    watch = Watch(store, start)
    try:
        yield watch
    finally:
        await watch.stop()


async def eventually(fn: Callable[[], Awaitable[T]], limit: float, what: str) -> T:
    """``await fn()`` until it does not raise DCSError; AssertionError after ``limit`` s."""
    deadline = time.monotonic() + limit
    errors: list[str] = []
    while True:
        try:
            return await fn()
        except DCSError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still failing after {limit}s: "
                                     f"{errors[:2]} ... {errors[-2:]}") from exc
            await asyncio.sleep(0.2)


async def revision_of(store: ClusterStore, name: str) -> int:
    key = store.key(name)
    kv = (await store.kv.get_prefix(key)).items.get(key)
    assert kv is not None, f"{key} missing"
    return kv.revision


async def keep_alive(store: ClusterStore, interval: float) -> None:
    while True:
        await store.keepalive()
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def kept_alive(store: ClusterStore) -> AsyncIterator[asyncio.Task[None]]:
    """Renew ``store``'s session in the background (a few times per session TTL)."""
    interval = max(0.2, min(1.0, store.kv.session_ttl / 4))
    task = asyncio.create_task(keep_alive(store, interval))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- (1) exclusive acquisition ------------------------------------------------------------------


async def test_acquire_is_exclusive(clients: Clients) -> None:
    stores = [await clients.new(f"pg{i}") for i in range(3)]
    attempts = [stores[i % 3] for i in range(20)]
    results = await asyncio.gather(*(s.acquire_leader() for s in attempts))
    assert results.count(True) == 1, results
    winner = attempts[results.index(True)]
    view = await stores[1].load()
    assert view.leader is not None and view.leader.name == winner.name
    leader_kv = (await stores[2].kv.get_prefix(winner.key("leader"))).items[winner.key("leader")]
    assert leader_kv.ephemeral and leader_kv.value == winner.name.encode()
    session = winner.kv.session_id
    assert session is not None
    await winner.keepalive()
    assert winner.kv.session_id == session  # all its concurrent attempts used one session
    assert await winner.acquire_leader() is False  # held, by us as well
    # the lock goes to exactly one of the others once released
    assert await winner.release_leader()
    others = [s for s in stores if s is not winner]
    results = await asyncio.gather(*(s.acquire_leader() for s in others * 4))
    assert results.count(True) == 1, results


# -- (2) session expiry -----------------------------------------------------------------------


async def test_session_expiry_removes_keys(clients: Clients) -> None:
    """A client that stops renewing (dead node) loses its leader and member keys within
    ``ttl + EXPIRY_TOLERANCE``, not before ``session_ttl - EARLY_MARGIN``; a client that keeps
    renewing keeps its keys and its session."""
    a, b = await clients.new("a"), await clients.new("b")
    ttl, session_ttl = a.kv.ttl, a.kv.session_ttl
    assert 0 < session_ttl <= ttl

    await b.touch_member({"role": "replica", "state": "running"})
    b_opened = time.monotonic()
    b_session = b.kv.session_id
    assert await a.acquire_leader()
    await a.touch_member({"role": "primary", "state": "running"})
    sent = time.monotonic()
    await a.keepalive()  # the last renewal
    answered = time.monotonic()
    await clients.abandon(a)
    earliest, latest = sent + session_ttl - EARLY_MARGIN, answered + ttl + EXPIRY_TOLERANCE

    gone_at: dict[str, float] = {}
    async with kept_alive(b) as keeper:
        while len(gone_at) < 2:
            asked = time.monotonic()
            view = await b.load()
            got = time.monotonic()
            present = {"leader": view.leader is not None and view.leader.name == "a",
                       "member": "a" in view.members}
            for what, there in present.items():
                if there:
                    assert asked <= latest, (
                        f"a's {what} key still there {asked - answered:.2f}s after its last "
                        f"renewal (ttl {ttl}, tolerance {EXPIRY_TOLERANCE})")
                elif what not in gone_at:
                    assert got >= earliest, (
                        f"a's {what} key gone {got - sent:.2f}s after its last renewal, "
                        f"before session_ttl {session_ttl} - {EARLY_MARGIN}")
                    gone_at[what] = got
            assert "b" in view.members, "b's member key vanished although b renews it"
            await asyncio.sleep(POLL)
        # b outlives the point where its keys would be gone without renewals
        await asyncio.sleep(max(0.0, b_opened + ttl + EXPIRY_TOLERANCE + 0.5 - time.monotonic()))
        assert not keeper.done(), keeper
    view = await b.load()
    assert "b" in view.members and view.leader is None
    assert b.kv.session_id == b_session


# -- (3) close ------------------------------------------------------------------------------


async def test_close_removes_ephemeral_keys_at_once(clients: Clients) -> None:
    a, b = await clients.new("a"), await clients.new("b")
    assert await a.acquire_leader()
    await a.touch_member({"state": "running"})
    assert await a.claim_initialize()
    await a.write_status(5)
    await clients.close(a)
    view = await b.load()
    assert view.leader is None and view.members == {}
    assert view.initialize == "" and view.optime == 5  # persistent keys stay
    with pytest.raises(DCSError):
        await a.load()


# -- (4) compare-and-set conflicts --------------------------------------------------------------


async def test_cas_conflicts_are_reported_not_overwritten(clients: Clients) -> None:
    a, b = await clients.new("a"), await clients.new("b")
    kv = a.kv
    k = a.key("x")

    async def value() -> bytes | None:
        item = (await b.kv.get_prefix(k)).items.get(k)
        return None if item is None else item.value

    assert await kv.put(k, b"1")
    stale = await revision_of(a, "x")
    assert await kv.put(k, b"2", if_revision=stale)
    current = await revision_of(a, "x")
    assert current != stale
    assert await kv.put(k, b"3", if_revision=stale) is False
    assert await value() == b"2"
    assert await kv.delete(k, if_revision=stale) is False
    assert await kv.delete(k, if_value=b"other") is False
    assert await kv.delete(k, if_value=b"2", if_revision=stale) is False
    assert await kv.delete(k, if_value=b"other", if_revision=current) is False
    assert await value() == b"2"
    assert await kv.delete(k, if_value=b"2", if_revision=current)
    assert await value() is None
    assert await kv.delete(k) is False  # missing
    assert await kv.delete(k, if_value=b"2") is False
    assert await kv.create(k, b"4")
    assert await kv.create(k, b"5") is False
    assert await value() == b"4"

    # dynamic configuration
    assert await a.create_config({"ttl": 20})
    assert await b.create_config({"ttl": 30}) is False
    stale = await revision_of(a, "config")
    assert await a.write_config({"ttl": 21}, if_revision=stale)
    assert await b.write_config({"ttl": 22}, if_revision=stale) is False
    assert (await b.load()).settings.ttl == 21.0

    # initialize holding another system identifier
    assert await a.set_initialize("7300000000000000001")
    assert await b.set_initialize("7300000000000000002") is False
    assert (await b.load()).initialize == "7300000000000000001"

    # leader lock
    assert await a.acquire_leader()
    assert await b.acquire_leader() is False
    assert await b.release_leader() is False
    view = await b.load()
    assert view.leader is not None and view.leader.name == "a"

    # history appended by two members at once: both entries kept
    results = await asyncio.gather(a.append_history(HistoryEntry(1, 100, "r", "t")),
                                   b.append_history(HistoryEntry(2, 200, "r", "t", "b")))
    assert list(results) == [True, True]
    assert [e.timeline for e in await b.read_history()] == [1, 2]


# -- (4b) the session a key is bound to; rebinding the leader key (DESIGN.md rule 7) ----------


async def test_leader_key_session_and_rebind(clients: Clients) -> None:
    """``KeyValue.session`` / ``Leader.session`` name the session a key is bound to, spelled
    as the binding client's ``session_id``; an agent restarted under the same name (a new
    client: a new session) cannot release its predecessor's key and moves it onto its own
    session only by a compare-and-set on the revision it read."""
    old = await clients.new("pg0")
    assert await old.acquire_leader()
    await old.touch_member({"state": "running"})
    await old.write_status(1)
    key = old.key("leader")
    items = (await old.kv.get_prefix(old.prefix)).items
    assert old.kv.session_id is not None
    assert items[key].session == old.kv.session_id and items[key].ephemeral
    assert items[old.key("members/pg0")].session == old.kv.session_id
    assert items[old.key("status")].session is None and not items[old.key("status")].ephemeral

    new = await clients.new("pg0")
    await new.keepalive()
    assert new.kv.session_id is not None and new.kv.session_id != old.kv.session_id
    seen = (await new.load()).leader
    assert seen is not None and seen.name == "pg0" and seen.session == old.kv.session_id
    assert await new.release_leader() is False  # merely holds our name: left alone
    assert await new.rebind_leader(seen.revision + 1000) is False  # not the revision read
    assert (await new.load()).leader == seen
    assert await new.rebind_leader(seen.revision)
    rebound = (await new.load()).leader
    assert rebound is not None and rebound.name == "pg0"
    assert rebound.session == new.kv.session_id and rebound.revision != seen.revision
    # the predecessor (or a duplicate) cannot move it back from its stale read, nor release it
    assert await old.rebind_leader(seen.revision) is False
    assert await old.release_leader() is False
    # the predecessor's session ends: the key, now bound to the new session, stays
    await clients.close(old)
    await asyncio.sleep(0.5)
    after = (await new.load()).leader
    assert after is not None and after.session == new.kv.session_id
    assert await new.release_leader()
    assert (await new.load()).leader is None


# -- (4c) a TTL change: the session switch (DESIGN.md rules 2 and 7) ---------------------------


async def test_session_switch_moves_keys_without_a_gap(clients: Clients) -> None:
    """``switch_session(ttl)`` moves our leader and member keys to a new session granted for
    the new ``ttl``: a reader polling throughout never finds the leader key absent nor bound
    to anything but the old or the new session; afterwards both keys are bound to the new
    session, the old one is closed (no retired session left) and its end removed nothing;
    a watch running from before the switch keeps reporting changes."""
    a, b = await clients.new("pg0"), await clients.new("pg1")
    assert await a.acquire_leader()
    await a.touch_member({"state": "running"})
    await b.touch_member({"state": "running"})
    old, old_session_ttl = a.kv.session_id, a.kv.session_ttl
    leader, member = a.key("leader"), a.key("members/pg0")
    seen: list[str | None] = []
    done = asyncio.Event()

    async def poll() -> None:
        while not done.is_set():
            item = (await b.kv.get_prefix(leader)).items.get(leader)
            seen.append(None if item is None else item.session)
            await asyncio.sleep(0.005)

    start = (await b.load()).revision
    async with watching(b, start) as watch:
        poller = asyncio.create_task(poll())
        try:
            result = await a.switch_session(clients.ttl * 2)
        finally:
            done.set()
            await poller
        assert result.old == old and result.leader is True
        assert result.new == a.kv.session_id and result.new not in (None, old)
        assert seen and None not in seen, seen
        assert set(seen) <= {old, result.new}, (set(seen), old, result.new)
        assert a.kv.ttl == clients.ttl * 2 and a.kv.retired_session_id is None
        assert a.kv.session_ttl > old_session_ttl
        await a.keepalive()
        items = (await b.kv.get_prefix(a.prefix)).items
        assert items[leader].session == result.new and items[member].session == result.new
        assert items[a.key("members/pg1")].session == b.kv.session_id  # others untouched
        view = await b.load()
        assert view.leader is not None and view.leader.session == result.new
        # the watch re-arms on the new client where it has to: a release is still reported
        assert await a.release_leader()
        event = await watch.next(lambda e: e.key in (None, leader) and (
            e.key is None or e.deleted), WATCH_BOUND, "leader key released after the switch")
        if event.key is None:
            assert (await b.load()).leader is None


async def test_session_switch_leaves_a_key_that_is_not_ours(clients: Clients) -> None:
    """The leader key moves only when it names us AND is bound to the session being retired:
    a key of another member, or one holding our name but bound to another session (a
    previous process), is left alone (``leader`` None) and survives the switch."""
    other, a = await clients.new("pg1"), await clients.new("pg0")
    assert await other.acquire_leader()
    await a.touch_member({"state": "running"})
    result = await a.switch_session(clients.ttl * 2)
    assert result.leader is None and result.new == a.kv.session_id
    view = await other.load()
    assert view.leader is not None and view.leader.name == "pg1"
    assert view.leader.session == other.kv.session_id
    assert "pg0" in view.members
    # a key holding our name left by a previous process of ours: not moved either
    assert await other.release_leader()
    previous = await clients.new("pg0")
    assert await previous.acquire_leader()
    result = await a.switch_session(clients.ttl)
    assert result.leader is None
    held = (await a.load()).leader
    assert held is not None and held.session == previous.kv.session_id


# -- (5) watch --------------------------------------------------------------------------------


async def test_watch_sees_leader_deleted(clients: Clients) -> None:
    a, b = await clients.new("a"), await clients.new("b")
    assert await a.acquire_leader()
    view = await b.load()
    leader = a.key("leader")
    async with watching(b, view.revision) as watch:
        assert await a.release_leader()
        event = await watch.next(lambda e: e.key in (None, leader), WATCH_BOUND,
                                 "leader key deleted")
        if event.key is None:  # the backend only says "re-read"
            assert (await b.load()).leader is None
        else:
            assert event.deleted
        member = a.key("members/a")
        await a.touch_member({"state": "running"})
        event = await watch.next(lambda e: e.key in (None, member), WATCH_BOUND,
                                 "member key created")
        assert not event.deleted
        for e in watch.seen:
            if e.key is not None:
                assert e.revision > view.revision, (e, view.revision)
                assert e.key.startswith(b.prefix), e


async def test_watch_ends_when_store_closes(clients: Clients) -> None:
    b = await clients.new("b")
    async with watching(b, (await b.load()).revision) as watch:
        await asyncio.sleep(0.3)
        await clients.close(b)
        await watch.wait_ended(WATCH_BOUND)


# -- (6) server restart -----------------------------------------------------------------------


async def test_survives_server_restart(dcs: DcsServer, clients: Clients) -> None:
    a, b = await clients.new("a"), await clients.new("b")
    assert await a.acquire_leader()
    await a.touch_member({"state": "running"})
    status = a.key("status")
    view = await b.load()
    stopped = False
    async with watching(b, view.revision) as watch:
        try:
            await a.write_status(1)
            # None: "re-read", e.g. from a watch that got going after the write
            await watch.next(lambda e: e.key in (None, status), WATCH_BOUND, "status written")
            await a.keepalive()

            stopped = True
            await asyncio.to_thread(dcs.stop)
            async with asyncio.timeout(TIMEOUT * 3):
                with pytest.raises(DCSError):
                    await a.keepalive()
                with pytest.raises(DCSError):
                    await b.load()
            await asyncio.to_thread(dcs.start)
            stopped = False

            # the session may have survived or not (then SessionExpired first, and the next
            # keepalive opens a new one): either way a working session within the bound
            await eventually(a.keepalive, RECOVERY_BOUND, "keepalive after restart")
            await a.keepalive()
            await a.touch_member({"state": "running", "timeline": 2})
            view = await eventually(b.load, RECOVERY_BOUND, "load after restart")
            assert "a" in view.members and view.members["a"].timeline == 2

            # the watch started before the restart reports again after it ...
            await a.write_status(2)
            await watch.next(lambda e: e.key in (None, status), RECOVERY_BOUND,
                             "an event after the restart")
            # ... and keeps reporting changes
            await a.write_status(3)
            await watch.next(lambda e: e.key in (None, status), WATCH_BOUND,
                             "a change after the restart")
        finally:
            if stopped:
                await asyncio.to_thread(dcs.start)


# -- (7) garbage values -------------------------------------------------------------------------


async def test_garbage_values_are_logged_and_ignored(
    clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    a = await clients.new("a")
    kv = a.kv
    await a.touch_member({"role": "replica", "state": "running", "timeline": 2})
    await a.write_status(42)
    assert await a.claim_initialize()
    await kv.put(a.key("config"), b"not json")
    await kv.put(a.key("members/x"), b'{"xlog_location": "abc"}')
    await kv.put(a.key("history"), b"{}")
    await kv.put(a.key("leader"), b"")
    with caplog.at_level(logging.WARNING, logger="pgha.dcs"):
        view = await a.load()
    assert set(view.members) == {"a"} and view.members["a"].timeline == 2
    assert view.config is None and view.settings.ttl == 30.0
    assert view.history == () and view.leader is None
    assert view.optime == 42 and view.initialize == ""
    warned = [r.getMessage() for r in caplog.records
              if r.levelno >= logging.WARNING and r.name == "pgha.dcs"]
    for name in ("config", "members/x", "history", "leader"):
        assert any(a.key(name) in m for m in warned), (name, warned)


# -- (8) get_prefix -----------------------------------------------------------------------------


async def test_get_prefix_scope_and_revisions(clients: Clients) -> None:
    a = await clients.new("a")
    other = await clients.new("o", scope=f"{clients.scope}x")  # a sibling scope sharing a prefix
    kv = a.kv
    empty = await kv.get_prefix(a.prefix)
    assert dict(empty.items) == {}
    assert (await a.load()).members == {}

    await a.write_config({"ttl": 30})
    await a.touch_member({"state": "running"})
    await kv.put(a.key("members/b"), b"{}")
    await other.write_config({"ttl": 31})
    await other.touch_member({"state": "running"})

    snap = await kv.get_prefix(a.prefix)
    assert set(snap.items) == {a.key("config"), a.key("members/a"), a.key("members/b")}
    assert snap.revision > empty.revision
    for key, item in snap.items.items():
        assert item.key == key
        assert 0 < item.revision <= snap.revision, (item, snap.revision)
    assert snap.items[a.key("members/a")].ephemeral
    assert not snap.items[a.key("config")].ephemeral
    assert not snap.items[a.key("members/b")].ephemeral

    members = await kv.get_prefix(a.key("members/"))
    assert set(members.items) == {a.key("members/a"), a.key("members/b")}
    exact = await kv.get_prefix(a.key("config"))
    assert set(exact.items) == {a.key("config")}
    assert exact.items[a.key("config")].value == snap.items[a.key("config")].value

    await a.write_config({"ttl": 25})
    after_put = await kv.get_prefix(a.prefix)
    assert after_put.revision > snap.revision
    assert after_put.items[a.key("config")].revision > snap.items[a.key("config")].revision
    assert await a.delete_member("b")
    after_delete = await kv.get_prefix(a.prefix)
    assert after_delete.revision > after_put.revision
    assert a.key("members/b") not in after_delete.items
    assert set((await other.load()).members) == {"o"}


# -- (9) initialize -----------------------------------------------------------------------------


async def test_initialize_semantics(clients: Clients) -> None:
    stores = [await clients.new(f"pg{i}") for i in range(3)]
    a, b, c = stores
    results = await asyncio.gather(*(s.claim_initialize() for s in stores * 3))
    assert results.count(True) == 1, results
    winner = (stores * 3)[results.index(True)]
    loser = b if winner is not b else c
    assert (await a.load()).initialize == ""

    # a failed bootstrap gives the right back
    assert await loser.cancel_initialize()
    assert (await a.load()).initialize is None
    assert await loser.cancel_initialize() is False  # nothing to cancel
    assert await loser.claim_initialize()
    assert await winner.claim_initialize() is False

    sysid = "7300000000000000123"
    assert await loser.set_initialize(sysid)
    assert await winner.set_initialize(sysid)  # the same value again: fine
    assert await winner.set_initialize("7300000000000000999") is False
    assert await winner.cancel_initialize() is False  # holds a system identifier
    assert await winner.claim_initialize() is False
    assert (await a.load()).initialize == sysid

    # set_initialize on a cluster without the key creates it
    fresh = await clients.new("f", scope=f"{clients.scope}-fresh")
    assert await fresh.set_initialize(sysid)
    assert (await fresh.load()).initialize == sysid
