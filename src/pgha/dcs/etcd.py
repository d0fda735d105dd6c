"""etcd v3 backend of :class:`~pgha.dcs.base.KVStore`, over gRPC with aetcd.

Mapping onto etcd:

* session = one etcd lease of ``floor(ttl - 0.5)`` seconds (see ``session_ttl``), granted on
  demand (first ephemeral write or first ``keepalive()``); ``keepalive()`` is one
  LeaseKeepAlive round trip (two while a retired lease exists); ``open_session`` grants a new
  lease and retires the old one, ``close_retired`` revokes it;
* create-if-absent = transaction comparing ``create_revision == 0``;
  compare-and-set = transaction comparing ``mod_revision`` (and/or the value);
* ``get_prefix`` = one linearizable range request; the snapshot revision is the header revision;
* ``watch`` = an etcd watch from ``start_revision + 1`` on a connection of its own.

Failure behaviour: every call runs under ``asyncio.timeout(self.timeout)`` (aetcd's own
per-request deadline follows a changed ``timeout`` from the next call); timeouts, gRPC and
connection errors become :class:`DCSError`. After a connection-level error the client of the
current endpoint is dropped and the *next* call goes to the next endpoint (round robin); a
request-level refusal (bad argument, failed precondition) keeps the endpoint. A write that names
a lease etcd no longer knows raises :class:`SessionExpired` and forgets the lease.

Several tasks share the client (decision loop, keep-alive). Closing a dropped client closes its
gRPC channel, and grpc.aio then cancels the calls still active on it: their awaiting tasks get
``CancelledError`` although nobody cancelled them (see ``etcd_client.stray_cancellation``).
Such a call fails with DCSError like any call on a failed connection; a real cancellation of
the calling task propagates unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aetcd
import grpc  # type: ignore[import-untyped]

from pgha.dcs.base import DCSError, KeyValue, SessionExpired, Snapshot, WatchEvent
from pgha.dcs.etcd_client import (
    CHANNEL_OPTIONS,
    CLIENT_ERRORS,
    REQUEST_ERRORS,
    WATCH_ERRORS,
    TlsClient,
    close_in_background,
    connect_client,
    read_file,
    set_request_timeout,
    stray_cancellation,
)
from pgha.dcs.etcd_lease import EtcdLeaseSessions, lease_seconds

log = logging.getLogger("pgha.dcs")

_T = TypeVar("_T")


def key_value(kv: Any) -> KeyValue:
    """A KeyValue from an aetcd/protobuf ``mvccpb.KeyValue`` (a range result's or a watch
    event's: both are built here, so a key seen by the watch equals the key as read)."""
    key = bytes(kv.key).decode("utf-8", "replace")
    lease = int(kv.lease)
    return KeyValue(key, bytes(kv.value), int(kv.mod_revision), lease != 0,
                    f"{lease:x}" if lease else None)


class EtcdStore(EtcdLeaseSessions):
    """KVStore on an etcd v3 cluster reachable at ``endpoints`` (``[(host, port), ...]``).

    TLS is used when ``ca_cert`` is given (``cert_cert``/``cert_key``: client certificate and
    key, PEM files, read once here: DCSError if unreadable). ``username``/``password`` enable
    etcd authentication.
    """

    def __init__(
        self,
        endpoints: list[tuple[str, int]],
        ttl: float,
        timeout: float,
        username: str | None = None,
        password: str | None = None,
        ca_cert: str | None = None,
        cert_key: str | None = None,
        cert_cert: str | None = None,
    ) -> None:
        super().__init__(endpoints, ttl, timeout, username, password)
        self._credentials: Any = None
        if ca_cert is not None:
            self._credentials = grpc.ssl_channel_credentials(
                read_file(ca_cert), read_file(cert_key), read_file(cert_cert)
            )
        self._client: Any = None
        self._closed = False
        self._closed_event = asyncio.Event()
        self._watch_clients: set[Any] = set()

    # -- connection management -------------------------------------------------------------

    @property
    def endpoint(self) -> tuple[str, int]:
        """The endpoint the next call goes to."""
        return self.endpoints[self._index]

    def _new_client(self, index: int) -> Any:
        host, port = self.endpoints[index]
        kwargs: dict[str, Any] = {
            "username": self._username,
            "password": self._password,
            "timeout": self.timeout,
            "options": CHANNEL_OPTIONS,
        }
        if self._credentials is not None:
            return TlsClient(host, port, credentials=self._credentials, **kwargs)
        return aetcd.Client(host, port, **kwargs)

    async def _drop(self, client: Any) -> None:
        """Forget ``client`` after a connection-level failure; the next call uses the next
        endpoint. A no-op when another task already replaced it."""
        if self._client is not client:
            return
        self._client = None
        self._index = (self._index + 1) % len(self.endpoints)
        # Closed in the background, never awaited here: aetcd's close() can swallow the
        # caller's cancellation and then wait forever on a dead stream (seen: the decision
        # loop hung after an etcd member died), so no request path may wait on it.
        close_in_background(client)

    async def _call(
        self, what: str, fn: Callable[[Any], Awaitable[_T]], lease: int | None = None
    ) -> _T:
        """Run ``fn(client)`` under the timeout and translate every failure to DCSError.
        ``lease`` is the lease the request names, forgotten when etcd reports it unknown."""
        if self._closed:
            raise DCSError("etcd store is closed")
        if self._client is None:
            self._client = self._new_client(self._index)
        client = self._client
        set_request_timeout(client, self.timeout)
        host, port = self.endpoints[self._index]
        where = f"{host}:{port}"
        try:
            async with asyncio.timeout(self.timeout):
                await connect_client(client)
                return await fn(client)
        except TimeoutError as exc:
            await self._drop(client)
            raise DCSError(f"etcd {where}: {what} timed out after {self.timeout}s") from exc
        except CLIENT_ERRORS as exc:
            text = str(exc) or exc.__class__.__name__
            if "lease not found" in text:
                if lease is not None and self._lease_id == lease:
                    self._lease_id = None
                raise SessionExpired(f"etcd {where}: {what}: lease {lease or 0:x} is gone") from exc
            if not isinstance(exc, REQUEST_ERRORS):
                await self._drop(client)
            raise DCSError(f"etcd {where}: {what} failed: {text}") from exc
        except OSError as exc:
            await self._drop(client)
            raise DCSError(f"etcd {where}: {what} failed: {exc}") from exc
        except asyncio.CancelledError:
            if not stray_cancellation():
                raise  # the caller is being cancelled
            await self._drop(client)
            raise DCSError(f"etcd {where}: {what} aborted: its connection was closed") from None

    async def connect(self) -> None:
        """Prepare the client. No network traffic: the connection is opened by the first call
        (aetcd connects lazily), so an unreachable etcd shows up as DCSError there."""
        self._closed = False
        self._closed_event = asyncio.Event()
        if self._client is None:
            self._client = self._new_client(self._index)

    async def _revoke(self, lease: int) -> None:
        """Revoke ``lease`` (best effort, at most two endpoints tried). Never raises."""
        attempts = min(2, len(self.endpoints))
        while not self._closed and attempts > 0:
            attempts -= 1
            try:
                await self._call("revoke lease", lambda c: c.revoke_lease(lease))
                return
            except DCSError as exc:
                log.debug("revoking lease %x failed: %s", lease, exc)

    async def close(self) -> None:
        """Revoke the leases (best effort), close every connection and end running watches.
        Never raises."""
        lease, self._lease_id = self._lease_id, None
        retired, self._retired = self._retired, None
        for one in (lease, retired[0] if retired is not None else None):
            if one is not None:
                await self._revoke(one)
        self._closed = True
        self._closed_event.set()
        client, self._client = self._client, None
        for other in [client, *self._watch_clients]:
            if other is not None:
                close_in_background(other)

    # -- sessions ----------------------------------------------------------------------------

    async def _grant(self, ttl: float) -> int:
        seconds = lease_seconds(ttl)
        lease = await self._call("lease grant", lambda c: c.lease(seconds))
        log.debug("granted etcd lease %x (ttl %ss)", int(lease.id), lease.ttl)
        return int(lease.id)

    async def _refresh(self, lease: int) -> bool:
        """One LeaseKeepAlive of ``lease``; False when etcd dropped it."""
        reply = await self._call("keepalive", lambda c: c.refresh_lease(lease), lease)
        return reply is not None and int(reply.TTL) > 0

    # -- key/value ---------------------------------------------------------------------------

    async def get_prefix(self, prefix: str) -> Snapshot:
        result = await self._call("get", lambda c: c.get_prefix(prefix.encode()))
        items = {kv.key: kv for kv in map(key_value, result.kvs)}
        return Snapshot(int(result.header.revision), items)

    async def _txn(self, what: str, compare: Callable[[Any], list[Any]],
                   success: Callable[[Any], list[Any]], lease: int | None = None
                   ) -> tuple[bool, list[Any]]:
        async def run(c: Any) -> tuple[bool, list[Any]]:
            ok, responses = await c.transaction(
                compare=compare(c.transactions), success=success(c.transactions), failure=[]
            )
            return bool(ok), list(responses)

        return await self._call(what, run, lease)

    async def create(self, key: str, value: bytes, *, ephemeral: bool = False) -> bool:
        lease = await self._ensure_lease() if ephemeral else None
        k = key.encode()
        ok, _ = await self._txn(
            f"create {key}",
            lambda t: [t.create(k) == 0],
            lambda t: [t.put(k, value, lease=lease)],
            lease,
        )
        return ok

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        ephemeral: bool = False,
        if_revision: int | None = None,
    ) -> bool:
        lease = await self._ensure_lease() if ephemeral else None
        k = key.encode()
        if if_revision is None:
            await self._call(f"put {key}", lambda c: c.put(k, value, lease=lease), lease)
            return True
        ok, _ = await self._txn(
            f"put {key}",
            lambda t: [t.mod(k) == if_revision],
            lambda t: [t.put(k, value, lease=lease)],
            lease,
        )
        return ok

    async def delete(
        self,
        key: str,
        *,
        if_value: bytes | None = None,
        if_revision: int | None = None,
    ) -> bool:
        k = key.encode()
        if if_value is None and if_revision is None:
            result = await self._call(f"delete {key}", lambda c: c.delete(k))
            return result is not None and int(result.deleted) > 0

        def compare(t: Any) -> list[Any]:
            checks = []
            if if_value is not None:
                checks.append(t.value(k) == if_value)
            if if_revision is not None:
                checks.append(t.mod(k) == if_revision)
            return checks

        ok, responses = await self._txn(f"delete {key}", compare, lambda t: [t.delete(k)])
        return ok and bool(responses) and int(responses[0].response_delete_range.deleted) > 0

    # -- watch -------------------------------------------------------------------------------

    async def _sleep_unless_closed(self, delay: float) -> None:
        try:
            async with asyncio.timeout(delay):
                await self._closed_event.wait()
        except TimeoutError:
            pass

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        """Changes under ``prefix`` after ``start_revision``, in revision order, on a connection
        of its own. On a stream error or disconnect it reconnects (next endpoint, backoff 0.1 s
        doubling to 2 s) and resumes after the last revision seen, first yielding
        ``WatchEvent(last, key=None)``. If that revision was compacted it yields
        ``WatchEvent(current, key=None)`` and resumes from the current revision. A put's event
        carries ``kv`` (equal to what ``get_prefix`` returns for the key at that revision); a
        deletion's revision is the deleting revision. Ends when the
        store is closed or the consumer stops iterating."""
        key = prefix.encode()
        last = start_revision
        index = self._index
        backoff = 0.1
        resync = compacted = False
        while not self._closed:
            client = self._new_client(index)
            self._watch_clients.add(client)
            try:
                async with asyncio.timeout(self.timeout):
                    await connect_client(client)
                    if compacted:
                        current = await client.get_prefix(key, keys_only=True)
                        log.warning("etcd watch of %s: revision %d compacted, resuming at %d",
                                    prefix, last + 1, current.header.revision)
                        last, compacted, resync = int(current.header.revision), False, True
                    stream = await client.watch_prefix(key, start_revision=last + 1)
                backoff = 0.1
                if resync:
                    resync = False
                    yield WatchEvent(last, None)
                async for event in stream:
                    kv = key_value(event.kv)
                    last = max(last, kv.revision)
                    if event.kind == "DELETE":
                        yield WatchEvent(kv.revision, kv.key, deleted=True)
                    else:
                        yield WatchEvent(kv.revision, kv.key, kv=kv)
                log.debug("etcd watch of %s ended, reconnecting", prefix)
            except aetcd.RevisionCompactedError:
                compacted = True
            except asyncio.CancelledError:
                if not stray_cancellation():
                    raise  # the consumer is being cancelled
                log.debug("etcd watch of %s: its connection was closed", prefix)
            except WATCH_ERRORS as exc:
                if not self._closed:  # the first failure of a series at INFO, then DEBUG
                    log.log(logging.INFO if backoff == 0.1 else logging.DEBUG,
                            "etcd watch of %s on %s:%d failed: %s", prefix,
                            *self.endpoints[index], str(exc) or exc.__class__.__name__)
            finally:
                self._watch_clients.discard(client)
                close_in_background(client)
            if self._closed:
                return
            resync = True
            if not compacted:
                index = (index + 1) % len(self.endpoints)
                await self._sleep_unless_closed(backoff)
                backoff = min(2.0, backoff * 2)
