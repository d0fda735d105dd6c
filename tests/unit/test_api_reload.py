"""A running REST API server takes a re-read ``restapi`` section without a restart: access
control at once, rotated TLS files and ``verify_client`` for new connections, a new listen
address; a section it cannot use (missing or broken files, an address it cannot bind) changes
nothing and names the key."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from cryptography import x509
from tests.support.etcd import free_port
from tests.unit.api_support import Source, primary_status

from pgha.api.server import ApiServer
from pgha.api.tls_files import SettingError, load_client_tls, load_server_tls
from pgha.config import Config, parse_config
from pgha.config.models import RestApiConfig

OLD = {"username": "admin", "password": "old-secret"}
NEW = {"username": "admin", "password": "new-secret"}


def basic(auth: dict[str, str]) -> dict[str, str]:
    token = base64.b64encode(f"{auth['username']}:{auth['password']}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def config(**restapi: Any) -> Config:
    return parse_config({"scope": "demo", "name": "pg1", "etcd": {"host": "127.0.0.1:2379"},
                         "postgresql": {"data_dir": "/tmp/none", "bin_dir": "/tmp"},
                         "restapi": restapi}, {})


@dataclass
class Pki:
    dir: Path
    ca: trustme.CA
    client: trustme.LeafCert

    def server_cert(self, name: str = "server") -> int:
        """Issue a new server certificate into ``server.crt``/``server.key`` (same CA, new
        serial); returns its serial number."""
        leaf = self.ca.issue_cert("127.0.0.1", "localhost")
        (self.dir / f"{name}.crt").write_bytes(leaf.cert_chain_pems[0].bytes())
        (self.dir / f"{name}.key").write_bytes(leaf.private_key_pem.bytes())
        return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number

    def tls(self, **kw: Any) -> dict[str, Any]:
        return {"certfile": str(self.dir / "server.crt"), "keyfile": str(self.dir / "server.key"),
                "cafile": str(self.dir / "ca.crt"), **kw}

    def client_ctx(self, with_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        if with_cert:
            self.client.configure_cert(ctx)
        return ctx


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    p = Pki(tmp_path, ca, ca.issue_cert("client@example"))
    p.server_cert()
    return p


async def served_serial(port: int, ctx: ssl.SSLContext) -> int:
    """The serial number of the certificate a new connection to ``port`` is shown."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    return x509.load_der_x509_certificate(der).serial_number


async def status_of(url: str, method: str = "GET", ctx: ssl.SSLContext | None = None,
                    headers: dict[str, str] | None = None) -> int:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, \
            session.request(method, url, ssl=ctx if ctx is not None else True,
                            headers=headers) as resp:
        return resp.status


@pytest.fixture
async def plain() -> AsyncIterator[tuple[ApiServer, int]]:
    port = free_port()
    async with ApiServer(Source(primary_status()),
                         config(listen=f"127.0.0.1:{port}", authentication=OLD)) as server:
        yield server, port


async def test_new_credentials_apply_to_the_next_request(
        plain: tuple[ApiServer, int]) -> None:
    server, port = plain
    url = f"http://127.0.0.1:{port}/reload"
    assert await status_of(url, "POST", headers=basic(OLD)) == 200
    result = await server.reconfigure(config(listen=f"127.0.0.1:{port}",
                                             authentication=NEW).restapi)
    assert not result.tls and not result.rebound
    assert await status_of(url, "POST", headers=basic(OLD)) == 401
    assert await status_of(url, "POST", headers=basic(NEW)) == 200
    await server.reconfigure(config(listen=f"127.0.0.1:{port}").restapi)
    assert await status_of(url, "POST") == 200  # authentication removed


async def test_allowlist_applies_to_the_next_request(plain: tuple[ApiServer, int]) -> None:
    server, port = plain
    url = f"http://127.0.0.1:{port}/reload"
    await server.reconfigure(config(listen=f"127.0.0.1:{port}", authentication=OLD,
                                    allowlist=["10.9.9.9"]).restapi)
    assert await status_of(url, "POST", headers=basic(OLD)) == 403
    await server.reconfigure(config(listen=f"127.0.0.1:{port}", authentication=OLD,
                                    allowlist="10.9.9.9, 127.0.0.0/8").restapi)
    assert await status_of(url, "POST", headers=basic(OLD)) == 200


async def test_a_new_listen_address_is_bound_and_the_old_one_closed(
        plain: tuple[ApiServer, int]) -> None:
    server, port = plain
    new_port = free_port()
    result = await server.reconfigure(config(listen=f"127.0.0.1:{new_port}",
                                             authentication=OLD).restapi)
    assert result.rebound
    assert await status_of(f"http://127.0.0.1:{new_port}/patroni") == 200
    with pytest.raises(aiohttp.ClientConnectionError):
        await status_of(f"http://127.0.0.1:{port}/patroni")
    assert server.port == new_port


async def test_an_address_in_use_keeps_the_old_one(plain: tuple[ApiServer, int]) -> None:
    server, port = plain
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    busy = blocker.sockets[0].getsockname()[1]
    try:
        with pytest.raises(SettingError) as err:
            await server.reconfigure(config(listen=f"127.0.0.1:{busy}",
                                            authentication=NEW).restapi)
    finally:
        blocker.close()
    assert err.value.key == "restapi.listen"
    assert await status_of(f"http://127.0.0.1:{port}/reload", "POST", headers=basic(OLD)) == 200
    assert server.port == port


