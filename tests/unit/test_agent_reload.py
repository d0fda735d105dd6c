"""SIGHUP / POST /reload in the agent: :class:`pgha.agent.reload.Reloader` with the real
LocalConfig, REST API server, peer client and publisher (PostgreSQL's side is a recorder).
What changed is applied or reported as needing a restart, one line each; a file it cannot use
changes nothing and one line names the key."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
import yaml
from tests.support.etcd import free_port
from tests.unit.api_support import Source, primary_status

from pgha.agent.local_config import LocalConfig
from pgha.agent.peers import PeerClient
from pgha.agent.publish import Publisher
from pgha.agent.reload import Reloader, changed_keys, classify
from pgha.api.server import ApiServer
from pgha.config import Config, load_config
from pgha.core.model import Member
from pgha.core.status import AgentStatus

OLD = {"username": "admin", "password": "old-secret"}
NEW = {"username": "admin", "password": "new-secret"}


def basic(auth: Mapping[str, str]) -> dict[str, str]:
    token = base64.b64encode(f"{auth['username']}:{auth['password']}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass
class PgSide:
    """Records what the reload hands to PostgreSQL's configurator."""

    applied: list[Config] = field(default_factory=list)

    async def apply_local_config(self, config: Config, dcs_config: Mapping[str, Any] | None,
                                 role: str) -> bool:
        self.applied.append(config)
        return True


@dataclass
class Agent:
    path: Path
    data: dict[str, Any]
    local: LocalConfig
    api: ApiServer
    peers: PeerClient
    publisher: Publisher
    pg: PgSide
    reloader: Reloader

    def write(self, **sections: Any) -> None:
        data = {**self.data, **sections}
        self.path.write_text(yaml.safe_dump(data))

    async def post_reload(self, auth: Mapping[str, str]) -> int:
        async with aiohttp.ClientSession() as session, session.post(
                f"http://127.0.0.1:{self.api.port}/reload", headers=basic(auth)) as resp:
            return resp.status


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    port = free_port()
    data = {"scope": "demo", "name": "pg1", "etcd": {"host": "127.0.0.1:2379"},
            "postgresql": {"data_dir": str(tmp_path / "data"), "bin_dir": "/tmp"},
            "restapi": {"listen": f"127.0.0.1:{port}", "authentication": OLD}}
    path = tmp_path / "pgha.yml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    local = LocalConfig(config, path)
    status = AgentStatus("pg1", "demo", local.tags, "postgres://127.0.0.1:5432/postgres",
                         config.restapi.api_url)
    publisher = Publisher(None, status)  # type: ignore[arg-type]  # never writes the DCS
    api = ApiServer(Source(primary_status()), config)
    peers = PeerClient(config, "pg1")
    pg = PgSide()
    reloader = Reloader(local, pg, publisher, peers, api)  # type: ignore[arg-type]
    async with api, peers:
        yield Agent(path, data, local, api, peers, publisher, pg, reloader)


def reload_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records
            if r.getMessage().startswith("reload:")]


async def test_changes_are_applied_or_reported_one_line_each(
        agent: Agent, caplog: pytest.LogCaptureFixture) -> None:
    port = agent.api.port
    agent.write(restapi={"listen": f"127.0.0.1:{port}", "connect_address": f"10.1.2.3:{port}",
                         "authentication": NEW},
                etcd={"host": "127.0.0.1:2399"}, tags={"nofailover": True},
                bootstrap={"dcs": {"ttl": 40}})
    caplog.set_level(logging.INFO)
    assert await agent.reloader.reload(None, "primary")
    lines = reload_lines(caplog)
    assert lines == [
        (logging.INFO, "reload: applied: restapi.authentication, restapi.connect_address, "
                       "tags.nofailover (peer HTTP session renewed)"),
        (logging.WARNING, "reload: changed but needs a restart of the agent to take effect: "
                          "etcd.host"),
        (logging.INFO, "reload: only used when a new cluster is bootstrapped: bootstrap.dcs"),
        (logging.INFO, "reload: configuration applied"),
    ]
    assert "secret" not in caplog.text
    assert await agent.post_reload(OLD) == 401
    assert await agent.post_reload(NEW) == 200
    assert agent.publisher.status.api_url == f"http://10.1.2.3:{port}/patroni"
    assert agent.local.tags.nofailover and not agent.local.tags.can_be_leader
    assert agent.local.config.restapi.authentication is not None
    assert agent.local.config.restapi.authentication.password == "new-secret"
    # what needs a restart keeps its running value until then
    assert agent.local.config.etcd is not None
    assert agent.local.config.etcd.host == "127.0.0.1:2379"
    assert [c.etcd.host for c in agent.pg.applied if c.etcd] == ["127.0.0.1:2379"]


