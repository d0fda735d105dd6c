"""REST API access control: allowlist (403), client certificates (403 / TLS handshake), HTTP
Basic authentication (401), their order, and the HTTPS server itself (certificates made in the
test with trustme)."""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from tests.support.etcd import free_port
from tests.unit.api_support import (
    FakeResolver,
    Source,
    api,
    cluster_view,
    primary_status,
    replica_status,
    restapi,
)

from pgha.api.security import HostResolver
from pgha.api.server import ApiServer
from pgha.config import parse_config
from pgha.core.commands import Reload
from pgha.core.model import Member

AUTH = {"username": "admin", "password": "s3cret:x"}
GOOD = "Basic " + base64.b64encode(b"admin:s3cret:x").decode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def post(config: Any, path: str = "/reload", headers: dict[str, str] | None = None,
               source: Source | None = None, resolver: HostResolver | None = None,
               json: Any = None) -> tuple[int, aiohttp.ClientResponse, Source]:
    source = source or Source(primary_status())
    async with api(source, config, resolver) as client:
        resp = await client.post(path, headers=headers or {}, json=json)
        await resp.read()
        return resp.status, resp, source


# --------------------------------------------------------------------------- Basic auth


@pytest.mark.parametrize("header", [
    None, basic("admin", "wrong"), basic("root", "s3cret:x"), basic("admin", "s3cret"),
    "Basic !!!notbase64", "Bearer abc", "Basic", GOOD.lower(),
], ids=["missing", "wrong-password", "wrong-user", "prefix", "bad-base64", "bearer", "empty",
        "mangled"])
async def test_unsafe_methods_need_credentials(header: str | None) -> None:
    code, resp, source = await post(restapi(authentication=AUTH),
                                    headers={"Authorization": header} if header else None)
    assert code == 401
    assert resp.headers["WWW-Authenticate"] == 'Basic realm="pgha"'
    assert source.commands == []


@pytest.mark.parametrize("header", [GOOD, "basic " + GOOD[6:], "Basic  " + GOOD[6:] + " "])
async def test_right_credentials_pass(header: str) -> None:
    code, _, source = await post(restapi(authentication=AUTH), headers={"Authorization": header})
    assert code == 200
    assert source.commands == [Reload()]


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/switchover"), ("POST", "/failover"), ("POST", "/restart"),
    ("DELETE", "/restart"), ("DELETE", "/switchover"), ("POST", "/reinitialize"),
    ("PATCH", "/config"), ("PUT", "/config"), ("POST", "/failsafe"), ("POST", "/reload"),
])
async def test_every_unsafe_route_is_protected(method: str, path: str) -> None:
    source = Source(primary_status())
    async with api(source, restapi(authentication=AUTH)) as client:
        resp = await client.request(method, path, json={"leader": "pg1", "candidate": "pg2",
                                                        "name": "pg1"})
        assert resp.status == 401
    assert source.commands == [] and source.failsafe_calls == []


@pytest.mark.parametrize("path", ["/primary", "/patroni", "/cluster", "/config", "/history",
                                  "/openapi.json", "/replica?lag=1MB"])
async def test_gets_need_no_credentials(path: str) -> None:
    status = primary_status(view=cluster_view(config={"ttl": 30}))
    async with api(Source(status), restapi(authentication=AUTH, allowlist=["10.9.9.9"])) as c:
        resp = await c.get(path)
        assert resp.status in (200, 503)
        assert resp.status != 503 or path == "/replica?lag=1MB"


async def test_bad_body_with_bad_credentials_is_401_not_400() -> None:
    code, _, _ = await post(restapi(authentication=AUTH), "/switchover")
    assert code == 401


# --------------------------------------------------------------------------- allowlist


@pytest.mark.parametrize(("entries", "expected"), [
    (["127.0.0.1"], 200),
    (["127.0.0.0/8"], 200),
    (["10.0.0.0/8", "::1", "127.0.0.1/32"], 200),
    (["10.0.0.0/8"], 403),
    (["::1"], 403),
    (["localhost"], 200),  # resolved by the fake resolver
    (["nowhere.example"], 403),  # does not resolve: admits nobody
    (["db.example"], 403),  # resolves elsewhere
])
async def test_allowlist(entries: list[str], expected: int) -> None:
    resolver = FakeResolver({"localhost": ["127.0.0.1", "::1"], "db.example": ["10.1.1.1"]})
    code, resp, source = await post(restapi(allowlist=entries), resolver=resolver)
    assert code == expected
    if expected == 403:
        assert await resp.text() == "Access is denied"
        assert source.commands == []


async def test_allowlist_comma_separated_string() -> None:
    code, _, _ = await post(restapi(allowlist="10.0.0.1, 127.0.0.1"))
    assert code == 200


