"""A test bench for the operator CLI: an in-memory DCS behind the CLI's ``kv_factory`` seam,
scripted member REST APIs (:mod:`tests.support.fake_api`), a configuration file, and a Typer
``CliRunner`` that invokes ``pgha -c <config> ...``."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from pgha.cli import common
from pgha.cli.main import app
from pgha.dcs.codec import dumps, loads
from pgha.dcs.memory import MemoryBackend, MemoryStore
from tests.support.fake_api import FakeApis, FakeMember

SYSID = "7123456789012345678"
PREFIX = "/service/demo/"
MB = 1024 * 1024
HEAD = 0x5000000

CONFIG_YAML = """\
scope: demo
name: pg1
etcd:
  hosts: 127.0.0.1:2379
postgresql:
  listen: 127.0.0.1:5432
  data_dir: /tmp/pg1
  authentication:
    superuser:
      username: {superuser}
      password: {password}
"""

AUTH = ("admin", "s3cret")  # restapi.authentication of the configs built with ``auth=AUTH``
BASIC = "Basic " + base64.b64encode(b"admin:s3cret").decode()


@pytest.fixture
def apis() -> Iterator[FakeApis]:
    """Scripted member REST servers, stopped after the test (offered to the unit tests by
    tests/unit/conftest.py)."""
    with FakeApis() as servers:
        yield servers


class CliEnv:
    """See the module docstring. ``auth`` sets ``restapi.authentication`` in the config and
    makes every fake member demand it."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, apis: FakeApis,
                 auth: tuple[str, str] | None = None, extra_yaml: str = "",
                 superuser: tuple[str, str] = ("postgres", "secret")) -> None:
        self.backend = MemoryBackend()
        self.apis = apis
        self.auth = auth
        monkeypatch.setattr(common, "kv_factory",
                            lambda config, timeout: MemoryStore(self.backend, timeout=timeout))
        for var in ("PGHA_CONFIG_FILE", "PATRONICTL_CONFIG_FILE", "EDITOR", "VISUAL"):
            monkeypatch.delenv(var, raising=False)
        text = CONFIG_YAML.format(superuser=superuser[0], password=superuser[1])
        if auth is not None:
            text += f"restapi:\n  authentication:\n    username: {auth[0]}\n" \
                    f"    password: {auth[1]}\n"
        self.config_path = tmp_path / "pgha.yml"
        self.config_path.write_text(text + extra_yaml)
        self.runner = CliRunner()

    # -- DCS ------------------------------------------------------------------------------------

    def put(self, key: str, value: Any, prefix: str = PREFIX) -> None:
        raw = value if isinstance(value, bytes) else dumps(value)
        asyncio.run(MemoryStore(self.backend).put(prefix + key, raw))

    def delete(self, key: str, prefix: str = PREFIX) -> None:
        asyncio.run(MemoryStore(self.backend).delete(prefix + key))

    def get(self, key: str, prefix: str = PREFIX) -> Any:
        raw = self.backend.dump().get(prefix + key)
        return None if raw is None else loads(raw)

    def revision(self, key: str, prefix: str = PREFIX) -> int:
        async def read() -> int:
            snap = await MemoryStore(self.backend).get_prefix(prefix + key)
            item = snap.items.get(prefix + key)
            return 0 if item is None else item.revision
        return asyncio.run(read())

    def member(self, name: str, role: str = "replica", state: str = "running",
               xlog: int | None = HEAD, timeline: int | None = 1, api: bool = True,
               port: int = 5432, host: str = "127.0.0.1", **extra: Any) -> FakeMember | None:
        """Publish ``members/<name>`` (with a fake API server unless ``api`` is False)."""
        fake = self.apis.add(name, self.auth) if api else None
        data: dict[str, Any] = {
            "conn_url": f"postgres://{host}:{port}/postgres",
            "api_url": fake.api_url if fake else "",
            "state": state, "role": role, "version": "0.1.0",
        }
        if xlog is not None:
            data["xlog_location"] = xlog
        if timeline is not None:
            data["timeline"] = timeline
        if role == "replica" and state == "running":
            data["replication_state"] = "streaming"
        data.update(extra)
        self.put(f"members/{name}", data)
        return fake

    def cluster(self, replicas: int = 2, config: dict[str, Any] | None = None
                ) -> dict[str, FakeMember]:
        """pg1 leader (primary) and replicas pg2.., each with a fake API; initialize, config
        and status keys."""
        self.put("initialize", SYSID.encode())
        self.put("config", config if config is not None else
                 {"ttl": 30, "loop_wait": 10, "retry_timeout": 10})
        fakes = {"pg1": self.member("pg1", role="primary", timeline=2)}
        for i in range(2, replicas + 2):
            fakes[f"pg{i}"] = self.member(f"pg{i}", timeline=2, xlog=HEAD - (i - 2) * 3 * MB)
        self.put("leader", b"pg1")
        self.put("status", {"optime": HEAD})
        return {k: v for k, v in fakes.items() if v is not None}

    # -- CLI ------------------------------------------------------------------------------------

    def invoke(self, *args: str, input: str | None = None) -> Result:
        """``pgha -c <config> args...``; exceptions other than SystemExit propagate."""
        return self.runner.invoke(app, ["-c", str(self.config_path), *args], input=input,
                                  catch_exceptions=False)
