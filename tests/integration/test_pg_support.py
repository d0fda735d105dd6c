"""Helpers for the PostgreSQL-layer integration tests (no tests here).

Every cluster lives in its own temporary directory with free ports; ``new_cluster()`` stops
every postmaster it started with ``pg_ctl stop -m immediate`` on exit, even after a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from pgha.cli.localcluster import free_port
from pgha.core.actions import SlotSpec, SyncSlots, Upstream, slot_name
from pgha.pg.postgres import Postgres
from pgha.pg.process import pid_alive, postmaster_pid
from pgha.pg.settings import PgSettings, PgUser

PG_BIN = Path("/usr/lib/postgresql/15/bin")

requires_pg = pytest.mark.skipif(
    not (PG_BIN / "postgres").exists() or os.geteuid() == 0,
    reason="needs PostgreSQL 15 binaries and a non-root user (run as postgres)",
)

PARAMETERS: dict[str, Any] = {
    "shared_buffers": "16MB",
    "max_connections": 30,
    "wal_keep_size": "128MB",
    "log_min_messages": "warning",
    "wal_receiver_status_interval": "1s",
    "wal_retrieve_retry_interval": "500ms",
}




def member_yaml(root: Path, scope: str, name: str, bootstrap_dcs: dict[str, Any] | None = None,
                **pg: Any) -> dict[str, Any]:
    """A member's YAML-shaped configuration under ``root`` (data, socket and pgpass there; a
    free port), with ``bootstrap.dcs`` when given and ``pg`` added to its postgresql section."""
    bootstrap: dict[str, Any] = {"initdb": ["no-sync", {"encoding": "UTF8"}]}
    if bootstrap_dcs is not None:
        bootstrap["dcs"] = bootstrap_dcs
    return {
        "scope": scope, "name": name, "etcd3": {"hosts": ["127.0.0.1:2379"]},
        "bootstrap": bootstrap,
        "postgresql": {
            "listen": f"127.0.0.1:{free_port()}", "data_dir": str(root / "data"),
            "bin_dir": str(PG_BIN), "pgpass": str(root / "pgpass"), "pg_ctl_timeout": 30,
            "authentication": {"superuser": {"username": "postgres", "password": "su"},
                               "replication": {"username": "replicator", "password": "rep"}},
            "parameters": {"shared_buffers": "16MB", "log_min_messages": "warning",
                           "unix_socket_directories": str(root)},
            **pg,
        },
    }


class Cluster:
    """Nodes of one test cluster; remembers every Postgres it made for teardown."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.nodes: list[Postgres] = []

    def node(self, name: str) -> Postgres:
        root = self.base / name
        settings = PgSettings(
            name=name, scope="it", data_dir=root / "data", bin_dir=PG_BIN,
            listen_host="127.0.0.1", port=free_port(), connect_host="127.0.0.1",
            superuser=PgUser("postgres", "su-secret"),
            replication=PgUser("replicator", "rep:secret"),
            rewind=PgUser("rewinder", "rw'secret"),
            parameters=PARAMETERS, pg_hba=(), initdb_options=("no-sync", {"encoding": "UTF8"}),
            bootstrap_users={"admin": PgUser("admin", "adm", ("createrole", "createdb"))},
            pgpass=root / "pgpass", socket_dir=root, pg_ctl_timeout=30,
        )
        pg = Postgres(settings)
        self.nodes.append(pg)
        return pg

    def stop_all(self) -> None:
        for pg in self.nodes:
            if postmaster_pid(pg.settings.data_dir) is not None:
                subprocess.run(
                    [str(PG_BIN / "pg_ctl"), "stop", "-D", str(pg.settings.data_dir),
                     "-m", "immediate", "-w", "-t", "20"],
                    check=False, capture_output=True, timeout=30)


@contextlib.asynccontextmanager
async def new_cluster() -> AsyncIterator[Cluster]:
    base = Path(tempfile.mkdtemp(prefix="pgha-it-"))
    cluster = Cluster(base)
    try:
        yield cluster
    finally:
        for pg in cluster.nodes:
            with contextlib.suppress(Exception):
                await pg.close()
        cluster.stop_all()
        shutil.rmtree(base, ignore_errors=True)


def upstream(pg: Postgres) -> Upstream:
    return Upstream(pg.settings.name, pg.conn_url())


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0,
                     what: str = "condition") -> None:
    """Poll ``check`` until it is true; fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def make_primary(cluster: Cluster, name: str = "a") -> Postgres:
    pg = cluster.node(name)
    assert await pg.initdb()
    assert await pg.start("primary", None)
    await pg.create_roles()
    await pg.execute("CREATE TABLE t (id int PRIMARY KEY, note text)")
    return pg


async def sync_member_slots(pg: Postgres, keep: Iterable[str]) -> dict[str, str]:
    """Member slots as a slot plan would have them: create the physical slots of ``keep``
    (member names; our own left out) and drop the inactive physical slots not in it."""
    wanted = {slot_name(n) for n in keep} - {slot_name(pg.settings.name)}
    state = await pg.observe()
    assert state.slots is not None, "slots not observed"
    existing = {s.name: s for s in state.slots}
    plan = SyncSlots(
        create=tuple(SlotSpec(n) for n in sorted(wanted - existing.keys())),
        drop=tuple(n for n, s in sorted(existing.items())
                   if s.type == "physical" and not s.active and n not in wanted))
    return await pg.sync_slots(plan)


async def make_replica(cluster: Cluster, primary: Postgres, name: str,
                       also_keep: frozenset[str] = frozenset()) -> Postgres:
    """Clone ``name`` from ``primary`` (after creating its slot there) and start it."""
    replica = cluster.node(name)
    assert await sync_member_slots(primary, {name} | also_keep) == {}
    assert await replica.clone(upstream(primary))
    assert await replica.start("replica", upstream(primary))
    return replica


async def rows(pg: Postgres) -> set[str]:
    return {r["note"] for r in await pg.execute("SELECT note FROM t")}


async def insert(pg: Postgres, *notes: str) -> None:
    for note in notes:
        await pg.execute("INSERT INTO t SELECT coalesce(max(id), 0) + 1, $1 FROM t", note)


async def wait_rows(pg: Postgres, expected: set[str], timeout: float = 30.0) -> None:
    async def has_rows() -> bool:
        try:
            return expected <= await rows(pg)
        except Exception:
            return False

    await eventually(has_rows, timeout, f"rows {sorted(expected)} on {pg.settings.name}")


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


async def kill_postmaster(pg: Postgres) -> None:
    """SIGKILL the postmaster and wait until it and its children are gone (so the shared
    memory is free for the next start)."""
    pid = postmaster_pid(pg.settings.data_dir)
    assert pid is not None
    children = _children(pid)
    os.kill(pid, signal.SIGKILL)

    async def all_gone() -> bool:
        return not any(pid_alive(p) for p in [pid, *children])

    await eventually(all_gone, 20, "postmaster and children to exit")
