"""``restapi.http_extra_headers``, ``https_extra_headers``, ``server_tokens``, ``ciphers`` and
``request_queue_size`` on the real aiohttp server (in-process; certificates made with trustme):
what a client sees, what the kernel's listening socket holds, bad values refused at load and at
reload with one line naming the key, and a reload applying each of them."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from tests.support.etcd import free_port
from tests.unit.api_support import Source, primary_status

from pgha import __version__
from pgha.api.server import ApiServer
from pgha.api.tls_files import SettingError
from pgha.config import Config, ConfigError, parse_config

AUTH = {"username": "admin", "password": "secret"}
HTTP = {"X-Frame-Options": "DENY", "X-Both": "from-http"}
HTTPS = {"Strict-Transport-Security": "max-age=31536000", "X-Both": "from-https"}
#: TLS 1.2 ciphers for the ECDSA keys trustme issues by default
ALLOWED = "ECDHE-ECDSA-AES256-GCM-SHA384"
EXCLUDED = "ECDHE-ECDSA-AES128-GCM-SHA256"
#: a refused handshake: the alert, or the connection reset before the client reads it
HANDSHAKE_FAILED = (ssl.SSLError, ConnectionResetError)


def raw(**restapi: Any) -> dict[str, Any]:
    return {"scope": "demo", "name": "pg1", "etcd": {"host": "127.0.0.1:2379"},
            "postgresql": {"data_dir": "/tmp/none", "bin_dir": "/tmp"}, "restapi": restapi}


def config(**restapi: Any) -> Config:
    return parse_config(raw(**restapi), {})


class Tls:
    """A CA, a server certificate for 127.0.0.1 in ``dir`` and client contexts trusting it."""

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        leaf = self.ca.issue_cert("127.0.0.1", "localhost")
        self.files = {"certfile": str(directory / "server.crt"),
                      "keyfile": str(directory / "server.key")}
        (directory / "server.crt").write_bytes(leaf.cert_chain_pems[0].bytes())
        (directory / "server.key").write_bytes(leaf.private_key_pem.bytes())

    def client(self, tls12_cipher: str | None = None) -> ssl.SSLContext:
        """A client context; with ``tls12_cipher`` limited to TLS 1.2 and that cipher."""
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        if tls12_cipher:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers(tls12_cipher)
        return ctx


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return Tls(tmp_path)


async def fetch(url: str, method: str = "GET", ctx: ssl.SSLContext | None = None
                ) -> tuple[int, dict[str, str]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, \
            session.request(method, url, ssl=ctx if ctx is not None else True) as resp:
        await resp.read()
        return resp.status, dict(resp.headers)


async def negotiated(port: int, ctx: ssl.SSLContext) -> tuple[str, str]:
    """(protocol, cipher name) of a new TLS connection to ``port``; HANDSHAKE_FAILED when the
    handshake fails."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        obj = writer.get_extra_info("ssl_object")
        return obj.version(), obj.cipher()[0]
    finally:
        writer.close()


def backlogs(server: ApiServer) -> set[int]:
    """The kernel's accept-queue limit of each listening socket (Linux ``TCP_INFO`` of a
    listening socket reports it as ``tcpi_sacked``)."""
    out = set()
    for _, sock in server._sites:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        out.add(struct.unpack_from("=I", info, 28)[0])
    return out


@pytest.fixture
async def plain() -> AsyncIterator[tuple[ApiServer, int]]:
    port = free_port()
    async with ApiServer(Source(primary_status()), config(
            listen=f"127.0.0.1:{port}", authentication=AUTH, http_extra_headers=HTTP,
            https_extra_headers=HTTPS)) as server:
        yield server, port


# --------------------------------------------------------------------------- extra headers

@pytest.mark.parametrize(("method", "path", "code"), [
    ("GET", "/patroni", 200), ("GET", "/replica", 503), ("HEAD", "/primary", 200),
    ("OPTIONS", "/primary", 200), ("GET", "/no/such/path", 503), ("POST", "/reload", 401),
], ids=["status", "failed-check", "head", "options", "unknown", "unauthorized"])
async def test_http_extra_headers_on_every_http_response(
        plain: tuple[ApiServer, int], method: str, path: str, code: int) -> None:
    _, port = plain
    status, headers = await fetch(f"http://127.0.0.1:{port}{path}", method)
    assert status == code
    assert headers["X-Frame-Options"] == "DENY" and headers["X-Both"] == "from-http"
    assert "Strict-Transport-Security" not in headers  # https_extra_headers: HTTPS only


