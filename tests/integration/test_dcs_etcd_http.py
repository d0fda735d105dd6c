"""The etcd JSON-gateway client (pgha.dcs.etcd_http) beyond the contract suite: TLS with a
client certificate plus etcd authentication, auth token expiry and renewal, endpoint failover
(a stopped member of a 3-member cluster; a dead first endpoint), and the default client choice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from tests.support.etcd import EtcdCluster, EtcdServer, etcd_available, free_port
from tests.support.etcd_tls import EtcdTlsServer

from pgha.dcs.base import DCSError, WatchEvent
from pgha.dcs.etcd_http import EtcdHttpStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not etcd_available(), reason="etcd is not installed"),
]

USER, PASSWORD = "root", "s3cret"


@pytest.fixture(scope="module")
def tls_etcd() -> Iterator[EtcdTlsServer]:
    """TLS, client certificates required; no etcd authentication (etcd 3.4's gateway refuses
    /v3/auth/authenticate when client-cert-auth is on: "CommonName of client sending a request
    against gateway will be ignored")."""
    server = EtcdTlsServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def auth_etcd() -> Iterator[EtcdTlsServer]:
    """TLS without client certificates, etcd authentication on, tokens expiring after 2 s."""
    server = EtcdTlsServer(token_ttl=2, client_cert_auth=False)
    server.start()
    server.enable_auth(USER, PASSWORD)
    yield server
    server.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[EtcdCluster]:
    c = EtcdCluster(3)
    c.start()
    yield c
    c.close()


def _tls_store(server: EtcdTlsServer, **kwargs: object) -> EtcdHttpStore:
    return EtcdHttpStore(server.endpoints, ttl=5, timeout=3, ca_cert=server.certs["cacert"],
                         cert_cert=server.certs["cert"], cert_key=server.certs["key"],
                         **kwargs)  # type: ignore[arg-type]


async def _next_event(events: object, limit: float = 10) -> WatchEvent:
    async with asyncio.timeout(limit):
        return await events.__anext__()  # type: ignore[attr-defined, no-any-return]


async def test_tls_client_cert(tls_etcd: EtcdTlsServer) -> None:
    async with _tls_store(tls_etcd) as kv:
        assert await kv.create("/t/leader", b"a", ephemeral=True)
        snap = await kv.get_prefix("/t/")
        assert snap.items["/t/leader"].session == kv.session_id
        events = kv.watch("/t/", snap.revision)
        await kv.put("/t/x", b"1")
        event = await _next_event(events)
        assert (event.key, event.kv is not None and event.kv.value) == ("/t/x", b"1")
        await kv.keepalive()


async def test_tls_without_client_cert_is_refused(tls_etcd: EtcdTlsServer) -> None:
    async with EtcdHttpStore(tls_etcd.endpoints, ttl=5, timeout=3,
                             ca_cert=tls_etcd.certs["cacert"]) as kv:
        with pytest.raises(DCSError):
            await kv.get_prefix("/t/")


def _auth_store(server: EtcdTlsServer, password: str = PASSWORD) -> EtcdHttpStore:
    return EtcdHttpStore(server.endpoints, ttl=5, timeout=3, ca_cert=server.certs["cacert"],
                         username=USER, password=password)


async def test_auth(auth_etcd: EtcdTlsServer) -> None:
    async with _auth_store(auth_etcd) as kv:
        assert await kv.create("/t/leader", b"a", ephemeral=True)
        await kv.keepalive()
        events = kv.watch("/t/", (await kv.get_prefix("/t/")).revision)
        await kv.put("/t/y", b"1")
        assert (await _next_event(events)).key == "/t/y"
    async with _auth_store(auth_etcd, "wrong") as bad:
        with pytest.raises(DCSError):
            await bad.get_prefix("/t/")


async def test_expired_token_is_renewed(auth_etcd: EtcdTlsServer) -> None:
    tls_etcd = auth_etcd
    async with _auth_store(auth_etcd) as kv:
        await kv.put("/t/a", b"1")
        first = kv._token
        # the server forgets simple tokens after --auth-token-ttl (2 s) without use (a use
        # extends it, so wait without using it)
        await asyncio.sleep(4)
        with pytest.raises(OSError):
            tls_etcd.post("/v3/kv/range", {"key": "eA=="}, token=first)
        await kv.put("/t/a", b"2")  # re-authenticates transparently
        assert kv._token != first
        assert (await kv.get_prefix("/t/a")).items["/t/a"].value == b"2"


async def test_failover_with_a_stopped_member(cluster: EtcdCluster) -> None:
    async with EtcdHttpStore(cluster.endpoints, ttl=5, timeout=2) as kv:
        assert await kv.create("/f/leader", b"a", ephemeral=True)
        snap = await kv.get_prefix("/f/")
        seen: list[WatchEvent] = []
        started = asyncio.Event()

        async def collect() -> None:
            async for event in kv.watch("/f/", snap.revision):
                seen.append(event)
                started.set()
                if event.key == "/f/x":
                    return

        collector = asyncio.create_task(collect())
        await kv.put("/f/y", b"0")
        async with asyncio.timeout(10):  # the watch runs on the first member
            await started.wait()
        first = cluster.members[0]
        await first.astop()
        try:
            deadline = time.monotonic() + 20
            while True:  # calls fail at most until failover reaches a live member
                try:
                    await kv.keepalive()
                    await kv.put("/f/x", b"1")
                    break
                except DCSError:
                    assert time.monotonic() < deadline
            assert kv.endpoint != first.endpoints[0]
            async with asyncio.timeout(20):
                await collector
            assert any(e.key is None for e in seen)  # the gap was reported
        finally:
            collector.cancel()
            await first.astart()


async def test_dead_first_endpoint() -> None:
    server = EtcdServer()
    await server.astart()
    try:
        dead = ("127.0.0.1", free_port())
        async with EtcdHttpStore([dead, *server.endpoints], ttl=5, timeout=2) as kv:
            with pytest.raises(DCSError):
                await kv.get_prefix("/d/")
            assert kv.endpoint == server.endpoints[0]
            assert await kv.put("/d/k", b"v")
    finally:
        server.close()


def test_factory_default_is_http(monkeypatch: pytest.MonkeyPatch) -> None:
    from pgha.dcs.factory import etcd_client_kind

    monkeypatch.delenv("PGHA_ETCD_CLIENT", raising=False)
    assert etcd_client_kind() == "http"