async def test_an_address_not_on_this_host_keeps_the_old_one(
        plain: tuple[ApiServer, int]) -> None:
    server, port = plain
    with pytest.raises(SettingError) as err:
        await server.reconfigure(config(listen=f"192.0.2.1:{port}").restapi)  # TEST-NET-1
    assert err.value.key == "restapi.listen" and "cannot listen on 192.0.2.1" in str(err.value)
    assert await status_of(f"http://127.0.0.1:{port}/reload", "POST", headers=basic(OLD)) == 200


async def test_same_port_on_another_host_replaces_the_wildcard_socket() -> None:
    port = free_port()
    async with ApiServer(Source(primary_status()), config(
            listen=f"0.0.0.0:{port}", connect_address=f"127.0.0.1:{port}")) as server:
        result = await server.reconfigure(config(listen=f"127.0.0.1:{port}").restapi)
        assert result.rebound and server.host == "127.0.0.1"
        assert await status_of(f"http://127.0.0.1:{port}/patroni") == 200


async def test_rotated_certificate_is_shown_to_new_connections(pki: Pki) -> None:
    port = free_port()
    section = pki.tls(listen=f"127.0.0.1:{port}", authentication=OLD)
    async with ApiServer(Source(primary_status()), config(**section)) as server:
        before = await served_serial(port, pki.client_ctx())
        unchanged = await server.reconfigure(config(**section).restapi)
        assert not unchanged.tls  # same files, same contents: nothing to do
        rotated = pki.server_cert()  # the same file names, new contents
        assert rotated != before
        result = await server.reconfigure(config(**section).restapi)
        assert result.tls and not result.rebound
        assert await served_serial(port, pki.client_ctx()) == rotated
        assert await status_of(f"https://127.0.0.1:{port}/patroni", ctx=pki.client_ctx()) == 200


async def test_verify_client_and_https_switch_on_without_a_restart(pki: Pki) -> None:
    port = free_port()
    url = f"https://127.0.0.1:{port}/patroni"
    async with ApiServer(Source(primary_status()),
                         config(listen=f"127.0.0.1:{port}")) as server:
        assert await status_of(f"http://127.0.0.1:{port}/patroni") == 200
        await server.reconfigure(config(**pki.tls(listen=f"127.0.0.1:{port}")).restapi)
        assert await status_of(url, ctx=pki.client_ctx()) == 200
        await server.reconfigure(config(**pki.tls(listen=f"127.0.0.1:{port}",
                                                  verify_client="required")).restapi)
        with pytest.raises(aiohttp.ClientError):
            await status_of(url, ctx=pki.client_ctx())
        assert await status_of(url, ctx=pki.client_ctx(with_cert=True)) == 200


@pytest.mark.parametrize(("change", "key"), [
    ({"certfile": "missing.crt"}, "restapi.certfile"),
    ({"keyfile": "missing.key"}, "restapi.keyfile"),
    ({"cafile": "missing.ca"}, "restapi.cafile"),
    ({"certfile": "garbage.crt"}, "restapi.certfile"),
    ({"keyfile": "other.key"}, "restapi.keyfile"),
], ids=["no-cert", "no-key", "no-ca", "not-pem", "key-mismatch"])
async def test_broken_tls_files_change_nothing(pki: Pki, change: dict[str, str],
                                               key: str) -> None:
    (pki.dir / "garbage.crt").write_text("not a certificate\n")
    pki.server_cert("other")
    port = free_port()
    section = pki.tls(listen=f"127.0.0.1:{port}", authentication=OLD)
    async with ApiServer(Source(primary_status()), config(**section)) as server:
        before = await served_serial(port, pki.client_ctx())
        broken = {**section, "authentication": NEW,
                  **{k: str(pki.dir / v) for k, v in change.items()}}
        with pytest.raises(SettingError) as err:
            # the loader refuses a missing file too; a file may also vanish after loading
            await server.reconfigure(RestApiConfig.model_validate(broken))
        assert err.value.key == key
        assert await served_serial(port, pki.client_ctx()) == before
        assert await status_of(f"https://127.0.0.1:{port}/reload", "POST", pki.client_ctx(),
                               basic(OLD)) == 200


def test_client_tls_names_the_key_of_a_missing_file(tmp_path: Path) -> None:
    cfg = config(listen="127.0.0.1:8008")
    cfg = cfg.model_copy(update={"ctl": {"cacert": str(tmp_path / "nope.pem")}})
    with pytest.raises(SettingError) as err:
        load_client_tls(cfg)
    assert err.value.key == "ctl.cacert"


def test_server_tls_digest_follows_file_contents(pki: Pki) -> None:
    restapi = RestApiConfig.model_validate(pki.tls(listen="127.0.0.1:8008"))
    first = load_server_tls(restapi)
    assert load_server_tls(restapi).digest == first.digest
    pki.server_cert()
    assert load_server_tls(restapi).digest != first.digest
    assert load_server_tls(RestApiConfig(listen="127.0.0.1:8008")).context is None
