"""The start-up check for a live agent under our name (pgha.agent.unique): what answers at a
member's ``api_url`` counts as alive, asked with the cluster's REST client TLS settings."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from pgha.agent.unique import api_answers, duplicate_message
from pgha.cli.localcluster import free_port
from pgha.config import Config
from pgha.config.loader import parse_config


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    return paths


def config(**restapi: Any) -> Config:
    return parse_config({"scope": "demo", "name": "pg1", "etcd": {"host": "127.0.0.1:2379"},
                         "postgresql": {"data_dir": "/tmp/none", "bin_dir": "/tmp"},
                         "restapi": {"listen": "127.0.0.1:8008", **restapi}}, {})


def tls_config(pki: dict[str, Path]) -> Config:
    """The cluster's configuration: REST over TLS, client certificates required."""
    return config(certfile=str(pki["cert"]), keyfile=str(pki["key"]), cafile=str(pki["ca"]),
                  verify_client="required")


@asynccontextmanager
async def serve(status: int, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"state": "running"}, status=status)

    app = web.Application()
    app.router.add_get("/patroni", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls).start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}/patroni"
    finally:
        await runner.cleanup()


def server_tls(pki: dict[str, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca"]))
    ctx.load_cert_chain(str(pki["cert"]), str(pki["key"]))
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def test_message_is_patronis() -> None:
    assert duplicate_message("pg1") == "Can't start; there is already a node named 'pg1' running"


@pytest.mark.parametrize("status", [200, 401, 503])
async def test_any_http_answer_is_a_live_agent(status: int) -> None:
    async with serve(status) as url:
        why = await api_answers(url, config(), timeout=3.0)
    assert why is not None and f"HTTP {status}" in why


async def test_nothing_listening_is_not_alive() -> None:
    url = f"http://127.0.0.1:{free_port()}/patroni"
    assert await api_answers(url, config(), timeout=3.0) is None
    assert await api_answers("not a url", config(), timeout=3.0) is None


async def test_rest_requiring_client_certificates_is_asked_with_the_clusters_tls(
        pki: dict[str, Path]) -> None:
    """The reported bug: the member's REST API demands a client certificate; asked with the
    cluster's settings (the certificate of restapi.certfile) it answers."""
    async with serve(200, server_tls(pki)) as url:
        why = await api_answers(url, tls_config(pki), timeout=3.0)
        assert why is not None and "HTTP 200" in why
        # without the cluster's certificate the handshake fails - still a live process there
        refused = await api_answers(url, config(cafile=str(pki["ca"])), timeout=3.0)
        assert refused is not None and "accepted the connection" in refused


@pytest.mark.parametrize("linger", [False, True])
async def test_a_proxy_with_nothing_behind_it_is_not_alive(linger: bool) -> None:
    """A TCP proxy (port forward, load balancer) in front of a dead agent accepts the
    connection, then closes it (at once, or once the request arrived) without answering."""
    import asyncio

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if linger:
            await reader.read(100)
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        assert await api_answers(f"http://127.0.0.1:{port}/patroni", config(), 3.0) is None
        assert await api_answers(f"https://127.0.0.1:{port}/patroni", config(), 3.0) is None
