"""Helpers for tests and benchmarks that drive a LocalCluster of real agents."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from pgha.cli.localcluster import LocalCluster, MemberProc

T = TypeVar("T")
SRC = Path(__file__).resolve().parents[2] / "src"
PG_BIN = Path(os.environ.get("PGHA_PG_BIN", "/usr/lib/postgresql/15/bin"))


class Timeout(AssertionError):
    pass


def wait_until(fn: Callable[[], T | None], timeout: float, what: str,
               interval: float = 0.2) -> T:
    """Poll ``fn`` until it returns a truthy value; raise Timeout naming ``what``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = fn()
        except Exception as exc:
            last_exc = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise Timeout(f"timed out after {timeout}s waiting for {what} (last error: {last_exc})")


def http_get(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        body = err.read()
        try:
            return err.code, json.loads(body or b"null")
        except ValueError:
            return err.code, body


def call(m: MemberProc, method: str, path: str, body: Any = None,
         timeout: float = 60.0) -> tuple[int, Any]:
    """A REST call to member ``m`` with a JSON ``body``: (code, decoded JSON or text)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{m.api}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, code = resp.read(), resp.status
    except urllib.error.HTTPError as err:
        raw, code = err.read(), err.code
    try:
        return code, json.loads(raw)
    except ValueError:
        return code, raw.decode(errors="replace")


def status(m: MemberProc) -> dict[str, Any]:
    code, body = http_get(f"{m.api}/patroni")
    assert code == 200
    assert isinstance(body, dict)
    return body


def is_primary(m: MemberProc) -> bool:
    try:
        return http_get(f"{m.api}/primary", timeout=1.0)[0] == 200
    except OSError:
        return False


def is_replica(m: MemberProc) -> bool:
    try:
        return http_get(f"{m.api}/replica", timeout=1.0)[0] == 200
    except OSError:
        return False


def primary_of(cluster: LocalCluster) -> MemberProc | None:
    found = [m for m in cluster.procs.values() if m.alive and is_primary(m)]
    return found[0] if len(found) == 1 else None


def new_primary(cluster: LocalCluster, old: MemberProc, timeout: float,
                what: str) -> MemberProc:
    """Wait until exactly one member other than ``old`` is primary; return it."""

    def found() -> MemberProc | None:
        p = primary_of(cluster)
        return p if p is not None and p is not old else None

    return wait_until(found, timeout, what)


def psql(m: MemberProc, sql: str, timeout: float = 10.0) -> str:
    """Run SQL as the superuser over the member's unix socket; return the unaligned output."""
    out = subprocess.run(
        [str(PG_BIN / "psql"), "-h", str(m.data_dir.parent), "-p", str(m.pg_port),
         "-U", "postgres", "-d", "postgres", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"psql on {m.name} failed: {out.stderr.strip()}")
    return out.stdout.strip()


def exit_of(cluster: LocalCluster, name: str, timeout: float = 120.0) -> tuple[int, str]:
    """Start member ``name``'s agent and wait for it to exit: (exit code, its log). The logs
    are printed when it does not exit in time."""
    m = cluster.start(name)
    assert m.proc is not None
    try:
        code = m.proc.wait(timeout=timeout)
    except Exception:
        dump_logs(cluster)
        raise
    return code, m.log_path.read_text()


def edit(m: MemberProc, change: dict[str, Any]) -> None:
    """Set keys of member ``m``'s YAML (``{"postgresql.parameters.x": 1, ...}``: dotted paths,
    missing sections created)."""
    cfg = yaml.safe_load(m.config_path.read_text())
    for path, value in change.items():
        node = cfg
        *parents, last = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    m.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def new_cluster(base: Path, members: int = 3, dcs_section: dict[str, Any] | None = None,
                scope: str = "demo", **dynamic: Any) -> LocalCluster:
    """A LocalCluster (named ``scope``) on free ports whose agents run this checkout's code,
    on its own etcd or on the DCS named by ``dcs_section`` (e.g. a test server's
    ``config_section()``, or another cluster's etcd)."""
    if dcs_section is None and shutil.which("etcd") is None:
        raise RuntimeError("etcd is not installed (scripts/setup installs it)")
    dyn = {"ttl": 5, "loop_wait": 1, "retry_timeout": 1, **dynamic}
    pythonpath = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
    return LocalCluster(base, scope=scope, members=members, dynamic=dyn, first_pg_port=None,
                        first_api_port=None, etcd_port=None, dcs_section=dcs_section,
                        env={"PYTHONPATH": pythonpath}, bin_dir=str(PG_BIN))


@contextlib.contextmanager
def running_cluster(base: Path, request: pytest.FixtureRequest, members: int = 3,
                    **dynamic: Any) -> Iterator[LocalCluster]:
    """A started :func:`new_cluster` for a fixture to yield; every process is stopped on exit
    and the logs are printed when the test failed (``rep_call``, see tests/conftest.py)."""
    c = new_cluster(base, members=members, **dynamic)
    with c:
        c.start_all(stagger=0.3)
        yield c
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.failed:
            dump_logs(c)


def wait_healthy(cluster: LocalCluster, timeout: float = 120.0) -> MemberProc:
    """Wait for one primary and every other live member a streaming replica; return it."""

    def check() -> MemberProc | None:
        leader = primary_of(cluster)
        if leader is None:
            return None
        for m in cluster.procs.values():
            if m is leader or not m.alive:
                continue
            st = status(m)
            if st.get("role") != "replica" or st.get("replication_state") != "streaming":
                return None
        return leader

    try:
        leader = wait_until(check, timeout, "a primary and streaming replicas")
    except Timeout:
        dump_logs(cluster)
        raise
    _settle_positions(cluster, leader)
    return leader


def _position(body: dict[str, Any], *keys: str) -> int:
    xlog = body.get("xlog") or {}
    return max((v for k in keys if isinstance(v := xlog.get(k), int)), default=0)


def _settle_positions(cluster: LocalCluster, leader: MemberProc, within: int = 1 << 20,
                      limit: float = 10.0) -> None:
    """Best effort, at most ``limit`` s: wait until every live replica's published position is
    within ``within`` bytes of the leader's. Statuses are published once a cycle, so right
    after a clone (whose base backup ends with a WAL segment switch) a replica may still show a
    position a segment behind, and a switchover asked at that moment is refused for lag."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            target = _position(status(leader), "location") - within
            if all(_position(status(m), "received_location", "replayed_location") >= target
                   for m in cluster.procs.values() if m is not leader and m.alive):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)


def dump_logs(cluster: LocalCluster, tail: int = 60) -> None:
    for name, text in cluster.iter_logs():
        lines = text.splitlines()[-tail:]
        print(f"----- {name} (last {len(lines)} lines) -----")
        print("\n".join(lines))


@contextlib.contextmanager
def running_with_probe(c: LocalCluster, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """Start every member of ``c`` (already entered), wait until it is healthy, and sample which
    members accept writes for as long as the block runs. Afterwards: the members' logs when
    the test failed, and an assertion that the probe ran and never saw two writable members."""
    from tests.support.writer import WritableProbe  # writer imports nothing from here

    c.start_all(stagger=0.3)
    wait_healthy(c)
    probe = WritableProbe(list(c.procs.values()))
    probe.run_in_thread()
    try:
        yield c
    finally:
        probe.stop.set()
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.failed:
            dump_logs(c)
    assert probe.samples > 0
    assert probe.overlaps == [], f"two writable primaries: {probe.overlaps[:5]}"