@pytest.mark.parametrize(("api_url", "expected"), [
    ("http://127.0.0.1:8008/patroni", 200),
    ("https://member-a:8008/patroni", 200),  # a host name resolving to the client
    ("http://10.0.0.9:8008/patroni", 403),
    ("http://[::1]:8008/patroni", 403),
    ("not a url", 403),
])
async def test_allowlist_include_members(api_url: str, expected: int) -> None:
    view = cluster_view()
    view = type(view)(leader=view.leader, members={
        **view.members, "pg9": Member("pg9", api_url=api_url)})
    resolver = FakeResolver({"member-a": ["127.0.0.1"]})
    code, _, _ = await post(restapi(allowlist_include_members=True),
                            source=Source(primary_status(view=view)), resolver=resolver)
    assert code == expected


async def test_member_host_lookups_are_cached() -> None:
    view = cluster_view()
    view = type(view)(leader=view.leader, members={
        "pg9": Member("pg9", api_url="http://member-a:8008/patroni")})
    resolver = FakeResolver({"member-a": ["10.0.0.7"]})
    source = Source(primary_status(view=view))
    async with api(source, restapi(allowlist_include_members=True), resolver) as client:
        for _ in range(3):
            assert (await client.post("/reload")).status == 403
    assert resolver.lookups == ["member-a"]


async def test_allowlist_is_checked_before_credentials() -> None:
    code, resp, _ = await post(restapi(allowlist=["10.0.0.1"], authentication=AUTH))
    assert code == 403
    assert "WWW-Authenticate" not in resp.headers


def _view_with(member: Member, failsafe: dict[str, str] | None = None) -> Any:
    view = cluster_view()
    return replace(view, members={**view.members, member.name: member}, failsafe=failsafe)


async def test_failsafe_post_from_a_non_member_outside_the_allowlist_is_denied() -> None:
    config = restapi(allowlist=["10.0.0.1"], authentication=AUTH)
    code, resp, source = await post(config, "/failsafe", json={"name": "pg1"},
                                    headers={"Authorization": GOOD},
                                    source=Source(replica_status()))
    assert code == 403
    assert await resp.text() == "Access is denied"
    assert source.failsafe_calls == []


async def test_failsafe_post_with_only_include_members_denies_non_members() -> None:
    code, _, source = await post(restapi(allowlist_include_members=True), "/failsafe",
                                 json={"name": "pg1"}, source=Source(replica_status()))
    assert code == 403
    assert source.failsafe_calls == []


@pytest.mark.parametrize("member", [
    Member("pg9", api_url="http://127.0.0.1:8008/patroni"),
    Member("pg9", api_url="http://10.0.0.9:8008/patroni",
           conn_url="postgres://127.0.0.1:5432/postgres"),
    Member("pg9", api_url="https://member-a:8008/patroni"),  # resolves to the client
], ids=["api_url", "conn_url", "host-name"])
async def test_failsafe_post_from_a_member_passes_the_allowlist_not_authentication(
        member: Member) -> None:
    config = restapi(allowlist=["10.0.0.1"], authentication=AUTH)
    resolver = FakeResolver({"member-a": ["127.0.0.1"]})
    source = Source(replica_status(view=_view_with(member)))
    code, _, _ = await post(config, "/failsafe", json={"name": "pg1"}, source=source,
                            resolver=resolver)
    assert code == 401
    code, _, _ = await post(config, "/failsafe", json={"name": "pg1"}, source=source,
                            resolver=resolver, headers={"Authorization": GOOD})
    assert code == 200
    assert source.failsafe_calls == ["pg1"]
    code, _, _ = await post(config, "/reload", headers={"Authorization": GOOD}, source=source,
                            resolver=resolver)
    assert code == 403  # members pass the allowlist for peer calls only


async def test_failsafe_post_from_a_host_in_the_failsafe_key_passes() -> None:
    view = replace(cluster_view(), failsafe={"pg9": "http://127.0.0.1:8008/patroni"})
    source = Source(replica_status(view=view))
    code, _, _ = await post(restapi(allowlist=["10.0.0.1"]), "/failsafe", json={"name": "pg1"},
                            source=source)
    assert code == 200 and source.failsafe_calls == ["pg1"]


@pytest.mark.parametrize("config", [None, restapi(authentication=AUTH),
                                    restapi(allowlist=["127.0.0.1"], authentication=AUTH)],
                         ids=["no-restapi", "no-allowlist", "in-allowlist"])
