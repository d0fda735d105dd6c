"""etcd v3 backend of :class:`~pgha.dcs.base.KVStore` over etcd's JSON gateway (HTTP ``/v3/...``)
with the aiohttp client: no gRPC runtime, no extra threads.

This is the default etcd client; ``PGHA_ETCD_CLIENT=grpc`` in the agent's environment selects
the gRPC backend (:mod:`pgha.dcs.etcd`) instead. Both map the protocol the same way:

* session = one lease of ``floor(ttl - 0.5)`` seconds (``/v3/lease/grant``), granted on demand;
  ``keepalive()`` is one ``/v3/lease/keepalive`` round trip (two while a retired lease exists);
  an answer with TTL <= 0 or "lease not found" raises SessionExpired and forgets the lease;
* create-if-absent = ``/v3/kv/txn`` comparing ``create_revision == 0``; compare-and-set =
  ``/v3/kv/txn`` comparing ``mod_revision`` (and/or the value); ephemeral = the ``lease`` field;
* ``get_prefix`` = one ``/v3/kv/range`` with ``range_end``; the snapshot revision is the header's;
* ``watch`` = a streaming ``/v3/watch`` (see :mod:`pgha.dcs.etcd_watch`).

Failure behaviour: every call runs under ``asyncio.timeout(self.timeout)``; timeouts, HTTP and
connection errors become :class:`DCSError`. After a connection-level error (or a 5xx reply) the
*next* call goes to the next endpoint (round robin); a request-level refusal keeps the endpoint.
With ``username``/``password`` a token from ``/v3/auth/authenticate`` is sent in the
``Authorization`` header; a reply saying the token is invalid (expired) re-authenticates once
and repeats the request. TLS (``https``) is used when ``ca_cert`` is given, with the client
certificate ``cert_cert``/``cert_key`` if given. Known limit: etcd's gateway refuses
``/v3/auth/authenticate`` from a client presenting a certificate when etcd runs with
``--client-cert-auth`` ("CommonName of client sending a request against gateway will be
ignored"); such a setup (certificates *and* username/password) needs ``PGHA_ETCD_CLIENT=grpc``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from pgha.dcs import etcd_json as J
from pgha.dcs.base import DCSError, SessionExpired, Snapshot, WatchEvent
from pgha.dcs.etcd_lease import EtcdLeaseSessions, lease_seconds

log = logging.getLogger("pgha.dcs")

REQUIRE_LEADER = {"Grpc-Metadata-hasleader": "true"}
CONNECTION_ERRORS = (aiohttp.ClientError, OSError, ValueError)



def make_ssl_context(ca_cert: str | None, cert_cert: str | None,
                     cert_key: str | None) -> ssl.SSLContext | None:
    """Client TLS context verifying the server with ``ca_cert`` (None: plain HTTP)."""
    if ca_cert is None:
        return None
    try:
        context = ssl.create_default_context(cafile=ca_cert)
        if cert_cert is not None:
            context.load_cert_chain(cert_cert, cert_key)
    except (OSError, ssl.SSLError) as exc:
        raise DCSError(f"etcd TLS files unusable: {exc}") from exc
    return context


class EtcdHttpStore(EtcdLeaseSessions):
    """KVStore on an etcd v3 cluster at ``endpoints`` (``[(host, port), ...]``) via its gateway.

    Arguments as :class:`pgha.dcs.etcd.EtcdStore`."""

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
        self._ssl = make_ssl_context(ca_cert, cert_cert, cert_key)
        self._scheme = "https" if self._ssl is not None else "http"
        self._answered: dict[int, float] = {}  # endpoint index -> loop time of its last answer
        self._token: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self.closed_event = asyncio.Event()
        self.watch_readers: set[asyncio.Task[None]] = set()  # cancelled by close()

    # -- connection ------------------------------------------------------------------------

    @property
    def endpoint(self) -> tuple[str, int]:
        """The endpoint the next call goes to."""
        return self.endpoints[self._index]

    @property
    def closed(self) -> bool:
        return self._closed

    def url(self, index: int, path: str) -> str:
        host, port = self.endpoints[index]
        if ":" in host:
            host = f"[{host}]"
        return f"{self._scheme}://{host}:{port}{path}"

    def http(self) -> aiohttp.ClientSession:
        """The shared HTTP session (created on first use, inside the running loop)."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else False,
                                             limit=0, enable_cleanup_closed=False)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def answered_within(self, index: int, seconds: float) -> bool:
        """Endpoint ``index`` answered a call of ours in the last ``seconds``."""
        at = self._answered.get(index)
        return at is not None and asyncio.get_running_loop().time() - at < seconds

    def _rotate(self, index: int) -> None:
        if self._index == index:
            self._index = (index + 1) % len(self.endpoints)

    async def _authenticate(self, index: int) -> str | None:
        if self._username is None:
            return None
        body = {"name": self._username, "password": self._password}
        reply = await self._send(index, "/v3/auth/authenticate", body, REQUIRE_LEADER)
        token = reply.get("token")
        if not token:
            raise J.GatewayError(200, 0, "authenticate gave no token")
        self._token = str(token)
        return self._token

    def forget_token(self) -> None:
        """Drop the auth token: the next request authenticates again."""
        self._token = None

    async def auth_headers(self, index: int) -> dict[str, str]:
        """Request headers: the ``hasleader`` requirement (gRPC metadata through the gateway:
        a member cut off from the raft leader refuses instead of answering stale data) and the
        auth token (authenticating first when there is none)."""
        headers = dict(REQUIRE_LEADER)
        token = self._token
        if token is None and self._username is not None:
            token = await self._authenticate(index)
        if token:
            headers["Authorization"] = token
        return headers

    async def _send(self, index: int, path: str, body: dict[str, Any],
                    headers: dict[str, str] | None) -> dict[str, Any]:
        async with self.http().post(self.url(index, path), json=body, headers=headers) as resp:
            try:
                data: Any = await resp.json(content_type=None)
            except ValueError:
                data = await resp.text()
            if resp.status != 200:
                raise J.error_of(resp.status, data)
            if isinstance(data, dict) and "error" in data:  # streaming endpoints
                raise J.error_of(resp.status, data)
            if not isinstance(data, dict):
                raise J.GatewayError(resp.status, 0, f"unexpected reply {str(data)[:100]}")
            return data

    async def call(self, what: str, path: str, body: dict[str, Any],
                   lease: int | None = None) -> dict[str, Any]:
        """POST ``body`` to ``path`` under the timeout; every failure becomes DCSError.
        ``lease`` is the lease the request names, forgotten when etcd reports it unknown."""
        if self._closed:
            raise DCSError("etcd store is closed")
        index = self._index
        host, port = self.endpoints[index]
        where = f"{host}:{port}"
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    answer = await self._send(index, path, body, await self.auth_headers(index))
                except J.GatewayError as exc:
                    if not (exc.invalid_token and self._username is not None):
                        raise
                    self._token = None
                    log.debug("etcd %s: auth token refused, authenticating again", where)
                    answer = await self._send(index, path, body, await self.auth_headers(index))
            self._answered[index] = asyncio.get_running_loop().time()
            return answer
        except TimeoutError as exc:
            self._rotate(index)
            raise DCSError(f"etcd {where}: {what} timed out after {self.timeout}s") from exc
        except J.GatewayError as exc:
            if exc.lease_not_found:
                if lease is not None and self._lease_id == lease:
                    self._lease_id = None
                raise SessionExpired(f"etcd {where}: {what}: lease {lease or 0:x} is gone") from exc
            if not exc.request_level:
                self._rotate(index)
            raise DCSError(f"etcd {where}: {what} failed: {exc}") from exc
        except CONNECTION_ERRORS as exc:
            self._rotate(index)
            raise DCSError(f"etcd {where}: {what} failed: {exc or type(exc).__name__}") from exc

    async def connect(self) -> None:
        """Prepare the client. No network traffic: an unreachable etcd shows up as DCSError in
        the first call."""
        self._closed = False
        self.closed_event = asyncio.Event()

    async def _revoke(self, lease: int) -> None:
        """Revoke ``lease`` (best effort, at most two endpoints tried). Never raises."""
        for _ in range(min(2, len(self.endpoints))):
            try:
                await self.call("revoke lease", "/v3/lease/revoke", {"ID": str(lease)})
                return
            except DCSError as exc:
                log.debug("revoking lease %x failed: %s", lease, exc)

    async def close(self) -> None:
        """Revoke the leases (best effort), close the connections and end running watches.
        Never raises."""
        lease, self._lease_id = self._lease_id, None
        retired, self._retired = self._retired, None
        if not self._closed:
            for one in (lease, retired[0] if retired is not None else None):
                if one is not None:
                    await self._revoke(one)
        self._closed = True
        self.closed_event.set()
        for reader in list(self.watch_readers):
            reader.cancel()
        session, self._session = self._session, None
        if session is not None:
            try:
                await session.close()
            except Exception as exc:  # close never raises
                log.debug("closing the etcd HTTP session failed: %s", exc)

    # -- sessions ----------------------------------------------------------------------------

    async def _grant(self, ttl: float) -> int:
        reply = await self.call("lease grant", "/v3/lease/grant", {"TTL": lease_seconds(ttl)})
        lease = J.as_int(reply.get("ID"))
        if lease == 0:
            raise DCSError(f"etcd lease grant failed: {reply.get('error') or 'no lease id'}")
        log.debug("granted etcd lease %x (ttl %ss)", lease, reply.get("TTL"))
        return lease

    async def _refresh(self, lease: int) -> bool:
        """One keep-alive of ``lease``; False when etcd dropped it."""
        reply = await self.call("keepalive", "/v3/lease/keepalive", {"ID": str(lease)}, lease)
        result = reply.get("result") or {}
        return J.as_int(result.get("TTL")) > 0

    # -- key/value ---------------------------------------------------------------------------

    async def get_prefix(self, prefix: str) -> Snapshot:
        reply = await self.call("get", "/v3/kv/range", J.range_request(prefix))
        items = {kv.key: kv for kv in map(J.key_value, reply.get("kvs") or [])}
        return Snapshot(J.header_revision(reply), items)

    async def _txn(self, what: str, compare: list[dict[str, Any]],
                   success: list[dict[str, Any]], lease: int | None = None
                   ) -> tuple[bool, list[dict[str, Any]]]:
        reply = await self.call(what, "/v3/kv/txn", J.txn_request(compare, success), lease)
        return bool(reply.get("succeeded")), list(reply.get("responses") or [])

    async def create(self, key: str, value: bytes, *, ephemeral: bool = False) -> bool:
        lease = await self._ensure_lease() if ephemeral else None
        ok, _ = await self._txn(f"create {key}", [J.compare_create_absent(key)],
                                [{"request_put": J.put_request(key, value, lease)}], lease)
        return ok

    async def put(self, key: str, value: bytes, *, ephemeral: bool = False,
                  if_revision: int | None = None) -> bool:
        lease = await self._ensure_lease() if ephemeral else None
        if if_revision is None:
            await self.call(f"put {key}", "/v3/kv/put", J.put_request(key, value, lease), lease)
            return True
        ok, _ = await self._txn(f"put {key}", [J.compare_mod(key, if_revision)],
                                [{"request_put": J.put_request(key, value, lease)}], lease)
        return ok

    async def delete(self, key: str, *, if_value: bytes | None = None,
                     if_revision: int | None = None) -> bool:
        request = {"key": J.b64(key)}
        if if_value is None and if_revision is None:
            reply = await self.call(f"delete {key}", "/v3/kv/deleterange", request)
            return J.as_int(reply.get("deleted")) > 0
        checks = []
        if if_value is not None:
            checks.append(J.compare_value(key, if_value))
        if if_revision is not None:
            checks.append(J.compare_mod(key, if_revision))
        ok, responses = await self._txn(f"delete {key}", checks,
                                        [{"request_delete_range": request}])
        if not ok or not responses:
            return False
        return J.as_int((responses[0].get("response_delete_range") or {}).get("deleted")) > 0

    # -- watch -------------------------------------------------------------------------------

    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        """See :func:`pgha.dcs.etcd_watch.watch`."""
        from pgha.dcs.etcd_watch import watch

        return watch(self, prefix, start_revision)