async def test_https_responses_get_both_sets_https_winning(tls: Tls) -> None:
    port = free_port()
    async with ApiServer(Source(primary_status()), config(
            listen=f"127.0.0.1:{port}", http_extra_headers=HTTP, https_extra_headers=HTTPS,
            **tls.files)):
        for path in ("/patroni", "/replica"):
            _, headers = await fetch(f"https://127.0.0.1:{port}{path}", ctx=tls.client())
            assert headers["X-Frame-Options"] == "DENY"
            assert headers["Strict-Transport-Security"] == "max-age=31536000"
            assert headers["X-Both"] == "from-https"


async def test_an_extra_header_replaces_the_responses_own() -> None:
    port = free_port()
    async with ApiServer(Source(primary_status()), config(
            listen=f"127.0.0.1:{port}", server_tokens="minimal",
            http_extra_headers={"Server": "custom", "Cache-Control": "no-store"})):
        _, headers = await fetch(f"http://127.0.0.1:{port}/patroni")
    assert headers["Server"] == "custom" and headers["Cache-Control"] == "no-store"
    assert headers["Content-Type"].startswith("application/json")


# --------------------------------------------------------------------------- server_tokens

@pytest.mark.parametrize(("tokens", "expected"), [
    (None, None), ("Original", None), ("Minimal", f"pgha/{__version__}"),
    ("minimal", f"pgha/{__version__}"), ("ProductOnly", "pgha"), ("PRODUCTONLY", "pgha"),
])
async def test_server_header_follows_server_tokens(tokens: str | None,
                                                   expected: str | None) -> None:
    port = free_port()
    section: dict[str, Any] = {"listen": f"127.0.0.1:{port}"}
    if tokens is not None:
        section["server_tokens"] = tokens
    async with ApiServer(Source(primary_status()), config(**section)):
        for path in ("/patroni", "/nowhere"):
            _, headers = await fetch(f"http://127.0.0.1:{port}{path}")
            if expected is None:  # aiohttp's own: Python/<x.y> aiohttp/<version>
                assert headers["Server"].startswith("Python/") and "aiohttp/" in headers["Server"]
            else:
                assert headers["Server"] == expected


# --------------------------------------------------------------------------- ciphers

async def test_ciphers_limit_what_a_tls12_client_can_negotiate(tls: Tls) -> None:
    port = free_port()
    async with ApiServer(Source(primary_status()), config(
            listen=f"127.0.0.1:{port}", ciphers=ALLOWED, **tls.files)):
        assert await negotiated(port, tls.client(ALLOWED)) == ("TLSv1.2", ALLOWED)
        with pytest.raises(HANDSHAKE_FAILED):
            await negotiated(port, tls.client(EXCLUDED))
        # TLS 1.3 suites are not chosen by set_ciphers (Python/OpenSSL): still negotiated
        version, _ = await negotiated(port, tls.client())
        assert version == "TLSv1.3"


async def test_without_ciphers_openssl_defaults_apply(tls: Tls) -> None:
    port = free_port()
    async with ApiServer(Source(primary_status()), config(listen=f"127.0.0.1:{port}",
                                                          **tls.files)):
        assert await negotiated(port, tls.client(EXCLUDED)) == ("TLSv1.2", EXCLUDED)


# --------------------------------------------------------------------------- backlog

async def test_request_queue_size_is_the_listen_backlog(plain: tuple[ApiServer, int]) -> None:
    server, _ = plain
    assert backlogs(server) == {128}  # pgha's default (Patroni's is 5)
    port = free_port()
    async with ApiServer(Source(primary_status()), config(listen=f"127.0.0.1:{port}",
                                                          request_queue_size=17)) as other:
        assert backlogs(other) == {17}


# --------------------------------------------------------------------------- bad values

@pytest.mark.parametrize(("key", "value"), [
    ("ciphers", "NO-SUCH-CIPHER"), ("ciphers", "!ALL"), ("server_tokens", "Full"),
    ("server_tokens", ""), ("request_queue_size", "many"), ("request_queue_size", -1),
    ("http_extra_headers", {"Bad Name": "x"}), ("https_extra_headers", {"X-Split": "a\r\nb"}),
    ("http_extra_headers", "X-A"),
])
def test_bad_values_are_refused_in_one_line_naming_the_key(key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as err:
        config(listen="127.0.0.1:8008", **{key: value})
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"restapi.{key}: "), text


def test_ciphers_are_checked_without_https_too() -> None:
    with pytest.raises(ConfigError, match=r"^restapi\.ciphers: 'NOPE' selects no cipher"):
        config(listen="127.0.0.1:8008", ciphers="NOPE")
    assert config(listen="127.0.0.1:8008", ciphers="HIGH:!aNULL").restapi.ciphers


