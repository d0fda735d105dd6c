"""ZooKeeper backend of :class:`~pgha.dcs.base.KVStore`, with kazoo bridged into asyncio.

Keys are znode paths (missing parents are created, persistent and empty); a znode counts as a
key when it holds data or never had children (``cversion == 0``), so directories such as
``members`` are not keys, even once empty again. Revisions are zxids: ``KeyValue.revision`` =
``mzxid``, ``Snapshot.revision`` = the largest ``mzxid``/``pzxid`` read. Compare-and-set checks
``mzxid`` on a fresh stat and writes at that stat's version; an owner change (ephemeral <->
persistent, another session) is one ``multi``. The session is kazoo's, *adopted* by the first
keepalive or ephemeral write (see ``_adopt`` and ``session_ttl``); a session's timeout is fixed
at its creation, so ``open_session`` (a TTL change) starts a second kazoo client. kazoo 2.11
has no persistent recursive watch: ``watch`` arms data and child watches on the whole tree.

Two instance-level hooks on kazoo's connection handler (kazoo 2.11) record the negotiated session
timeout and suppress kazoo's background pings while the adopted session is current, so only our
requests renew it: an agent whose keep-alive stops (dead or stuck) loses its ephemeral znodes, as
with an etcd lease. A request timing out on a connection kazoo thinks alive makes kazoo drop it
and reconnect (to the next host). Every call runs under ``asyncio.timeout(self.timeout)``
(waiting for a reconnect included); kazoo's blocking start/stop run in a thread; timeouts,
connection loss and server errors raise DCSError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from operator import methodcaller as _op
from typing import Any

import kazoo.exceptions as kx
from kazoo.client import KazooClient
from kazoo.protocol.connection import _CONNECTION_DROP
from kazoo.protocol.states import KazooState
from kazoo.security import make_acl

from pgha.config import zookeeper as zkconf
from pgha.dcs.base import DCSError, KeyValue, KVStore, SessionExpired, Snapshot, WatchEvent
from pgha.dcs.zookeeper_tree import Node as _Node
from pgha.dcs.zookeeper_tree import key_value as _key_value
from pgha.dcs.zookeeper_tree import keys as _keys
from pgha.dcs.zookeeper_tree import parent as _parent
from pgha.dcs.zookeeper_tree import relevant as _relevant
from pgha.dcs.zookeeper_tree import revision as _revision
from pgha.dcs.zookeeper_tree import zxids as _zxids

log = logging.getLogger("pgha.dcs")

_CAS_MISS = (kx.BadVersionError, kx.NoNodeError, kx.NodeExistsError)
_RECONNECTED = object()  # queued to every watch when the connection is (re)established
_STOPPING: set[asyncio.Future[None]] = set()  # clients being stopped in the background

def _hex(conn: _Conn | None) -> str | None:  # the session id as session_id spells it
    return None if conn is None or conn.session is None else f"{conn.session:x}"


@dataclass(eq=False)
class _Conn:
    """One kazoo client and its session: ``session`` the adopted one (``_adopt``), ``lost`` set
    by kazoo's LOST state, ``negotiated`` the timeout granted (recorded by the connect hook)."""

    client: Any
    ttl: float
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    negotiated: float | None = None
    session: int | None = None
    lost: bool = False

    @property
    def session_ttl(self) -> float:
        return min(self.negotiated or self.ttl * 2 / 3, self.ttl)  # see requested_timeout

    def current_session(self) -> int | None:
        cid = self.client.client_id
        return None if cid is None else int(cid[0])


