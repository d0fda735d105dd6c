"""A real HAProxy in front of a LocalCluster, configured from the shipped example
(configs/haproxy.cfg), and clients that write and read through it.

:func:`render_config` turns the example into a local configuration (addresses, ports, log to
stdout) and fails when the example no longer has the lines it rewrites, so the example stays
the file the tests run. :class:`HAProxy` runs it in the foreground (``-db``) and always stops
it. :class:`EndpointWriter` writes through the primary port, :class:`EndpointReader` opens a
new connection to the replica port for every read and records where it landed.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import itertools
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import asyncpg

from pgha.cli.localcluster import MemberProc, free_port, wait_tcp

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "configs" / "haproxy.cfg"
HAPROXY_BIN = shutil.which("haproxy") or "/usr/sbin/haproxy"
PASSWORD = "demo-super"  # LocalCluster's superuser password
_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
           TimeoutError)


def _sub(text: str, pattern: str, repl: str, count: int) -> str:
    new, n = re.subn(pattern, repl, text, flags=re.MULTILINE)
    if n != count:
        raise AssertionError(f"configs/haproxy.cfg: expected {count} line(s) matching "
                             f"{pattern!r}, found {n}; update tests/support/haproxy.py with it")
    return new


def render_config(template: str, members: list[MemberProc], primary_port: int,
                  replica_port: int, stats_port: int) -> str:
    """The example with its three ``server pgN ADDR:5432 ... check port 8008`` lines per group
    pointing at ``members`` (127.0.0.1, their PostgreSQL and REST ports), the frontends on
    127.0.0.1 and the given ports, and logging to stdout. AssertionError when the example does
    not have exactly the expected lines."""
    text = _sub(template, r"^(\s*)log /dev/log local0$", r"\1log stdout format raw local0", 1)
    text = _sub(text, r"^(\s*)bind \*:5000$", rf"\g<1>bind 127.0.0.1:{primary_port}", 1)
    text = _sub(text, r"^(\s*)bind \*:5001$", rf"\g<1>bind 127.0.0.1:{replica_port}", 1)
    text = _sub(text, r"^(\s*)bind \*:7000$", rf"\g<1>bind 127.0.0.1:{stats_port}", 1)
    for m in members:
        text = _sub(text, rf"^(\s*server {m.name}) \S+:5432 (.*)check port 8008$",
                    rf"\1 127.0.0.1:{m.pg_port} \2check port {m.api_port}", 2)
    return text


class HAProxy:
    """``haproxy -db`` (foreground) on the configuration rendered from the example into
    ``base_dir``; its output goes to ``base_dir/haproxy.log``. ``start()`` returns once the
    three frontends accept connections; ``stop()`` (also on exit of the context manager)
    terminates it and waits."""

    def __init__(self, base_dir: Path, members: list[MemberProc],
                 template: Path = EXAMPLE) -> None:
        self.base_dir = base_dir
        taken = {m.pg_port for m in members} | {m.api_port for m in members}
        self.primary_port = free_port(None, taken)
        self.replica_port = free_port(None, taken)
        self.stats_port = free_port(None, taken)
        self.config = render_config(template.read_text(), members, self.primary_port,
                                    self.replica_port, self.stats_port)
        self.config_path = base_dir / "haproxy.cfg"
        self.log_path = base_dir / "haproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config)
        subprocess.run([HAPROXY_BIN, "-c", "-q", "-f", str(self.config_path)], check=True,
                       timeout=30)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([HAPROXY_BIN, "-db", "-f", str(self.config_path)],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        for port in (self.primary_port, self.replica_port, self.stats_port):
            if not wait_tcp("127.0.0.1", port, 20):
                self.stop()
                raise RuntimeError(f"haproxy did not listen on {port}; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def up(self) -> dict[str, set[str]]:
        """Per group (``primary``, ``replicas``): the servers HAProxy has UP, from the
        statistics CSV."""
        url = f"http://127.0.0.1:{self.stats_port}/;csv"
        with urllib.request.urlopen(url, timeout=2) as resp:
            text = resp.read().decode()
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        found: dict[str, set[str]] = {"primary": set(), "replicas": set()}
        for row in rows:
            group, server = row.get("pxname", ""), row.get("svname", "")
            if group in found and server not in ("FRONTEND", "BACKEND") \
                    and row.get("status", "").startswith("UP"):
                found[group].add(server)
        return found


async def _connect(port: int, timeout: float) -> asyncpg.Connection:
    return await asyncpg.connect(host="127.0.0.1", port=port, user="postgres",
                                 password=PASSWORD, database="postgres", ssl=False,
                                 timeout=timeout)


@dataclass
class Write:
    seq: int
    started: float
    acked: float | None = None
    server_port: int | None = None  # the PostgreSQL port of the member that committed it


@dataclass
class EndpointWriter:
    """Inserts one row ``(seq)`` into table ``bench`` every ``interval`` seconds through one
    address (HAProxy's primary port), keeping its connection until it fails and reconnecting
    on the next write. One attempt (connect if needed, INSERT, autocommit) is given
    ``timeout`` seconds; a write is acknowledged when its COMMIT returned within it."""

    port: int
    interval: float = 0.05
    timeout: float = 1.0
    writes: list[Write] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run_in_thread(self) -> threading.Thread:
        return _in_thread(self._run)

    async def _run(self) -> None:
        conn: asyncpg.Connection | None = None
        tick = time.monotonic()
        for seq in itertools.count(1):
            if self.stop.is_set():
                break
            w = Write(seq, time.monotonic())
            try:
                async with asyncio.timeout(self.timeout):
                    if conn is None or conn.is_closed():
                        conn = await _connect(self.port, self.timeout)
                    port = await conn.fetchval(
                        "INSERT INTO bench (seq) VALUES ($1) RETURNING inet_server_port()", seq)
                w.acked, w.server_port = time.monotonic(), int(port)
            except _ERRORS:
                if conn is not None:
                    conn.terminate()
                conn = None
            self.writes.append(w)
            tick += self.interval
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
        if conn is not None:
            conn.terminate()

    def acked(self) -> set[int]:
        return {w.seq for w in self.writes if w.acked is not None}

    def longest_gap(self, t0: float, t1: float) -> float | None:
        """The longest time between two consecutive acknowledged writes from the last one
        acknowledged before ``t0`` to the last one acknowledged before ``t1``; None when none
        was acknowledged in ``[t0, t1)``."""
        acked = sorted(w.acked for w in self.writes if w.acked is not None)
        before = [a for a in acked if a < t0]
        inside = [a for a in acked if t0 <= a < t1]
        if not inside:
            return None
        points = before[-1:] + inside
        return max((b - a for a, b in itertools.pairwise(points)), default=0.0)


def _in_thread(run: Callable[[], Coroutine[Any, Any, None]]) -> threading.Thread:
    """A started daemon thread running ``run()`` in an event loop of its own."""
    t = threading.Thread(target=lambda: asyncio.run(run()), daemon=True)
    t.start()
    return t


@dataclass
class Read:
    at: float
    in_recovery: bool | None = None  # None: the read failed
    server_port: int | None = None


@dataclass
class EndpointReader:
    """Every ``interval`` seconds opens a new connection to ``port`` (HAProxy's replica port:
    each connection is balanced anew), asks ``pg_is_in_recovery()`` and the server's port, and
    closes it."""

    port: int
    interval: float = 0.05
    timeout: float = 1.0
    reads: list[Read] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run_in_thread(self) -> threading.Thread:
        return _in_thread(self._run)

    async def _run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            self.reads.append(await read_once(self.port, self.timeout))
            await asyncio.sleep(max(0.0, started + self.interval - time.monotonic()))


async def read_once(port: int, timeout: float = 2.0) -> Read:
    """One read on a new connection to ``port``: where it landed, or a failed Read."""
    r = Read(time.monotonic())
    conn: asyncpg.Connection | None = None
    try:
        async with asyncio.timeout(timeout):
            conn = await _connect(port, timeout)
            row = await conn.fetchrow("SELECT pg_is_in_recovery(), inet_server_port()")
        assert row is not None
        r.in_recovery, r.server_port = bool(row[0]), int(row[1])
    except _ERRORS:
        pass
    finally:
        if conn is not None:
            with contextlib.suppress(*_ERRORS):
                conn.terminate()
    return r


def reads_through(port: int, count: int) -> list[Read]:
    """``count`` reads, one connection each, one after the other."""

    async def run() -> list[Read]:
        return [await read_once(port) for _ in range(count)]

    return asyncio.run(run())