# --------------------------------------------------------------------------- reload

async def test_reload_applies_headers_and_server_tokens(plain: tuple[ApiServer, int]) -> None:
    server, port = plain
    url = f"http://127.0.0.1:{port}/patroni"
    result = await server.reconfigure(config(
        listen=f"127.0.0.1:{port}", server_tokens="ProductOnly",
        http_extra_headers={"X-New": "1"}).restapi)
    assert not (result.tls or result.rebound or result.backlog)
    _, headers = await fetch(url)
    assert headers["Server"] == "pgha" and headers["X-New"] == "1"
    assert "X-Frame-Options" not in headers
    await server.reconfigure(config(listen=f"127.0.0.1:{port}").restapi)
    _, headers = await fetch(url)
    assert "X-New" not in headers and "aiohttp/" in headers["Server"]


async def test_reload_changes_the_backlog_on_the_same_socket(
        plain: tuple[ApiServer, int]) -> None:
    server, port = plain
    result = await server.reconfigure(config(listen=f"127.0.0.1:{port}", authentication=AUTH,
                                             request_queue_size=9).restapi)
    assert result.backlog and not result.rebound
    assert backlogs(server) == {9}
    assert (await fetch(f"http://127.0.0.1:{port}/patroni"))[0] == 200


async def test_reload_applies_ciphers_to_new_connections(tls: Tls) -> None:
    port = free_port()
    async with ApiServer(Source(primary_status()), config(listen=f"127.0.0.1:{port}",
                                                          **tls.files)) as server:
        assert await negotiated(port, tls.client(EXCLUDED)) == ("TLSv1.2", EXCLUDED)
        result = await server.reconfigure(config(listen=f"127.0.0.1:{port}", ciphers=ALLOWED,
                                                 **tls.files).restapi)
        assert result.tls  # same files: the cipher list alone counts as a TLS change
        with pytest.raises(HANDSHAKE_FAILED):
            await negotiated(port, tls.client(EXCLUDED))
        assert await negotiated(port, tls.client(ALLOWED)) == ("TLSv1.2", ALLOWED)


async def test_reload_with_unusable_ciphers_changes_nothing(tls: Tls) -> None:
    port = free_port()
    section = {"listen": f"127.0.0.1:{port}", "ciphers": ALLOWED, **tls.files}
    async with ApiServer(Source(primary_status()), config(**section)) as server:
        # the loader refuses it already; the server checks again (e.g. another OpenSSL)
        bad = config(**section).restapi.model_copy(update={
            "ciphers": "NOPE", "server_tokens": "productonly", "request_queue_size": 50})
        with pytest.raises(SettingError) as err:
            await server.reconfigure(bad)
        assert err.value.key == "restapi.ciphers" and "\n" not in str(err.value)
        assert backlogs(server) == {128}
        _, headers = await fetch(f"https://127.0.0.1:{port}/patroni", ctx=tls.client())
        assert headers["Server"] != "pgha"
        with pytest.raises(HANDSHAKE_FAILED):
            await negotiated(port, tls.client(EXCLUDED))


# --------------------------------------------------------------------------- environment

def test_environment_sets_the_new_restapi_keys() -> None:
    env = {"PATRONI_RESTAPI_CIPHERS": ALLOWED,
           "PATRONI_RESTAPI_HTTP_EXTRA_HEADERS": "X-A: one, X-B: 2",
           "PATRONI_RESTAPI_HTTPS_EXTRA_HEADERS": "{Strict-Transport-Security: max-age=60}",
           "PATRONI_RESTAPI_REQUEST_QUEUE_SIZE": "12",
           "PATRONI_RESTAPI_SERVER_TOKENS": "Minimal", "PGHA_RESTAPI_SERVER_TOKENS": "ProductOnly",
           "PATRONI_RESTAPI_ALLOWLIST_INCLUDE_MEMBERS": "true"}
    rest = parse_config(raw(listen="127.0.0.1:8008"), env).restapi
    assert rest.ciphers == ALLOWED
    assert rest.http_extra_headers == {"X-A": "one", "X-B": "2"}
    assert rest.https_extra_headers == {"Strict-Transport-Security": "max-age=60"}
    assert rest.request_queue_size == 12 and rest.server_tokens == "productonly"
    assert rest.allowlist_include_members is True
    with pytest.raises(ConfigError, match=r"^restapi\.request_queue_size: "):
        parse_config(raw(listen="127.0.0.1:8008"), {"PATRONI_RESTAPI_REQUEST_QUEUE_SIZE": "x"})