async def test_failsafe_post_without_a_list_or_inside_it_passes(config: Any) -> None:
    source = Source(replica_status())
    code, _, _ = await post(config, "/failsafe", json={"name": "pg1"}, source=source,
                            headers={"Authorization": GOOD})
    assert code == 200 and source.failsafe_calls == ["pg1"]


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A CA, a server certificate for 127.0.0.1 (key also encrypted), a client certificate
    from the CA and one from an unknown CA."""
    folder = tmp_path_factory.mktemp("pki")
    ca, rogue = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(folder / "server.crt"))
    server.private_key_pem.write_to_path(str(folder / "server.key"))
    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), password=None)
    (folder / "server-enc.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"keypass")))
    ca.cert_pem.write_to_path(str(folder / "ca.crt"))
    return {"dir": folder, "ca": ca, "client": ca.issue_cert("client@example"),
            "rogue": rogue.issue_cert("rogue@example")}


def client_ctx(pki: dict[str, Any], cert: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    pki["ca"].configure_trust(ctx)
    if cert:
        pki[cert].configure_cert(ctx)
    return ctx


@asynccontextmanager
async def serve(pki: dict[str, Any], source: Source, **restapi_kw: Any) -> AsyncIterator[str]:
    folder: Path = pki["dir"]
    section = {"listen": f"127.0.0.1:{free_port()}", "certfile": str(folder / "server.crt"),
               "keyfile": str(folder / "server.key"), "cafile": str(folder / "ca.crt"),
               **restapi_kw}
    config = parse_config({"scope": "demo", "name": "pg1", "etcd": {"host": "127.0.0.1:2379"},
                           "postgresql": {"data_dir": "/tmp/none", "bin_dir": "/tmp"},
                           "restapi": section}, {})
    async with ApiServer(source, config) as server:
        assert server.runner is not None
        port = server.runner.addresses[0][1]
        yield f"https://127.0.0.1:{port}"


async def fetch(url: str, ctx: ssl.SSLContext, method: str = "GET",
                headers: dict[str, str] | None = None) -> int:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, \
            session.request(method, url, ssl=ctx, headers=headers) as resp:
        return resp.status


@pytest.mark.parametrize(("verify", "cert", "get", "post_"), [
    ("none", None, 200, 200),
    (None, None, 200, 200),
    ("optional", None, 200, 403),
    ("optional", "client", 200, 200),
    ("required", "client", 200, 200),
], ids=["none", "unset", "optional-no-cert", "optional-cert", "required-cert"])
async def test_https_client_certificates(pki: dict[str, Any], verify: str | None,
                                         cert: str | None, get: int, post_: int) -> None:
    source = Source(primary_status())
    kw = {"verify_client": verify} if verify else {}
    async with serve(pki, source, **kw) as url:
        ctx = client_ctx(pki, cert)
        assert await fetch(f"{url}/primary", ctx) == get
        assert await fetch(f"{url}/reload", ctx, "POST") == post_
    assert len(source.commands) == (1 if post_ == 200 else 0)


@pytest.mark.parametrize("cert", [None, "rogue"])
async def test_verify_client_required_refuses_the_handshake(pki: dict[str, Any],
                                                            cert: str | None) -> None:
    async with serve(pki, Source(primary_status()), verify_client="required") as url:
        with pytest.raises(aiohttp.ClientError):
            await fetch(f"{url}/primary", client_ctx(pki, cert))


async def test_optional_client_cert_from_an_unknown_ca_is_refused(pki: dict[str, Any]) -> None:
    async with serve(pki, Source(primary_status()), verify_client="optional") as url:
        with pytest.raises(aiohttp.ClientError):
            await fetch(f"{url}/reload", client_ctx(pki, "rogue"), "POST")


async def test_client_cert_and_credentials_together(pki: dict[str, Any]) -> None:
    source = Source(primary_status())
    async with serve(pki, source, verify_client="optional", authentication=AUTH) as url:
        assert await fetch(f"{url}/reload", client_ctx(pki, None), "POST",
                           {"Authorization": GOOD}) == 403
        assert await fetch(f"{url}/reload", client_ctx(pki, "client"), "POST") == 401
        assert await fetch(f"{url}/reload", client_ctx(pki, "client"), "POST",
                           {"Authorization": GOOD}) == 200
    assert source.commands == [Reload()]


async def test_encrypted_server_key(pki: dict[str, Any]) -> None:
    folder: Path = pki["dir"]
    async with serve(pki, Source(primary_status()), keyfile=str(folder / "server-enc.key"),
                           keyfile_password="keypass") as url:
        assert await fetch(f"{url}/patroni", client_ctx(pki, None)) == 200


async def test_plain_http_server_without_certfile() -> None:
    config = parse_config({"scope": "demo", "name": "pg1", "etcd": {"host": "127.0.0.1:2379"},
                           "postgresql": {"data_dir": "/tmp/none", "bin_dir": "/tmp"},
                           "restapi": {"listen": f"127.0.0.1:{free_port()}",
                                       "authentication": AUTH}}, {})
    source = Source(primary_status())
    async with ApiServer(source, config) as server, aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=10)) as session:
        assert server.ssl_context is None and server.runner is not None
        base = f"http://127.0.0.1:{server.runner.addresses[0][1]}"
        async with session.get(f"{base}/primary") as resp:
            assert resp.status == 200
        async with session.post(f"{base}/reload") as resp:
            assert resp.status == 401
        async with session.post(f"{base}/reload", headers={"Authorization": GOOD}) as resp:
            assert resp.status == 200
    assert source.commands == [Reload()]