class ZooKeeperStore(KVStore):
    """KVStore on the ZooKeeper ensemble at ``hosts`` (``[(host, port), ...]``; kazoo fails over
    between them). ``auth``: ``(scheme, credential)`` pairs sent on every connection; ``acl``:
    ``(scheme, id, permissions)`` (:mod:`pgha.config.zookeeper`), the ACL of every znode created
    (default: open); ``use_ssl`` with ``ca``/``certfile``/``keyfile``/``keyfile_password``/
    ``verify_certs``: TLS (an encrypted key without password fails, no terminal prompt)."""

    @classmethod
    def from_config(cls, section: Mapping[str, Any], *, ttl: float, timeout: float
                    ) -> ZooKeeperStore:
        """From the YAML section: ``hosts`` (list or comma-separated string of ``host[:port]``,
        port 2181 by default), ``use_ssl``, ``cacert``, ``cert``, ``key``, ``key_password``,
        ``verify``, ``auth_data``, ``set_acls``. ValueError names the offending key."""
        raw = section.get("hosts")
        hosts: list[tuple[str, int]] = []
        for item in raw.split(",") if isinstance(raw, str) else list(raw or []):
            text = str(item).strip()
            host, _, port = (text if ":" in text else f"{text}:2181").rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"zookeeper.hosts: {item!r} is not host[:port]")
            hosts.append((host, int(port)))
        return cls(hosts, ttl, timeout, **zkconf.store_options(section))

    def __init__(self, hosts: list[tuple[str, int]], ttl: float, timeout: float, *,
                 auth: list[tuple[str, str]] | None = None, acl: list[zkconf.Acl] | None = None,
                 use_ssl: bool = False, ca: str | None = None, certfile: str | None = None,
                 keyfile: str | None = None, keyfile_password: str | None = None,
                 verify_certs: bool = True) -> None:
        super().__init__(ttl, timeout)
        if not hosts:
            raise ValueError("at least one ZooKeeper host is needed")
        self.hosts = list(hosts)
        default_acl = [make_acl(s, i, **{p.lower(): True for p in ps}) for s, i, ps in acl or []]
        self._options: dict[str, Any] = {
            "auth_data": list(auth or []) or None, "default_acl": default_acl or None,
            "use_ssl": use_ssl, "ca": ca, "certfile": certfile, "keyfile": keyfile,
            "keyfile_password": keyfile_password or "", "verify_certs": verify_certs}
        self._conn: _Conn | None = None  # the current client and session
        self._retired: _Conn | None = None  # see KVStore.open_session
        self._closed = True
        self._watches: set[Callable[[object], None]] = set()  # thread-safe feeds of watch()

    @property
    def _client(self) -> Any:  # the current kazoo client
        return None if self._conn is None else self._conn.client

    def _current_session(self) -> int | None:  # the session the current client runs now
        return None if self._conn is None else self._conn.current_session()

    @property
    def requested_timeout(self) -> float:
        """Two thirds of ``ttl``. ZooKeeper expires sessions in ``tickTime`` buckets: between
        ``timeout`` and ``timeout + tickTime`` after the last request it received; it grants at
        least ``2 * tickTime`` (minSessionTimeout's default), so ``tickTime <= timeout / 2`` and
        our ephemeral znodes are gone within ``1.5 * timeout = ttl`` of our last request."""
        return self.ttl * 2 / 3

    @property
    def session_ttl(self) -> float:
        """The negotiated session timeout (the server clamps ours into [minSessionTimeout,
        maxSessionTimeout]), at most ``ttl``. The session cannot expire sooner after a keep-alive
        was *sent* (the server counts from receipt): ``sent + session_ttl - margin`` is safe.
        While a session is retired, the smaller of both."""
        current = (self._conn.session_ttl if self._conn is not None
                   else min(self.requested_timeout, self.ttl))
        return current if self._retired is None else min(current, self._retired.session_ttl)

    @property
    def session_id(self) -> str | None:
        return _hex(self._conn)

    @property
    def retired_session_id(self) -> str | None:
        return _hex(self._retired)

    def _adopt(self, conn: _Conn) -> None:
        """Check/adopt the session of ``conn`` to renew and to bind ephemeral znodes to:
        SessionExpired when the adopted one is gone (LOST, or kazoo runs another), DCSError
        when not connected."""
        current = conn.current_session()
        if conn.session is not None and (conn.lost or current not in (None, conn.session)):
            old, conn.session, conn.lost = conn.session, None, False
            raise SessionExpired(f"ZooKeeper session {old:x} expired")
        if current is None:
            raise DCSError("ZooKeeper: not connected")
        if conn.session is None:
            conn.session, conn.lost = current, False
            log.debug("using ZooKeeper session %x (timeout %.3fs)", current, conn.session_ttl)

    @staticmethod
    def _hook(conn: _Conn) -> None:
        kc = conn.client._connection
        connect, ping = kc._connect, kc._send_ping

        def hooked_connect(*args: Any) -> Any:
            read_timeout, connect_timeout = connect(*args)
            conn.negotiated = round(read_timeout * 1.5) / 1000.0  # kazoo: 2/3 of it, in ms
            if conn.negotiated > conn.ttl * 2 / 3 + 0.001:
                log.warning("ZooKeeper granted a %.3fs session (%.3fs asked for, sessions may "
                            "outlive ttl)", conn.negotiated, conn.ttl * 2 / 3)
            return read_timeout, connect_timeout

        def gated_ping(*args: Any) -> Any:
            adopted = conn.session is not None and conn.session == conn.current_session()
            return None if adopted else ping(*args)

        kc._connect, kc._send_ping = hooked_connect, gated_ping

    def _on_state(self, loop: asyncio.AbstractEventLoop, conn: _Conn, state: Any) -> None:
        if state == KazooState.LOST and conn.session is not None:
            conn.lost = True
        live = state == KazooState.CONNECTED
        with contextlib.suppress(RuntimeError):  # the loop is closed
            loop.call_soon_threadsafe(conn.connected.set if live else conn.connected.clear)
            for push in list(self._watches) if live and conn is self._conn else []:
                push(_RECONNECTED)

    async def _start(self, ttl: float) -> _Conn:
        """A new kazoo client asking for a session for ``ttl``, started (not connected yet)."""
        client = KazooClient(
            hosts=",".join(f"{h}:{p}" for h, p in self.hosts), timeout=ttl * 2 / 3,
            connection_retry={"max_tries": -1, "delay": 0.1, "backoff": 2, "max_delay": 1.0},
            **self._options)
        self._hook(conn := _Conn(client, ttl))
        loop = asyncio.get_running_loop()
        client.add_listener(lambda state: self._on_state(loop, conn, state))  # kazoo thread
        await asyncio.to_thread(client.start_async)
        return conn

    async def _stop(self, conn: _Conn | None) -> None:
        """Close ``conn``'s session (its ephemeral znodes vanish at once). Never raises."""
        client = None if conn is None else conn.client
        try:
            async with asyncio.timeout(max(2.0, self.timeout)):
                if client is not None:
                    await asyncio.to_thread(lambda: (client.stop(), client.close()))
        except Exception as exc:  # best effort
            log.debug("closing ZooKeeper client failed: %r", exc)

    async def connect(self) -> None:
        """Start kazoo's connection (in a thread) and wait up to ``timeout`` for it. Never
        fails for an unreachable ensemble: calls raise DCSError until it is reachable."""
        if self._conn is not None:
            return
        self._closed = False
        self._conn = conn = await self._start(self.ttl)
        try:
            async with asyncio.timeout(self.timeout):
                await conn.connected.wait()
        except TimeoutError:
            log.warning("ZooKeeper %s not reachable yet", self.hosts)

    async def close(self) -> None:
        """Close the sessions (their ephemeral znodes vanish at once), the connections and the
        running watches. Never raises."""
        conn, retired = self._conn, self._retired
        self._conn, self._retired, self._closed = None, None, True
        for push in list(self._watches):
            push(None)
        await self._stop(conn)
        await self._stop(retired)

    async def _call(self, what: str, start: Callable[[Any], Any], *, adopt: bool = False,
                    conn: _Conn | None = None) -> Any:
        """Wait for the connection, check/adopt the session if asked, run ``start(client)`` (a
        kazoo ``*_async`` call) and await its result, all within ``timeout``, on ``conn``
        (default: the current one). NoNode/NodeExists/BadVersion pass through; other failures
        become DCSError (or SessionExpired)."""
        conn = conn or self._conn
        if conn is None or self._closed:
            raise DCSError("ZooKeeper store is closed")
        client = conn.client
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()

        def settle(result: Any) -> None:
            if not fut.done():
                try:
                    fut.set_result(result.get_nowait())
                except Exception as exc:
                    fut.set_exception(exc)

        def done(result: Any) -> None:  # runs in a kazoo thread
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(settle, result)

        try:
            async with asyncio.timeout(self.timeout):
                if adopt and conn.lost and conn.session is not None:
                    self._adopt(conn)  # raises SessionExpired
                await conn.connected.wait()
                if adopt:
                    self._adopt(conn)
                start(client).rawlink(done)
                return await fut
        except TimeoutError as exc:
            if client.connected:  # a dead socket? make kazoo reconnect
                with contextlib.suppress(Exception):
                    client._call(_CONNECTION_DROP, None)
            raise DCSError(f"ZooKeeper: {what} timed out after {self.timeout}s") from exc
        except _CAS_MISS:
            raise
        except kx.ConnectionClosedError as exc:
            raise DCSError(f"ZooKeeper: {what}: connection closed") from exc
        except kx.SessionExpiredError as exc:
            raise SessionExpired(f"ZooKeeper: {what}: session expired") from exc
        except (kx.KazooException, OSError) as exc:
            raise DCSError(f"ZooKeeper: {what} failed: {exc!r}") from exc

    async def _ping(self, conn: _Conn | None, what: str) -> None:
        """One ``exists('/')`` round trip on the adopted session of ``conn`` (adopting its
        current one if none); SessionExpired when that session is gone, also when it was
        replaced during the round trip."""
        await self._call(what, _op("exists_async", "/"), adopt=True, conn=conn)
        if conn is not None and conn.current_session() not in (None, conn.session):
            self._adopt(conn)

    async def keepalive(self) -> None:
        """A round trip on the retired session if any, then on the current one, each waiting
        for a reconnect within ``timeout`` (else DCSError). SessionExpired when the adopted
        session is gone (a retired one is then closed and forgotten)."""
        retired, conn = self._retired, self._conn
        if retired is not None:
            try:
                await self._ping(retired, "keepalive (retired session)")
            except SessionExpired:
                if self._retired is retired:
                    self._retired = None
                    await self._stop(retired)
                raise
        await self._ping(conn, "keepalive")  # DCSError when closed

    async def open_session(self, ttl: float) -> None:
        """A new kazoo client (a ZooKeeper session's timeout is fixed when it is created, so a
        new TTL needs a new session, hence a new connection), connected and adopted within
        ``timeout``, becomes current; the previous client, when it runs an adopted session,
        is kept as the retired one (its pings stay gated: only ``keepalive`` renews it).
        Running watches are told to re-read (and so re-arm on the new client)."""
        if self._retired is not None:
            raise ValueError("a retired ZooKeeper session is still open")
        old = self._conn
        if old is None or self._closed:
            raise DCSError("ZooKeeper store is closed")
        conn = await self._start(ttl)
        try:
            async with asyncio.timeout(self.timeout):
                await conn.connected.wait()
            self._adopt(conn)
        except BaseException as exc:  # the new client must not outlive a failure
            _STOPPING.add(task := asyncio.ensure_future(self._stop(conn)))
            task.add_done_callback(_STOPPING.discard)
            if isinstance(exc, (TimeoutError, DCSError)):
                raise DCSError(f"ZooKeeper: no new session within {self.timeout}s") from exc
            raise
        self._conn, self.ttl = conn, ttl
        self._retired = old if old.session is not None else None
        await self._stop(None if self._retired else old)  # a client without our session
        for push in list(self._watches):
            push(_RECONNECTED)

    async def close_retired(self) -> None:
        """Close the retired client and its session (best effort; forgotten either way)."""
        retired, self._retired = self._retired, None
        await self._stop(retired)

    async def _read(self, path: str, prefix: str, watch: Any = None) -> dict[str, _Node | None]:
        """``path`` and its descendants relevant to ``prefix``; None for a missing znode."""
        try:
            (data, stat), (children, cstat) = await asyncio.gather(
                self._call(f"get {path}", _op("get_async", path, watch=watch)),
                self._call(f"children {path}", _op(
                    "get_children_async", path, watch=watch, include_data=True)))
        except kx.NoNodeError:
            return {path: None}
        stat = stat._replace(pzxid=cstat.pzxid, cversion=cstat.cversion)  # atomic with children
        nodes: dict[str, _Node | None] = {path: (bytes(data or b""), stat)}
        subs = [f"{path.rstrip('/')}/{ch}" for ch in children]
        for sub in await asyncio.gather(*(self._read(p, prefix, watch) for p in subs
                                          if _relevant(p, prefix) and p != "/zookeeper")):
            nodes.update(sub)
        return nodes

    async def get_prefix(self, prefix: str) -> Snapshot:
        """Every key under ``prefix`` (a directory ``.../`` or any leading part of a path).
        ZooKeeper has no atomic read of a tree (and kazoo no multi-read): the tree is read,
        pipelined, until two reads in a row agree on every znode's zxids (then all of them held
        at once between the two), at most five times."""
        nodes = await self._read(_parent(prefix), prefix)
        for _ in range(4):
            again = await self._read(_parent(prefix), prefix)
            if _zxids(again) == _zxids(nodes):
                break
            nodes = again
        items = {p: _key_value(p, n) for p, n in _keys(nodes, prefix).items()}
        return Snapshot(_revision(nodes), items)

    async def create(self, key: str, value: bytes, *, ephemeral: bool = False) -> bool:
        try:
            await self._call(f"create {key}", _op("create_async",
                key, bytes(value), ephemeral=ephemeral, makepath=True), adopt=ephemeral)
        except kx.NodeExistsError:
            return False
        return True

    async def put(self, key: str, value: bytes, *, ephemeral: bool = False,
                  if_revision: int | None = None) -> bool:
        if if_revision == 0:
            return await self.create(key, value, ephemeral=ephemeral)
        for _ in range(5):
            stat = await self._call(f"stat {key}", _op("exists_async", key), adopt=ephemeral)
            if if_revision is not None and (stat is None or stat.mzxid != if_revision):
                return False
            try:
                if stat is None:
                    if await self.create(key, value, ephemeral=ephemeral):
                        return True
                    continue  # lost a create race: read again
                owner = self._conn.session if self._conn is not None else None
                if stat.ephemeralOwner != ((owner or 0) if ephemeral else 0):
                    await self._replace(key, value, ephemeral, stat.version)
                else:
                    await self._call(f"set {key}", _op("set_async", key, bytes(value),
                                                        version=stat.version))
                return True
            except _CAS_MISS:
                if if_revision is not None:
                    return False
        raise DCSError(f"ZooKeeper: put {key}: too many concurrent changes")

    async def _replace(self, key: str, value: bytes, ephemeral: bool, version: int) -> None:
        """Delete ``key`` at ``version`` and create it anew, in one multi (or BadVersionError)."""
        def commit(c: Any) -> Any:
            tx = c.transaction()
            tx.delete(key, version=version)
            tx.create(key, bytes(value), ephemeral=ephemeral)
            return tx.commit_async()

        results = await self._call(f"replace {key}", commit, adopt=ephemeral)
        if any(isinstance(r, Exception) for r in results):
            raise kx.BadVersionError()

    async def delete(self, key: str, *, if_value: bytes | None = None,
                     if_revision: int | None = None) -> bool:
        version = -1
        try:
            if if_value is not None or if_revision is not None:
                data, stat = await self._call(f"get {key}", _op("get_async", key))
                if (if_value is not None and bytes(data or b"") != if_value) or (
                        if_revision is not None and stat.mzxid != if_revision):
                    return False
                version = stat.version
            await self._call(f"delete {key}", _op("delete_async", key, version=version))
        except _CAS_MISS:
            return False
        return True

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        """ZooKeeper keeps no history: the tree is read (arming the watches) at the start, giving
        ``WatchEvent(key=None)`` if anything in it is newer than ``start_revision``; each fire
        (a burst counts once) re-reads it and yields an event per key created, changed or
        deleted, in zxid order; a reconnect or failed read gives ``key=None``. The re-read
        returns every znode's data with its stat, so a created/changed key's event carries
        ``kv`` (as ``get_prefix`` returns the key at that ``mzxid``) at no extra round trip;
        a deletion's revision is the re-read's. Ends when the store closes."""
        loop, queue, alive = asyncio.get_running_loop(), asyncio.Queue[object](), [True]

        def push(item: object) -> None:  # from kazoo's threads too
            if alive[0]:
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    loop.call_soon_threadsafe(queue.put_nowait, item)

        self._watches.add(push)
        root, last, mode, delay = _parent(prefix), start_revision, "start", 0.1
        known: dict[str, KeyValue] = {}
        try:
            while not self._closed:
                try:
                    nodes = await self._read(root, prefix, push)
                    if nodes.get(root) is None:  # fires when the tree is created
                        await self._call("stat", _op("exists_async", root, watch=push))
                except (DCSError, kx.NoNodeError) as exc:
                    log.debug("ZooKeeper watch of %s: %r", prefix, exc)
                    mode, items = "resync", []
                    with contextlib.suppress(TimeoutError):  # retry after ``delay`` at the latest
                        async with asyncio.timeout(delay):
                            items.append(await queue.get())
                    delay = min(2.0, delay * 2)
                else:
                    delay, rev = 0.1, _revision(nodes)
                    keys = {p: _key_value(p, n) for p, n in _keys(nodes, prefix).items()}
                    events = [WatchEvent(kv.revision, p, kv=kv) for p, kv in keys.items()
                              if known.get(p) != kv]
                    events += [WatchEvent(rev, p, True) for p in sorted(known.keys() - keys.keys())]
                    events.sort(key=lambda e: e.revision)
                    if mode in ("start", "resync"):
                        # ZooKeeper keeps no history: whether something changed between the
                        # caller's read and our first (watch-arming) read cannot be told
                        # reliably from zxids (a delete racing the read leaves no trace), so the
                        # first read always asks the caller to re-read.
                        events = [WatchEvent(rev, None)]
                    known, mode = keys, "diff"
                    for ev in events:
                        if ev.revision < last:  # never seen: keeps the revisions ascending
                            ev = WatchEvent(last, ev.key, ev.deleted)
                        last = ev.revision
                        yield ev
                    items = [await queue.get()]
                while not queue.empty():
                    items.append(queue.get_nowait())
                if None in items:
                    return
                if _RECONNECTED in items:
                    mode = "resync"
        finally:
            alive[0] = False
            self._watches.discard(push)
