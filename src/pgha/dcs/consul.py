"""Consul backend of :class:`~pgha.dcs.base.KVStore`, over Consul's HTTP API with py-consul's
asyncio client (``consul.aio``). It talks to one agent (normally the local one).

Mapping (keys lose their leading ``/`` on the wire and get it back in results):

* session = a Consul session (``Behavior: delete``, ``LockDelay: 1ms``, no health checks, TTL
  as in :attr:`ConsulStore.session_ttl`), created on demand; ``keepalive()`` = session renew
  (two while a retired session exists); ``open_session`` creates a new session and retires
  the old one, ``close_retired`` destroys it;
* ephemeral key = a key *acquired* by our session (``PUT ?acquire=``): deleted with it;
* ``get_prefix`` = one recursive read: revision = ``X-Consul-Index``, a key's = ``ModifyIndex``;
* create-if-absent = ``PUT ?cas=0``; compare-and-set = ``PUT ?cas=<ModifyIndex>``. Consul
  refuses ``cas`` with ``acquire`` (400 "Conflicting flags"): ephemeral conditional writes are
  one ``/v1/txn`` (``check-not-exists``/``check-index``, then ``lock``). Deletes are
  transactions too (``get``/``check-index``, then ``delete``): ``DELETE ?cas=`` answers true
  for a missing key, which would make "True if deleted" a lie;
* ``watch`` = blocking recursive reads (``?index=&wait=``); successive answers are compared to
  name the keys that changed, and each changed key's event carries it as read (``kv``).

Failure behaviour: every call runs under ``asyncio.timeout(self.timeout)`` (a blocking read
gets its wait on top); HTTP, connection and timeout errors become :class:`DCSError`. An unknown
session (renew answering 404, a write naming an invalid session) raises
:class:`SessionExpired` and is forgotten: the next call opens a new one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import consul
import consul.aio

from pgha.dcs.base import DCSError, KeyValue, KVStore, SessionExpired, Snapshot, WatchEvent

log = logging.getLogger("pgha.dcs")

_T = TypeVar("_T")

DEFAULT_PORT = 8500
SESSION_TTL_MIN = 10  # Consul refuses shorter session TTLs
LOCK_DELAY = 0.001  # seconds; Consul's default (15 s) would delay every failover by as much
_ERRORS = (consul.ConsulException, aiohttp.ClientError, OSError, ValueError, KeyError,
           TypeError)


def _wire(key: str) -> str:
    return key.removeprefix("/")


def _ours(key: str) -> str:
    return "/" + key


def _granted_seconds(ttl: float) -> int:
    """The session TTL asked of Consul for ``ttl`` (see :attr:`ConsulStore.session_ttl`)."""
    return min(86400, max(SESSION_TTL_MIN, int(ttl // 2)))  # Consul's bounds


def _key_value(item: Mapping[str, Any]) -> KeyValue:
    """A KeyValue from one entry of a recursive read (``get_prefix`` and the watch alike)."""
    key = _ours(str(item["Key"]))
    session = item.get("Session")
    return KeyValue(key, bytes(item.get("Value") or b""), int(item["ModifyIndex"]),
                    bool(session), str(session) if session else None)


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


class ConsulStore(KVStore):
    """KVStore on the Consul agent at ``host:port``.

    ``scheme`` is ``http`` or ``https``; ``verify`` is a bool or the path of a CA bundle,
    ``cert`` a client certificate file or a ``(cert, key)`` pair; ``token`` an ACL token sent
    with every request; ``dc`` the datacenter; ``consistency`` the read mode of ``get_prefix``
    and the watch (``default``, ``consistent`` or ``stale``).
    """

    watch_wait = 5.0  # seconds a blocking read waits for a change before asking again

    def __init__(self, host: str, port: int, ttl: float, timeout: float, scheme: str = "http",
                 token: str | None = None, verify: bool | str = True,
                 cert: str | tuple[str, str] | None = None, dc: str | None = None,
                 consistency: str = "default") -> None:
        super().__init__(ttl, timeout)
        if ttl <= 0 or timeout <= 0:
            raise ValueError("ttl and timeout must be positive")
        if scheme not in ("http", "https"):
            raise ValueError(f"scheme must be http or https, not {scheme!r}")
        if consistency not in ("default", "consistent", "stale"):
            raise ValueError("consistency must be default, consistent or stale")
        self.host, self.port, self.scheme, self.dc = host, int(port), scheme, dc
        self._options: dict[str, Any] = {"token": token, "verify": verify, "cert": cert,
                                         "dc": dc, "consistency": consistency}
        self._client: Any = None
        self._session: str | None = None
        self._retired: tuple[str, float] | None = None  # session id, its session_ttl
        self._session_lock = asyncio.Lock()
        self._closed = False
        self._closed_event = asyncio.Event()

    @classmethod
    def from_config(cls, section: Mapping[str, Any], *, ttl: float, timeout: float
                    ) -> ConsulStore:
        """A store from a Patroni-style ``consul`` section: ``host`` (``h:port``), ``url``,
        ``port``, ``scheme``, ``token``, ``verify``, ``cacert``, ``cert``, ``key``, ``dc``,
        ``consistency``; other keys (``checks``, ``register_service``, ...) are ignored.
        ValueError names the offending key."""
        from pgha.config.base import split_host_port

        scheme = str(section.get("scheme") or "http").lower()
        host, port = "127.0.0.1", DEFAULT_PORT
        given = str(section.get("host") or "")
        url = section.get("url") or (given if "://" in given else None)
        try:
            if url:
                parts = urlsplit(str(url))
                if not parts.hostname or parts.scheme not in ("http", "https"):
                    raise ValueError("expected http(s)://host[:port]")
                host, port, scheme = parts.hostname, parts.port or DEFAULT_PORT, parts.scheme
            elif given:
                host, port = split_host_port(given, DEFAULT_PORT)
            if section.get("port") and not url:
                port = int(section["port"])
        except ValueError as exc:
            where = "url" if section.get("url") else "host/port"
            raise ValueError(f"consul.{where}: {exc}") from None
        verify: bool | str = True
        if section.get("verify") not in (None, ""):
            text = str(section["verify"]).strip().lower()
            if text not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError("consul.verify: expected true or false")
            verify = text in ("1", "true", "yes", "on")
        if section.get("cacert") and verify is not False:
            verify = str(section["cacert"])
        cert: str | tuple[str, str] | None = None
        if section.get("cert"):
            keyfile = section.get("key")
            cert = (str(section["cert"]), str(keyfile)) if keyfile else str(section["cert"])
        return cls(host, port, ttl=ttl, timeout=timeout, scheme=scheme,
                   token=section.get("token") or None, verify=verify, cert=cert,
                   dc=section.get("dc") or None,
                   consistency=str(section.get("consistency") or "default"))

    @property
    def session_id(self) -> str | None:
        return self._session

    @property
    def retired_session_id(self) -> str | None:
        return None if self._retired is None else self._retired[0]

    @property
    def session_ttl(self) -> float:
        """``max(10, ttl // 2)`` seconds granted (whole seconds; never more than ``ttl`` is
        reported). Consul may keep a session up to twice its TTL after the last renewal, so
        our keys are gone within ``ttl`` of it, and present for at least the session TTL.
        With ``ttl < 20`` that cannot be honoured exactly: Consul refuses TTLs under 10 s, so
        a dead client's keys may outlive ``ttl`` (up to 20 s). While a session is retired, the
        smaller of both."""
        current = float(min(self.ttl, _granted_seconds(self.ttl)))
        return current if self._retired is None else min(current, self._retired[1])

    @property
    def _granted_ttl(self) -> int:
        return _granted_seconds(self.ttl)

    def _new_client(self) -> Any:
        with warnings.catch_warnings():  # py-consul passes deprecated aiohttp arguments
            warnings.simplefilter("ignore", DeprecationWarning)
            return consul.aio.Consul(host=self.host, port=self.port, scheme=self.scheme,
                                     **self._options)

    async def _call(self, what: str, fn: Callable[[Any], Awaitable[_T]],
                    timeout: float | None = None) -> _T:
        """``fn(client)`` under the timeout, every failure translated to DCSError."""
        if self._closed:
            raise DCSError("consul store is closed")
        if self._client is None:
            self._client = self._new_client()
        where = f"consul {self.host}:{self.port}"
        limit = timeout or self.timeout
        try:
            async with asyncio.timeout(limit):
                return await fn(self._client)
        except TimeoutError as exc:
            raise DCSError(f"{where}: {what} timed out after {limit:g}s") from exc
        except consul.NotFound:
            raise
        except _ERRORS as exc:
            text = str(exc) or exc.__class__.__name__
            self._check_session(text, f"{where}: {what}")
            raise DCSError(f"{where}: {what} failed: {text}") from exc

    def _check_session(self, text: str, what: str) -> None:
        """Raise SessionExpired (forgetting it) when ``text`` says our session is unknown."""
        session = self._session
        if session is not None and "invalid session" in text.lower() and session in text:
            self._session = None
            raise SessionExpired(f"{what}: session {session} is gone ({text})")

    async def connect(self) -> None:
        """Prepare the HTTP client; no request is made (an unreachable agent shows up as
        DCSError on the first call)."""
        self._closed = False
        self._closed_event = asyncio.Event()
        if self._client is None:
            self._client = self._new_client()

    async def close(self) -> None:
        """Destroy the session (its keys are deleted at once), end running watches and close
        the HTTP client. Never raises."""
        session, self._session = self._session, None
        retired, self._retired = self._retired, None
        for one in (session, retired[0] if retired is not None else None):
            if one is not None:
                await self._destroy(one)
        self._closed = True
        self._closed_event.set()
        client, self._client = self._client, None
        if client is not None:
            try:
                async with asyncio.timeout(2.0):
                    await client.close()
            except Exception as exc:  # best effort
                log.debug("closing the consul client failed: %r", exc)

    # -- sessions ----------------------------------------------------------------------------

    async def _destroy(self, session: str) -> None:
        """Destroy ``session`` (its keys are deleted at once); best effort, never raises."""
        if self._closed:
            return
        try:
            await self._call("session destroy", lambda c: c.session.destroy(session))
        except Exception as exc:  # best effort
            log.debug("destroying consul session %s failed: %s", session, exc)

    async def _create_session(self, ttl: float) -> str:
        granted = _granted_seconds(ttl)
        sid = await self._call("session create", lambda c: c.session.create(
            name="pgha", behavior="delete", ttl=granted, lock_delay=LOCK_DELAY, checks=[]))
        log.debug("created consul session %s (ttl %ss)", sid, granted)
        return str(sid)

    async def _ensure_session(self) -> str:
        async with self._session_lock:
            if self._session is None:
                self._session = await self._create_session(self.ttl)
            return self._session

    async def _renew(self, session: str) -> bool:
        """One renew of ``session``; False when Consul answers 404 (it dropped it)."""
        try:
            await self._call("session renew", lambda c: c.session.renew(session))
        except consul.NotFound:
            return False
        return True

    async def keepalive(self) -> None:
        """One session renew (or a create when there is none), and one of the retired session
        if any. A 404 means Consul dropped the session: it is forgotten and SessionExpired
        raised."""
        retired = self._retired
        if retired is not None and not await self._renew(retired[0]):
            if self._retired == retired:
                self._retired = None
            raise SessionExpired(f"consul retired session {retired[0]} expired")
        session = self._session
        if session is None:
            await self._ensure_session()
            return
        if not await self._renew(session):
            if self._session == session:
                self._session = None
            raise SessionExpired(f"consul session {session} expired")

    async def open_session(self, ttl: float) -> None:
        """Create a session for ``ttl`` and make it current; the previous one (if any) is
        retired (see :meth:`KVStore.open_session`)."""
        if self._retired is not None:
            raise ValueError("a retired consul session is still open")
        async with self._session_lock:
            new = await self._create_session(ttl)
            old, old_ttl = self._session, self.session_ttl
            self._session, self.ttl = new, ttl
            if old is not None:
                self._retired = (old, old_ttl)

    async def close_retired(self) -> None:
        """Destroy the retired session (best effort; forgotten either way)."""
        retired, self._retired = self._retired, None
        if retired is not None:
            await self._destroy(retired[0])

    # -- key/value ---------------------------------------------------------------------------

    async def _list(self, key: str, index: int = 0, wait: float = 0.0
                    ) -> tuple[int, list[dict[str, Any]]]:
        """Recursive read of ``key`` (a wire key); blocking when ``index`` > 0."""
        timeout = self.timeout + (wait * 17 / 16 if index else 0.0)
        idx, items = await self._call(f"get {key}", lambda c: c.kv.get(
            key, recurse=True, index=index or None, wait=f"{wait:g}s" if index else None),
            timeout)
        return max(1, int(idx)), list(items or [])

    async def get_prefix(self, prefix: str) -> Snapshot:
        index, items = await self._list(_wire(prefix))
        return Snapshot(index, {kv.key: kv for kv in map(_key_value, items)})

    async def _txn(self, what: str, ops: list[dict[str, Any]]) -> bool:
        """Run KV operations atomically; False when Consul rolled them back (409)."""
        params = [("dc", self.dc)] if self.dc else []
        body = json.dumps([{"KV": op} for op in ops])
        response = await self._call(what, lambda c: c.http.put(  # raw answer: 409 is no error
            lambda r: r, "/v1/txn", params=params, headers=c.prepare_headers(), data=body))
        if response.code == 200:
            return True
        where = f"consul {self.host}:{self.port}: {what}"
        if response.code != 409:
            raise DCSError(f"{where} failed: {response.code} {response.body}")
        try:
            errors = [str(e.get("What")) for e in json.loads(response.body)["Errors"] or []]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DCSError(f"{where}: unreadable answer {response.body!r}") from exc
        self._check_session("; ".join(errors), where)
        log.debug("%s rolled back: %s", where, "; ".join(errors))
        return False

    async def _lock_if(self, key: str, value: bytes, *checks: dict[str, Any]) -> bool:
        """``checks`` (and the operations among them) then acquire ``key`` with ``value`` for
        our session, atomically."""
        session = await self._ensure_session()
        return await self._txn(f"put {_ours(key)}", [
            *checks, {"Verb": "lock", "Key": key, "Value": _b64(value), "Session": session}])

    async def create(self, key: str, value: bytes, *, ephemeral: bool = False) -> bool:
        k = _wire(key)
        if ephemeral:
            return await self._lock_if(k, value, {"Verb": "check-not-exists", "Key": k})
        ok = await self._call(f"create {key}", lambda c: c.kv.put(k, value, cas=0))
        return ok is True

    async def put(self, key: str, value: bytes, *, ephemeral: bool = False,
                  if_revision: int | None = None) -> bool:
        """An ephemeral write takes the key over even from another session (delete + lock in
        one transaction) - as etcd rebinds a key to the writer's lease; with ``if_revision``
        the transaction checks the key's ModifyIndex first, so a key held by a previous
        session of ours is moved to the current one only if nobody changed it meanwhile
        (DESIGN.md safety rule 7; no gap in which another member could take it). False when
        the check fails, or when Consul's lock-delay still protects the key (a session that
        held it was invalidated within ``lock_delay``)."""
        k = _wire(key)
        if if_revision == 0:
            return await self.create(key, value, ephemeral=ephemeral)
        if if_revision is not None:
            if ephemeral:
                return await self._lock_if(
                    k, value, {"Verb": "check-index", "Key": k, "Index": if_revision},
                    {"Verb": "delete", "Key": k})
            ok = await self._call(f"put {key}", lambda c: c.kv.put(k, value, cas=if_revision))
            return ok is True
        if not ephemeral:
            await self._call(f"put {key}", lambda c: c.kv.put(k, value))
            return True
        session = await self._ensure_session()
        if await self._call(f"put {key}", lambda c: c.kv.put(k, value, acquire=session)):
            return True
        return await self._lock_if(k, value, {"Verb": "delete", "Key": k})

    async def delete(self, key: str, *, if_value: bytes | None = None,
                     if_revision: int | None = None) -> bool:
        k = _wire(key)
        drop = {"Verb": "delete", "Key": k}
        if if_value is None:
            check: dict[str, Any] = {"Verb": "get", "Key": k}
            if if_revision is not None:
                check = {"Verb": "check-index", "Key": k, "Index": if_revision}
            return await self._txn(f"delete {key}", [check, drop])
        for _ in range(3):  # the key may change between the read and the delete
            item = (await self.get_prefix(key)).items.get(key)
            if item is None or item.value != if_value or if_revision not in (None, item.revision):
                return False
            check = {"Verb": "check-index", "Key": k, "Index": item.revision}
            if await self._txn(f"delete {key}", [check, drop]):
                return True
        return False

    # -- watch -------------------------------------------------------------------------------

    async def _watch_read(self, key: str, index: int) -> tuple[int, dict[str, KeyValue]] | None:
        """One (blocking when ``index`` > 0) read: the index and every key; None when the
        store was closed meanwhile."""
        read = asyncio.ensure_future(self._list(key, index, self.watch_wait))
        closed = asyncio.ensure_future(self._closed_event.wait())
        try:
            await asyncio.wait({read, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not read.done():
                read.cancel()
                await asyncio.gather(read, return_exceptions=True)
        if self._closed_event.is_set() or read.cancelled():
            return None
        idx, items = read.result()
        return idx, {kv.key: kv for kv in map(_key_value, items)}

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        """Changes under ``prefix`` after ``start_revision``: blocking reads from the last
        ``X-Consul-Index`` seen, each answer compared with the previous one: a changed key
        gives ``WatchEvent(ModifyIndex, key, kv=...)`` (the blocking read returns the values
        anyway: ``kv`` is the key exactly as ``get_prefix`` returns it at that ModifyIndex, at
        no extra request), a vanished one ``deleted=True`` at the answer's index. The first
        read, and the first after a failure (retried with backoff 0.1 s doubling to 2 s), names
        the keys written since, then adds ``WatchEvent(index, None)``
        (deletions cannot be named) unless nothing changed. An index going backwards
        (tombstones reaped, state lost) gives ``WatchEvent(index, None)`` and the watch goes
        on from there. Ends when the store is closed or the consumer stops iterating."""
        key = _wire(prefix)
        last = start_revision
        known: dict[str, int] | None = None  # key -> ModifyIndex at index ``last``
        resync = False
        backoff = 0.1
        while not self._closed:
            try:
                answer = await self._watch_read(key, last if known is not None else 0)
            except DCSError as exc:
                if self._closed:
                    return
                log.log(logging.INFO if backoff == 0.1 else logging.DEBUG,
                        "consul watch of %s failed: %s", prefix, exc)
                known, resync = None, True
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff):
                        await self._closed_event.wait()
                backoff = min(2.0, backoff * 2)
                continue
            if answer is None:
                return
            index, read = answer
            current = {k: kv.revision for k, kv in read.items()}
            backoff = 0.1
            if known is None or index < last:
                events = [WatchEvent(kv.revision, k, kv=kv) for k, kv in read.items()
                          if kv.revision > last]
                if resync or index != last:
                    events.append(WatchEvent(index, None))
            else:
                events = [WatchEvent(kv.revision, k, kv=kv) for k, kv in read.items()
                          if known.get(k) != kv.revision]
                events += [WatchEvent(index, k, deleted=True) for k in known if k not in current]
                if not events and index > last:
                    events.append(WatchEvent(index, None))
            events.sort(key=lambda e: e.revision)
            known, last, resync = current, index, False
            for event in events:
                yield event
