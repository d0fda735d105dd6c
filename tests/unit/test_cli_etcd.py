"""The CLI's real DCS path (no seam): ``list``, ``edit-config`` (compare-and-set), ``flush``
and ``remove`` against one real etcd process on loopback. Skipped, with the reason shown,
when the etcd binary is missing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support.etcd import EtcdServer, etcd_available
from typer.testing import CliRunner, Result

from pgha.cli.main import app
from pgha.dcs.codec import dumps, loads
from pgha.dcs.etcd import EtcdStore

pytestmark = pytest.mark.skipif(not etcd_available(), reason="etcd binary not available")

PREFIX = "/service/demo/"


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    with EtcdServer() as server:
        yield server


def _store(etcd: EtcdServer) -> EtcdStore:
    return EtcdStore(etcd.endpoints, ttl=30, timeout=5)


def _put(etcd: EtcdServer, key: str, value: bytes) -> None:
    async def go() -> None:
        async with _store(etcd) as kv:
            await kv.put(PREFIX + key, value)
    asyncio.run(go())


def _get(etcd: EtcdServer, key: str) -> bytes | None:
    async def go() -> bytes | None:
        async with _store(etcd) as kv:
            item = (await kv.get_prefix(PREFIX + key)).items.get(PREFIX + key)
            return None if item is None else item.value
    return asyncio.run(go())


@pytest.fixture
def invoke(etcd: EtcdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[Callable[..., Result]]:
    for var in ("PGHA_CONFIG_FILE", "PATRONICTL_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    config = tmp_path / "pgha.yml"
    config.write_text(f"scope: demo\nname: pg1\netcd3:\n  hosts: 127.0.0.1:{etcd.client_port}\n"
                      "postgresql:\n  data_dir: /tmp/pg1\n")
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> Result:
        return runner.invoke(app, ["-c", str(config), *args], input=input,
                             catch_exceptions=False)

    yield run

    async def wipe() -> None:
        async with _store(etcd) as kv:
            for key in (await kv.get_prefix(PREFIX)).items:
                await kv.delete(key)
    asyncio.run(wipe())


def test_list_edit_config_flush_remove_on_etcd(etcd: EtcdServer,
                                               invoke: Callable[..., Result]) -> None:
    run = invoke
    _put(etcd, "initialize", b"7000000000000000001")
    _put(etcd, "config", dumps({"ttl": 30, "loop_wait": 10, "retry_timeout": 10}))
    _put(etcd, "members/pg1", dumps({"conn_url": "postgres://127.0.0.1:5432/postgres",
                                     "api_url": "http://127.0.0.1:9/patroni",
                                     "state": "running", "role": "primary", "timeline": 1,
                                     "xlog_location": 100}))
    _put(etcd, "leader", b"pg1")
    _put(etcd, "failover", dumps({"leader": "pg1",
                                  "scheduled_at": "2099-01-01T00:00:00+00:00"}))

    listed = run("list")
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.startswith("+ Cluster: demo (7000000000000000001) ")
    assert "| pg1    | 127.0.0.1 | Leader |" in listed.stdout

    edited = run("edit-config", "-s", "ttl=40", "-p", "max_connections=50", "--force")
    assert edited.exit_code == 0, edited.output
    assert loads(_get(etcd, "config") or b"") == {
        "ttl": 40, "loop_wait": 10, "retry_timeout": 10,
        "postgresql": {"parameters": {"max_connections": 50}}}

    flushed = run("flush", "switchover")  # the leader's API does not answer: DCS fallback
    assert flushed.exit_code == 0, flushed.output
    assert _get(etcd, "failover") is None

    removed = run("remove", "demo", input="demo\nYes I am aware\npg1\n")
    assert removed.exit_code == 0, removed.output
    assert _get(etcd, "config") is None and _get(etcd, "leader") is None
