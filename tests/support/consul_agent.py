"""A real ``consul agent -dev`` for tests, used only when a ``consul`` binary is on PATH
(``PGHA_TEST_CONSUL`` may name another one). Nothing here runs otherwise: the DCS contract
suite then runs against the Consul emulator only, and the registry entry ``consul`` is skipped
with the reason given by :func:`consul_agent_available`.

The agent is a single dev-mode server on loopback with free ports for HTTP, the server RPC and
serf (DNS and gRPC disabled). ``-dev`` keeps everything in memory: after ``stop()`` and
``start()`` it has lost its keys and sessions (clients see SessionExpired, their watches an
index that went backwards). The process is killed by ``close()`` and at interpreter exit (no
``preexec_fn``: code between fork and exec in a multi-threaded test process can deadlock).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from pgha.dcs.base import KVStore
from tests.support.consul_emulator import free_port
from tests.support.dcs_servers import ServedDcs

NO_CONSUL = "no consul binary on PATH: the contract suite runs against the Consul emulator only"


def consul_binary() -> str | None:
    return os.environ.get("PGHA_TEST_CONSUL") or shutil.which("consul")


def consul_agent_available() -> str | None:
    return None if consul_binary() else NO_CONSUL


class ConsulAgent:
    """One ``consul agent -dev`` process. ``start()`` waits until it has a raft leader;
    ``stop()`` is SIGTERM (then SIGKILL), ``kill()`` SIGKILL; ``close()`` also removes the
    temporary directory."""

    def __init__(self) -> None:
        binary = consul_binary()
        if binary is None:
            raise RuntimeError(NO_CONSUL)
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = free_port()
        self.base_dir = Path(tempfile.mkdtemp(prefix="pgha-consul-"))
        self.log_path = self.base_dir / "consul.log"
        ports: dict[str, int] = {"http": self.port, "dns": -1, "grpc": -1,
                                 "server": free_port(), "serf_lan": free_port(),
                                 "serf_wan": free_port()}
        if self._version() >= (1, 14):
            ports["grpc_tls"] = -1
        (self.base_dir / "ports.json").write_text(json.dumps({"ports": ports}))
        self.proc: subprocess.Popen[bytes] | None = None
        atexit.register(self.close)

    def _version(self) -> tuple[int, int]:
        out = subprocess.run([self.binary, "version"], capture_output=True, text=True,
                             timeout=30, check=False).stdout
        match = re.search(r"v(\d+)\.(\d+)", out)
        return (int(match[1]), int(match[2])) if match else (0, 0)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        cmd = [self.binary, "agent", "-dev", "-bind", self.host, "-client", self.host,
               "-node", f"pgha-test-{self.port}", "-http-port", str(self.port),
               "-config-file", str(self.base_dir / "ports.json"), "-log-level", "warn"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise RuntimeError(f"consul agent exited: {self.log_path.read_text()[-2000:]}")
            try:
                url = f"http://{self.host}:{self.port}/v1/status/leader"
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if json.loads(resp.read() or b'""'):
                        return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"consul agent not ready after {timeout}s")
            time.sleep(0.2)

    def _end(self, sig: int) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.base_dir, ignore_errors=True)


class ConsulAgentDcs(ServedDcs):
    """Registry adapter of a real ``consul agent -dev`` (see the module docstring)."""

    kind = "consul"
    contract_ttl = 20.0

    def __init__(self) -> None:
        self.server = ConsulAgent()
        self.server.start()

    def make_kv(self, ttl: float, timeout: float) -> KVStore:
        from pgha.dcs.consul import ConsulStore

        return ConsulStore(self.server.host, self.server.port, ttl=ttl, timeout=timeout)

    def config_section(self) -> dict[str, Any]:
        return {"consul": {"host": f"{self.server.host}:{self.server.port}"}}