async def test_postgres_location_is_kept_until_a_restart(
        agent: Agent, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    data_dir = agent.local.config.postgresql.data_dir
    agent.write(postgresql={"data_dir": str(tmp_path / "elsewhere"), "bin_dir": "/usr/bin",
                            "parameters": {"work_mem": "8MB"}, "pg_hba": ["local all all peer"]},
                watchdog={"mode": "required"})
    caplog.set_level(logging.INFO)
    assert await agent.reloader.reload(None, "replica")
    (applied,) = [c for c in agent.pg.applied]
    assert applied is agent.local.config
    assert applied.postgresql.data_dir == applied.postgresql.config_dir == data_dir
    assert applied.postgresql.bin_dir == "/tmp"
    assert applied.watchdog.mode == "automatic"
    assert applied.postgresql.parameters == {"work_mem": "8MB"}  # applied at once
    assert applied.postgresql.pg_hba == ["local all all peer"]
    lines = dict((m.split(": ")[1], m) for _, m in reload_lines(caplog))
    assert lines["changed but needs a restart of the agent to take effect"].endswith(
        "postgresql.bin_dir, postgresql.config_dir, postgresql.data_dir, watchdog.mode")


async def test_an_unchanged_file_says_so_and_still_reloads_postgres(
        agent: Agent, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    assert await agent.reloader.reload(None, "primary")
    assert [m for _, m in reload_lines(caplog)] == ["reload: no change in the configuration",
                                                   "reload: configuration applied"]
    assert len(agent.pg.applied) == 1


@pytest.mark.parametrize(("text", "key"), [
    ("scope: [unclosed\n", None),
    ("SEE-DATA", "restapi.verify_client"),
    ("SEE-DATA-CERT", "restapi.certfile"),
    ("SEE-DATA-NAME", "name"),
], ids=["bad-yaml", "bad-value", "missing-cert", "renamed"])
async def test_a_file_it_cannot_use_keeps_everything(
        agent: Agent, caplog: pytest.LogCaptureFixture, tmp_path: Path, text: str,
        key: str | None) -> None:
    port = agent.api.port
    rest = {"listen": f"127.0.0.1:{port}", "authentication": NEW,
            "connect_address": f"10.1.2.3:{port}"}
    if text == "SEE-DATA":
        agent.write(restapi={**rest, "verify_client": "sometimes"})
    elif text == "SEE-DATA-CERT":
        agent.write(restapi={**rest, "certfile": str(tmp_path / "gone.crt")})
    elif text == "SEE-DATA-NAME":
        agent.write(restapi=rest, name="pg9")
    else:
        agent.path.write_text(text)
    before = agent.local.config
    caplog.set_level(logging.INFO)
    assert not await agent.reloader.reload(None, "primary")
    lines = reload_lines(caplog)
    assert len(lines) == 1 and lines[0][0] == logging.ERROR, lines
    assert "keeping the running" in lines[0][1]
    if key is not None:
        assert key in lines[0][1]
    assert agent.local.config is before
    assert agent.pg.applied == []
    assert agent.publisher.status.api_url == f"http://127.0.0.1:{port}/patroni"
    assert await agent.post_reload(OLD) == 200
    assert await agent.post_reload(NEW) == 401


def test_changed_keys_and_what_each_needs(tmp_path: Path) -> None:
    base = {"scope": "demo", "name": "pg1", "etcd": {"host": "127.0.0.1:2379"},
            "postgresql": {"data_dir": "/d", "bin_dir": "/tmp", "parameters": {"work_mem": "4MB"}}}
    path = tmp_path / "a.yml"
    path.write_text(yaml.safe_dump(base))
    old = load_config(path)
    base["postgresql"] = {"data_dir": "/e", "bin_dir": "/tmp",
                          "parameters": {"work_mem": "8MB"}}
    base["log"] = {"level": "DEBUG"}
    base["ctl"] = {"insecure": True}
    path.write_text(yaml.safe_dump(base))
    new = load_config(path)
    keys = changed_keys(old, new)
    assert keys == ["ctl", "log.level", "postgresql.config_dir", "postgresql.data_dir",
                    "postgresql.parameters"]
    assert [classify(k) for k in keys] == ["applied", "applied", "restart", "restart",
                                           "applied"]
    assert classify("bootstrap.dcs") == "bootstrap"
    assert classify("restapi.listen") == "applied"
    assert classify("zookeeper") == "restart"
    assert classify("watchdog.mode") == "restart"


# ----------------------------------------------------------------------------- peers
def write_identity(folder: Path, ca: trustme.CA) -> None:
    """CA, and a certificate for 127.0.0.1 that serves as both server and client identity."""
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(folder / "ca.crt"))
    leaf.cert_chain_pems[0].write_to_path(str(folder / "me.crt"))
    leaf.private_key_pem.write_to_path(str(folder / "me.key"))


def tls_config(folder: Path, port: int, **extra: Any) -> dict[str, Any]:
    return {"scope": "demo", "name": "pg1", "etcd": {"host": "127.0.0.1:2379"},
            "postgresql": {"data_dir": "/tmp/none", "bin_dir": "/tmp"},
            "restapi": {"listen": f"127.0.0.1:{port}", "certfile": str(folder / "me.crt"),
                        "keyfile": str(folder / "me.key"), "cafile": str(folder / "ca.crt"),
                        "verify_client": "required"}, **extra}


async def test_peer_session_takes_rotated_client_certificates_and_ca(tmp_path: Path) -> None:
    """The peer requires client certificates from a new CA; our files are rotated in place
    to that CA: only after the reload do our calls get through."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    new_ca = trustme.CA()
    write_identity(ours, trustme.CA())
    write_identity(theirs, new_ca)
    peer_port = free_port()
    peer_cfg = tmp_path / "peer.yml"
    peer_cfg.write_text(yaml.safe_dump(tls_config(theirs, peer_port)))
    our_cfg = tmp_path / "ours.yml"
    our_cfg.write_text(yaml.safe_dump(tls_config(ours, free_port())))
    peer = Member("pg2", api_url=f"https://127.0.0.1:{peer_port}/patroni")
    config = load_config(our_cfg)
    client = PeerClient(config, "pg1")
    async with ApiServer(Source(primary_status()), load_config(peer_cfg)), client:
        assert await client.status_of(peer, timeout=5) is None
        unchanged = client.prepare(config)
        assert not await client.commit(config, unchanged)
        write_identity(ours, new_ca)  # rotated under the same file names
        assert await client.status_of(peer, timeout=5) is None  # not reloaded yet
        rotated = load_config(our_cfg)
        assert await client.commit(rotated, client.prepare(rotated))
        status = await client.status_of(peer, timeout=5)
        assert status is not None and status.role == "primary"
