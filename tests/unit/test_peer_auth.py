"""Where the REST credentials go on calls to peers (the agent's :class:`PeerClient` and the
CLI's :class:`RestClient`): GETs without them unless the peer answered 401, unsafe methods
with them, and a warning once per peer when they go over plain http. A small aiohttp server
records the ``Authorization`` header of every request."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pgha.agent.peers import PeerClient
from pgha.api import client_tls
from pgha.api.client_tls import PeerAuth
from pgha.cli.rest import RestClient
from pgha.config import Config, parse_config
from pgha.core.model import ClusterView, Member

AUTH = {"username": "admin", "password": "s3cret"}
GOOD = "Basic " + base64.b64encode(b"admin:s3cret").decode()
STATUS = {"state": "running", "role": "replica", "xlog": {"received_location": 100},
          "timeline": 2}


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The once-per-process memory of warned peers, empty for each test (ports get reused)."""
    monkeypatch.setattr(client_tls, "_CLEARTEXT_WARNED", set())


@dataclass
class Peer:
    """Records (method, path, Authorization) of each request; ``guard_gets``: GETs without
    the right credentials get 401 (unsafe methods always need them)."""

    guard_gets: bool = False
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization")
        self.seen.append((request.method, request.path, header))
        if (request.method != "GET" or self.guard_gets) and header != GOOD:
            return web.Response(status=401, text="authentication required",
                                headers={"WWW-Authenticate": 'Basic realm="pgha"'})
        if request.method == "POST":
            return web.Response(text="Accepted")
        return web.json_response(STATUS)

    def headers(self) -> list[str | None]:
        return [h for _, _, h in self.seen]


@asynccontextmanager
async def serve(peer: Peer) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", peer.handle)
    async with TestServer(app) as server:
        yield f"http://127.0.0.1:{server.port}"


def config(auth: dict[str, str] | None = AUTH) -> Config:
    restapi: dict[str, Any] = {"listen": "127.0.0.1:8008"}
    if auth is not None:
        restapi["authentication"] = auth
    return parse_config({"scope": "demo", "name": "pg1", "etcd": {"host": "127.0.0.1:2379"},
                         "postgresql": {"data_dir": "/tmp/none", "bin_dir": "/tmp"},
                         "restapi": restapi}, {})


def cleartext_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "clear text" in r.getMessage()]


# --------------------------------------------------------------------------- the agent


async def test_status_get_carries_no_credentials(caplog: pytest.LogCaptureFixture) -> None:
    peer = Peer()
    caplog.set_level(logging.WARNING)
    async with serve(peer) as base, PeerClient(config(), "pg1") as client:
        status = await client.status_of(Member("pg2", api_url=f"{base}/patroni"), timeout=5)
        statuses = await client.statuses(_view(base), timeout=5)
    assert status is not None and status.role == "replica"
    assert statuses["pg2"] is not None
    assert peer.seen == [("GET", "/patroni", None)] * 2
    assert cleartext_warnings(caplog) == []


async def test_a_get_answered_401_is_repeated_once_with_credentials_and_remembered() -> None:
    peer = Peer(guard_gets=True)
    async with serve(peer) as base, PeerClient(config(), "pg1") as client:
        member = Member("pg2", api_url=f"{base}/patroni")
        first = await client.status_of(member, timeout=5)
        second = await client.status_of(member, timeout=5)
    assert first is not None and second is not None
    assert peer.headers() == [None, GOOD, GOOD]


async def test_without_credentials_a_401_is_not_repeated() -> None:
    peer = Peer(guard_gets=True)
    async with serve(peer) as base, PeerClient(config(auth=None), "pg1") as client:
        assert await client.status_of(Member("pg2", api_url=f"{base}/patroni"), 5) is None
    assert peer.headers() == [None]


async def test_failsafe_post_carries_credentials_and_http_warns_once(
        caplog: pytest.LogCaptureFixture) -> None:
    peer = Peer()
    caplog.set_level(logging.WARNING)
    async with serve(peer) as base, PeerClient(config(), "pg1") as client:
        members = {"pg1": "http://10.9.9.9:1/patroni", "pg2": f"{base}/patroni"}
        for _ in range(3):
            assert await client.failsafe_round(members, {"name": "pg1"}, timeout=5)
    assert peer.seen == [("POST", "/failsafe", GOOD)] * 3
    assert cleartext_warnings(caplog) == [
        f"sending REST credentials in clear text to {base}/failsafe; configure restapi TLS"]


def _view(base: str) -> ClusterView:
    return ClusterView(members={"pg1": Member("pg1", api_url="http://10.9.9.9:1/patroni"),
                                "pg2": Member("pg2", api_url=f"{base}/patroni")})


# --------------------------------------------------------------------------- the rule itself


def test_https_sends_credentials_without_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    auth = PeerAuth(GOOD)
    assert auth.headers("POST", "https://pg9.example:8008/restart") == {"Authorization": GOOD}
    assert auth.headers("GET", "https://pg9.example:8008/patroni") == {}
    assert cleartext_warnings(caplog) == []


def test_a_peer_is_remembered_by_scheme_host_and_port() -> None:
    auth = PeerAuth(GOOD)
    assert auth.retry("GET", "http://Pg9:8008/patroni", 401, {})
    assert auth.headers("GET", "http://pg9:8008/cluster") == {"Authorization": GOOD}
    assert auth.headers("GET", "http://pg9:8009/patroni") == {}
    assert auth.headers("GET", "https://pg9:8008/patroni") == {}
    assert not auth.retry("GET", "http://pg9:8008/patroni", 401, {"Authorization": GOOD})
    assert not auth.retry("GET", "http://pg8:8008/patroni", 403, {})


# --------------------------------------------------------------------------- the CLI


async def test_cli_gets_without_credentials_posts_with_them(
        caplog: pytest.LogCaptureFixture) -> None:
    peer = Peer()
    caplog.set_level(logging.WARNING)
    async with serve(peer) as base, RestClient(config()) as api:
        member = Member("pg2", api_url=f"{base}/patroni")
        assert (await api.status(member))["role"] == "replica"
        reply = await api.request(member, "POST", "/restart", {"role": "replica"})
        assert (reply.status, reply.text) == (200, "Accepted")
        await api.request(member, "POST", "/reload")
    assert peer.seen == [("GET", "/patroni", None), ("POST", "/restart", GOOD),
                         ("POST", "/reload", GOOD)]
    assert len(cleartext_warnings(caplog)) == 1


async def test_cli_get_answered_401_is_repeated_with_credentials() -> None:
    peer = Peer(guard_gets=True)
    async with serve(peer) as base, RestClient(config()) as api:
        member = Member("pg2", api_url=f"{base}/patroni")
        reply = await api.request(member, "GET", "/cluster")
        assert reply.status == 200 and json.loads(reply.text) == STATUS
        await api.request(member, "GET", "/history")
    assert peer.seen == [("GET", "/cluster", None), ("GET", "/cluster", GOOD),
                         ("GET", "/history", GOOD)]
