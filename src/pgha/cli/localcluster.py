"""A cluster on one machine: an etcd on loopback plus N pgha agents, each a real process.

Used by ``pgha demo``, the integration tests and the benchmarks. Every process it starts is
stopped by ``stop_all()`` (also on errors, when used as a context manager). Ports are taken from
the preferred values when free, else from below the kernel's ephemeral range
(:func:`free_port`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

MARKER = ".pgha-localcluster"


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


#: where :func:`free_port` looks when the kernel's ephemeral range cannot be read
_EPHEMERAL_DEFAULT = (32768, 60999)
_LOWEST = 10_000
_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return _EPHEMERAL_DEFAULT


def free_port(preferred: int | None = None, taken: set[int] | None = None) -> int:
    """``preferred`` when it is free, else a free port below the kernel's ephemeral range.

    A port from that range (what binding port 0 returns) can be taken at any moment as the
    local end of some process's outgoing connection - before the server meant for it
    binds, or while that server is down for a restart ("address already in use"). Below the
    range only a listener can take it. The search starts at a point derived from the process
    id (parallel test runs look in different places) and never hands the same port out twice
    in one process; ``taken`` (when given) collects what it returned."""
    taken = taken if taken is not None else set()
    if preferred and preferred not in taken and port_is_free(preferred):
        taken.add(preferred)
        return preferred
    low = _ephemeral_range()[0]
    span = low - _LOWEST
    if span < 1000:  # an unusual range: let the kernel choose
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in taken:
                taken.add(port)
                return port
    start = (os.getpid() * 97 + len(_handed_out)) % span
    for step in range(span):
        port = _LOWEST + (start + step) % span
        if port in taken or port in _handed_out or not port_is_free(port):
            continue
        taken.add(port)
        _handed_out.add(port)
        return port
    raise OSError(f"no free TCP port between {_LOWEST} and {low}")


def wait_tcp(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
            return True
        time.sleep(0.1)
    return False


@dataclass
class Etcd:
    """One etcd server on loopback with its own data directory."""

    data_dir: Path
    client_port: int
    peer_port: int
    binary: str = "etcd"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir.parent / "etcd.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--name", "demo", "--data-dir", str(self.data_dir / "data"),
             "--listen-client-urls", f"http://127.0.0.1:{self.client_port}",
             "--advertise-client-urls", f"http://127.0.0.1:{self.client_port}",
             "--listen-peer-urls", f"http://127.0.0.1:{self.peer_port}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_port}",
             "--initial-cluster", f"demo=http://127.0.0.1:{self.peer_port}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        if not wait_tcp("127.0.0.1", self.client_port, 20):
            self.stop()
            raise RuntimeError(f"etcd did not start; see {self.data_dir.parent / 'etcd.log'}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclass
class MemberProc:
    """One pgha agent process and its configuration."""

    name: str
    config_path: Path
    data_dir: Path
    pg_port: int
    api_port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None


@dataclass
class LocalCluster:
    """``base_dir`` holds one folder per member, etcd's data and every log.

    ``dynamic`` is merged into ``bootstrap.dcs`` (e.g. ``{"ttl": 5, "loop_wait": 1}``).
    """

    base_dir: Path
    scope: str = "demo"
    members: int = 3
    dynamic: Mapping[str, Any] = field(default_factory=dict)
    first_pg_port: int | None = 5441  # None: any free port
    first_api_port: int | None = 8008
    etcd_port: int | None = 2379
    python: str = sys.executable
    # the module each agent runs as ``python -m <module> run <config>``
    agent_module: str = "pgha.cli.entry"
    bin_dir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    # (member name, etcd endpoint) -> the endpoint written into that member's config; lets a
    # test put a proxy it can cut between one member and the DCS
    dcs_endpoint: Callable[[str, str], str] | None = None
    # a DCS the caller runs (e.g. {"zookeeper": {"hosts": [...]}}): no etcd is started then
    dcs_section: Mapping[str, Any] | None = None
    etcd: Etcd | None = None
    procs: dict[str, MemberProc] = field(default_factory=dict)

    def __enter__(self) -> Self:
        self.prepare()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_all()

    # ------------------------------------------------------------------ setup
    def prepare(self) -> None:
        """Fresh directories, free ports, etcd started, member configs written."""
        if self.base_dir.exists():
            if not (self.base_dir / MARKER).exists() and any(self.base_dir.iterdir()):
                raise RuntimeError(f"{self.base_dir} exists and is not a pgha demo directory")
            shutil.rmtree(self.base_dir)
        self.base_dir.mkdir(parents=True)
        (self.base_dir / MARKER).touch()
        taken: set[int] = set()
        if self.dcs_section is None:
            self.etcd = Etcd(self.base_dir / "etcd", free_port(self.etcd_port, taken),
                             free_port(self.etcd_port and self.etcd_port + 1, taken))
            self.etcd.start()
        for i in range(1, self.members + 1):
            name = f"pg{i}"
            pg_port = free_port(self.first_pg_port and self.first_pg_port + i - 1, taken)
            api_port = free_port(self.first_api_port and self.first_api_port + i - 1, taken)
            mdir = self.base_dir / name
            mdir.mkdir()
            member = MemberProc(name, mdir / "pgha.yml", mdir / "data", pg_port, api_port,
                                mdir / "pgha.log")
            member.config_path.write_text(yaml.safe_dump(self.member_config(member),
                                                         sort_keys=False))
            self.procs[name] = member

    def _dcs_config(self, m: MemberProc) -> dict[str, Any]:
        if self.dcs_section is not None:
            return dict(self.dcs_section)
        assert self.etcd is not None
        endpoint = self.etcd.endpoint
        if self.dcs_endpoint is not None:
            endpoint = self.dcs_endpoint(m.name, endpoint)
        return {"etcd3": {"hosts": [endpoint]}}

    def member_config(self, m: MemberProc) -> dict[str, Any]:
        dcs: dict[str, Any] = {
            "ttl": 20, "loop_wait": 2, "retry_timeout": 3,
            "maximum_lag_on_failover": 1048576,
            "postgresql": {"use_pg_rewind": True, "use_slots": True,
                           "parameters": {"max_connections": 50, "shared_buffers": "32MB",
                                          "wal_keep_size": "64MB"}},
        }
        for key, value in self.dynamic.items():
            if key == "postgresql" and isinstance(value, Mapping):
                dcs["postgresql"] = {**dcs["postgresql"], **value}
            else:
                dcs[key] = value
        cfg: dict[str, Any] = {
            "scope": self.scope,
            "namespace": "/service/",
            "name": m.name,
            "restapi": {"listen": f"127.0.0.1:{m.api_port}",
                        "connect_address": f"127.0.0.1:{m.api_port}"},
            **self._dcs_config(m),
            "bootstrap": {
                "dcs": dcs,
                "initdb": [{"encoding": "UTF8"}, "data-checksums", {"auth-local": "trust"}],
                "pg_hba": [
                    "local all all trust",
                    "host replication replicator 127.0.0.1/32 scram-sha-256",
                    "host all all 127.0.0.1/32 scram-sha-256",
                ],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{m.pg_port}",
                "connect_address": f"127.0.0.1:{m.pg_port}",
                "data_dir": str(m.data_dir),
                "pgpass": str(m.data_dir.parent / "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres", "password": "demo-super"},
                    "replication": {"username": "replicator", "password": "demo-repl"},
                    "rewind": {"username": "rewind_user", "password": "demo-rewind"},
                },
                "parameters": {"unix_socket_directories": str(m.data_dir.parent)},
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
        }
        if self.bin_dir:
            cfg["postgresql"]["bin_dir"] = self.bin_dir
        return cfg

    # ------------------------------------------------------------------ processes
    def start(self, name: str) -> MemberProc:
        m = self.procs[name]
        if m.alive:
            return m
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        log = open(m.log_path, "ab")
        m.proc = subprocess.Popen(
            [self.python, "-m", self.agent_module, "run", str(m.config_path)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        log.close()
        return m

    def start_all(self, stagger: float = 0.0) -> None:
        for name in self.procs:
            self.start(name)
            if stagger:
                time.sleep(stagger)

    def stop(self, name: str, timeout: float = 60.0) -> None:
        """SIGTERM: the agent stops PostgreSQL cleanly and releases its lock."""
        m = self.procs[name]
        if m.proc is None:
            return
        if m.proc.poll() is None:
            m.proc.send_signal(signal.SIGTERM)
            try:
                m.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait()
        m.proc = None

    def kill_agent(self, name: str) -> None:
        m = self.procs[name]
        if m.proc is not None and m.proc.poll() is None:
            m.proc.kill()
            m.proc.wait()
        m.proc = None

    def kill_postmaster(self, name: str) -> int | None:
        pid = self.procs[name].postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pid

    def kill_node(self, name: str) -> None:
        """Simulated node death: agent and postmaster SIGKILLed together."""
        pid = self.procs[name].postmaster_pid()
        self.kill_agent(name)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            # the postmaster's children die with it on the next tick; wait for them
            deadline = time.monotonic() + 10
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)

    def stop_all(self) -> None:
        """Stop replicas first, then the rest; then etcd. Leftover postmasters are killed."""
        for name in reversed(list(self.procs)):
            with contextlib.suppress(Exception):
                self.stop(name, timeout=30)
        for m in self.procs.values():
            pid = m.postmaster_pid()
            if pid is not None and _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.etcd is not None:
            self.etcd.stop()

    def iter_logs(self) -> Iterator[tuple[str, str]]:
        for name, m in self.procs.items():
            with contextlib.suppress(OSError):
                yield name, m.log_path.read_text(errors="replace")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
