"""Real etcd servers for tests: one process (:class:`EtcdServer`) or a cluster
(:class:`EtcdCluster`) on loopback, free ports, temporary data directories.

Processes are always stopped: by the context managers, by ``close()``, at interpreter exit
(atexit), and by the kernel if the test process dies (PR_SET_PDEATHSIG, when spawned from the
main thread).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from pgha.cli.localcluster import free_port
from tests.support.managed import ManagedServer

ETCD_BIN = os.environ.get("PGHA_TEST_ETCD", "/usr/bin/etcd")


def etcd_available() -> bool:
    return os.access(ETCD_BIN, os.X_OK)




class EtcdServer(ManagedServer):
    """One etcd member. ``start()`` spawns it and waits until ``/health`` answers true (unless
    ``wait=False``); ``stop()`` terminates it (SIGTERM, then SIGKILL), ``kill()`` sends SIGKILL;
    ``start()`` again reuses the same data directory and ports. ``close()`` stops it and
    removes the temporary directory. Usable as a sync or async context manager."""

    def __init__(
        self,
        name: str = "etcd0",
        *,
        client_port: int | None = None,
        peer_port: int | None = None,
        initial_cluster: str | None = None,
        cluster_token: str = "pgha-test",
        base_dir: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        # more etcd flags, e.g. ("--metrics", "extensive") for per-method latency histograms
        self.extra_args = tuple(extra_args)
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="pgha-etcd-"))
        self.data_dir = self.base_dir / f"{name}.data"
        self.log_path = self.base_dir / f"{name}.log"
        self.initial_cluster = initial_cluster or f"{name}={self.peer_url}"
        self.cluster_token = cluster_token
        self.proc: subprocess.Popen[bytes] | None = None
        atexit.register(self.close)

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", self.client_port)]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        """Start the process without waiting for it to be ready (no-op while running)."""
        if self.running:
            return
        args = [
            ETCD_BIN,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", self.cluster_token,
            *self.extra_args,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                # no preexec_fn: the parent runs gRPC threads, and code between fork and exec
                # in a multi-threaded process can deadlock or abort (seen: SIGABRT)
            )

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=1) as resp:
                return b'"true"' in resp.read()
        except OSError:
            return False

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"etcd {self.name} exited ({self.proc.returncode}):\n{self.log_tail()}"
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd {self.name} not healthy after {timeout}s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.1)

    async def async_wait_ready(self, limit: float = 30.0) -> None:
        deadline = time.monotonic() + limit
        while not await asyncio.to_thread(self.healthy):
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd {self.name} not healthy after {limit}s:\n"
                                   f"{self.log_tail()}")
            await asyncio.sleep(0.1)

    def start(self, wait: bool = True) -> None:
        self.spawn()
        if wait:
            self.wait_ready()

    async def astart(self, wait: bool = True) -> None:
        """``start()`` without blocking the event loop."""
        self.spawn()
        if wait:
            await self.async_wait_ready()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait; SIGKILL if it does not exit within ``timeout``."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.proc = None

    async def astop(self, limit: float = 10.0) -> None:
        """``stop()`` without blocking the event loop."""
        await asyncio.to_thread(self.stop, limit)

    def kill(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self.proc = None

    def close(self) -> None:
        """Stop the process and remove the temporary directory (idempotent)."""
        try:
            self.kill()
        finally:
            if self._own_dir:
                shutil.rmtree(self.base_dir, ignore_errors=True)
            atexit.unregister(self.close)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""



class EtcdCluster(ManagedServer):
    """``n`` etcd members forming one cluster on loopback, sharing one temporary directory.
    ``members[i]`` is an :class:`EtcdServer` (``kill()``, ``stop()``, ``start(wait=...)``)."""

    def __init__(self, n: int = 3) -> None:
        self.base_dir = tempfile.mkdtemp(prefix="pgha-etcd-cluster-")
        names = [f"etcd{i}" for i in range(n)]
        peers = [free_port() for _ in names]
        initial = ",".join(f"{nm}=http://127.0.0.1:{p}" for nm, p in zip(names, peers, strict=True))
        token = f"pgha-test-{os.getpid()}-{peers[0]}"
        self.members = [
            EtcdServer(nm, peer_port=p, initial_cluster=initial, cluster_token=token,
                       base_dir=self.base_dir)
            for nm, p in zip(names, peers, strict=True)
        ]
        atexit.register(self.close)

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        return [ep for m in self.members for ep in m.endpoints]

    def start(self, timeout: float = 30.0) -> None:
        for m in self.members:
            m.spawn()
        for m in self.members:
            m.wait_ready(timeout)

    async def astart(self, limit: float = 30.0) -> None:
        for m in self.members:
            m.spawn()
        for m in self.members:
            await m.async_wait_ready(limit)

    def close(self) -> None:
        try:
            for m in self.members:
                m.close()
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            atexit.unregister(self.close)

