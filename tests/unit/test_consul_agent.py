"""The real-Consul harness (tests/support/consul_agent.py) without a Consul: its availability
check, and its process handling against a stand-in ``consul`` binary (a script serving the
Consul emulator on the ``-http-port`` it is given), named by ``PGHA_TEST_CONSUL``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from tests.support import consul_agent
from tests.support.dcs_servers import SERVERS, available

from pgha.dcs.store import ClusterStore

ROOT = Path(__file__).resolve().parents[2]

FAKE = f"""#!{sys.executable}
import json, sys
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "src")!r}]
args = sys.argv[1:]
if args[:1] == ["version"]:
    print("Consul v1.16.1")
    sys.exit(0)
assert args[:2] == ["agent", "-dev"], args
ports = json.load(open(args[args.index("-config-file") + 1]))["ports"]
assert ports["grpc_tls"] == -1 and ports["dns"] == -1, ports
from tests.support.consul_emulator import main
main(["--port", args[args.index("-http-port") + 1]])
"""


def test_registry_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    assert {"consul", "consul-emulator"} <= set(SERVERS)
    assert available("consul-emulator") is None
    monkeypatch.delenv("PGHA_TEST_CONSUL", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert available("consul") == consul_agent.NO_CONSUL
    assert "emulator" in consul_agent.NO_CONSUL


@pytest.mark.timeout(60)
def test_harness_runs_a_consul_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "consul"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    monkeypatch.setenv("PGHA_TEST_CONSUL", str(fake))
    assert available("consul") is None
    dcs = SERVERS["consul"][0]()  # started: its HTTP API answers
    server = dcs.server  # type: ignore[attr-defined]

    async def scenario() -> None:
        store = ClusterStore(dcs.make_kv(20, 2), "/service/", "h", "a")
        assert await store.acquire_leader()
        await asyncio.to_thread(dcs.stop)
        assert not server.running
        await asyncio.to_thread(dcs.start)  # -dev: the state is gone
        assert (await store.load()).leader is None
        await store.kv.close()

    try:
        assert dcs.config_section() == {"consul": {"host": f"127.0.0.1:{server.port}"}}
        assert getattr(dcs, "contract_ttl", None) == 20.0
        asyncio.run(scenario())
        dcs.kill()
        assert not server.running
    finally:
        dcs.close()
    assert not Path(server.base_dir).exists()
