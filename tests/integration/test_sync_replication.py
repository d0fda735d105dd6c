"""Synchronous replication end to end: real agents, PostgreSQL 15 and etcd (ttl 5 s,
loop_wait 1 s).

Every scenario asserts on what an operator can observe: ``synchronous_standby_names`` and
``pg_stat_replication.sync_state`` on the leader, the DCS ``sync`` key (read from etcd), the
roles of ``GET /cluster`` and ``pgha list``, the health checks (``/sync``, ``/async``,
``/quorum``, ``/read-only-sync``, ``/read-only-quorum``), ``patroni_sync_standby`` /
``patroni_quorum_standby`` of ``/metrics`` and who becomes leader. Whether a commit waited for
a standby is read from PostgreSQL itself (a backend waiting on ``SyncRep``, or the warning a
cancelled wait leaves), never from a clock; waits only bound how long a test may take.

Three clusters: a three-member one walked through phases in order (enable, two synchronous
standbys, quorum, switchover, sync standby stopped, its PostgreSQL restarted, stuck sync
standby, failover, disable; each phase first sets synchronous mode on with one synchronous
standby, so it also runs alone), a two-member strict one, and a four-member quorum one (node
count changes, ``nosync``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.cluster import (
    PG_BIN,
    SRC,
    call,
    dump_logs,
    http_get,
    new_cluster,
    primary_of,
    psql,
    status,
    wait_healthy,
    wait_until,
)

from pgha.cli.localcluster import LocalCluster, MemberProc

pytestmark = pytest.mark.integration

SYNC_WARNING = "canceling wait for synchronous replication"


# --------------------------------------------------------------------------- helpers
def patch_config(m: MemberProc, body: dict[str, Any]) -> None:
    code, text = call(m, "PATCH", "/config", body)
    assert code == 200, text


def sync_key(c: LocalCluster) -> dict[str, Any] | None:
    """The DCS ``sync`` key as stored in etcd (through etcd's JSON gateway), None if absent."""
    assert c.etcd is not None
    key = base64.b64encode(f"/service/{c.scope}/sync".encode()).decode()
    req = urllib.request.Request(f"http://{c.etcd.endpoint}/v3/kv/range",
                                 data=json.dumps({"key": key}).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        kvs = json.loads(resp.read()).get("kvs") or []
    if not kvs:
        return None
    value: dict[str, Any] = json.loads(base64.b64decode(kvs[0]["value"]))
    return value


def voters(key: dict[str, Any] | None) -> set[str]:
    if key is None:
        return set()
    raw = key.get("sync_standby") or ""
    names = raw.split(",") if isinstance(raw, str) else list(raw)
    return {n.strip() for n in names if n.strip()}


def ssn(m: MemberProc) -> str:
    return psql(m, "SHOW synchronous_standby_names")


def sync_states(leader: MemberProc) -> dict[str, str]:
    rows = psql(leader, "SELECT application_name, state, sync_state FROM pg_stat_replication")
    out = {}
    for line in rows.splitlines():
        name, state, sync_state = line.split("|")
        out[name] = f"{state}/{sync_state}"
    return out


def code_of(m: MemberProc, path: str) -> int:
    return http_get(f"{m.api}{path}", timeout=5)[0]


def codes(m: MemberProc, *paths: str) -> dict[str, int]:
    return {p: code_of(m, p) for p in paths}


def metric(m: MemberProc, name: str) -> float:
    with urllib.request.urlopen(f"{m.api}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} missing from /metrics of {m.name}")


def cluster_roles(m: MemberProc) -> dict[str, str]:
    code, body = http_get(f"{m.api}/cluster", timeout=5)
    assert code == 200
    return {item["name"]: item["role"] for item in body["members"]}


def cli(c: LocalCluster, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    config = next(iter(c.procs.values())).config_path
    return subprocess.run(
        [sys.executable, "-m", "pgha.cli.main", "-c", str(config), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "HOME": str(config.parent)})


def list_roles(c: LocalCluster) -> dict[str, str]:
    out = cli(c, "list", "-f", "json")
    assert out.returncode == 0, out.stderr
    return {row["Member"]: row["Role"] for row in json.loads(out.stdout)}


def sql(m: MemberProc, text: str, options: str = "", timeout: float = 60.0
        ) -> subprocess.CompletedProcess[str]:
    """``text`` through psql with ``PGOPTIONS`` (e.g. ``-c synchronous_commit=local``); the
    completed process (the caller judges returncode and stderr)."""
    return subprocess.run(_psql_args(m, text), capture_output=True, text=True, timeout=timeout,
                          check=False, env={**os.environ, "PGOPTIONS": options})


def _psql_args(m: MemberProc, text: str) -> list[str]:
    return [str(PG_BIN / "psql"), "-h", str(m.data_dir.parent), "-p", str(m.pg_port),
            "-U", "postgres", "-d", "postgres", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", text]


def commit_completes(m: MemberProc, text: str, bound: float = 30.0) -> None:
    """``text`` commits on ``m`` within ``bound`` seconds, and its commit did not give up
    waiting for a synchronous standby (PostgreSQL's warning: committed only locally).
    ``statement_timeout`` cannot bound it: PostgreSQL disarms it before the commit waits, so
    the client gives up, cancels the waiting backends and the test fails."""
    proc = subprocess.Popen(_psql_args(m, text), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=bound)
    except subprocess.TimeoutExpired:
        cancel_sync_waiters(m)
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"commit on {m.name} still waiting after {bound}s: {err}") from None
    assert proc.returncode == 0, err
    assert SYNC_WARNING not in err, err


def cancel_sync_waiters(m: MemberProc) -> None:
    psql(m, "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")


def sync_waiters(m: MemberProc) -> int:
    return int(psql(m, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"))


def others(c: LocalCluster, *names: str) -> list[MemberProc]:
    return [m for n, m in c.procs.items() if n not in names and m.alive]


def converged(c: LocalCluster, leader: MemberProc, names: str, key_voters: set[str],
              quorum: int = 0) -> bool:
    key = sync_key(c)
    return (ssn(leader) == names and key is not None and key.get("leader") == leader.name
            and voters(key) == key_voters and int(key.get("quorum") or 0) == quorum)


def wait_converged(c: LocalCluster, leader: MemberProc, names: str, key_voters: set[str],
                   quorum: int = 0, timeout: float = 60) -> None:
    wait_until(lambda: converged(c, leader, names, key_voters, quorum), timeout,
               f"synchronous_standby_names {names!r} and sync key {sorted(key_voters)} "
               f"quorum {quorum} (now {ssn(leader)!r}, {sync_key(c)})")


def one_sync_standby(c: LocalCluster, leader: MemberProc, timeout: float = 60) -> str:
    """Wait until the leader runs ``FIRST 1 (x)`` and the key names x alone; return x."""
    def check() -> str | None:
        match = re.fullmatch(r"FIRST 1 \((pg\d)\)", ssn(leader))
        key = sync_key(c)
        if match and key and key.get("leader") == leader.name \
                and voters(key) == {match.group(1)}:
            return match.group(1)
        return None
    return wait_until(check, timeout, f"one synchronous standby of {leader.name} "
                                      f"(now {ssn(leader)!r}, {sync_key(c)})")


def set_tags(m: MemberProc, **tags: Any) -> None:
    cfg = yaml.safe_load(m.config_path.read_text())
    cfg["tags"] = {**cfg.get("tags", {}), **tags}
    m.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))


@contextlib.contextmanager
def logs_on_failure(c: LocalCluster, request: pytest.FixtureRequest) -> Iterator[None]:
    """For a fixture's teardown: the agents' logs when the test failed."""
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        dump_logs(c)


@pytest.fixture
def make_cluster(tmp_path: Path, request: pytest.FixtureRequest
                 ) -> Iterator[Callable[..., LocalCluster]]:
    """``make_cluster(members, **dynamic)``: a started cluster, stopped after the test."""
    with contextlib.ExitStack() as stack:
        def make(members: int, **dynamic: Any) -> LocalCluster:
            c = new_cluster(tmp_path / "c", members=members, **dynamic)
            stack.enter_context(c)
            stack.enter_context(logs_on_failure(c, request))
            c.start_all(stagger=0.3)
            return c
        yield make


# --------------------------------------------------------------------------- three members
@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = new_cluster(tmp_path_factory.mktemp("sync3") / "c")
    with c:
        c.start_all(stagger=0.3)
        psql(wait_healthy(c), "CREATE TABLE t (id serial primary key)")
        yield c


def write(m: MemberProc) -> None:
    commit_completes(m, "INSERT INTO t DEFAULT VALUES")


def rows(m: MemberProc) -> int:
    return int(psql(m, "SELECT count(*) FROM t"))


def sync_on(c: LocalCluster) -> tuple[MemberProc, str, str]:
    """Synchronous mode on with one synchronous standby: (leader, sync, async), whatever
    an earlier phase left behind."""
    leader = wait_healthy(c)
    patch_config(leader, {"synchronous_mode": True, "synchronous_node_count": None,
                          "maximum_lag_on_syncnode": None})
    sync = one_sync_standby(c, leader)
    (asyn,) = (m.name for m in others(c, leader.name, sync))
    return leader, sync, asyn


@pytest.fixture
def c3(three: LocalCluster, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    with logs_on_failure(three, request):
        yield three


def test_enable_on_a_running_cluster(c3: LocalCluster) -> None:
    leader = wait_healthy(c3)
    assert ssn(leader) == "" and sync_key(c3) is None
    patch_config(leader, {"synchronous_mode": True})
    sync = one_sync_standby(c3, leader)
    (asyn,) = (m.name for m in others(c3, leader.name, sync))
    s, a = c3.procs[sync], c3.procs[asyn]
    wait_until(lambda: sync_states(leader) == {sync: "streaming/sync", asyn: "streaming/async"},
               30, "pg_stat_replication sync states")
    # each agent judges from its own view of the DCS: wait for it to see the key
    wait_until(lambda: codes(s, "/sync", "/async", "/read-only-sync", "/quorum") ==
               {"/sync": 200, "/async": 503, "/read-only-sync": 200, "/quorum": 503}, 30,
               "checks on the sync standby")
    wait_until(lambda: codes(a, "/sync", "/async", "/read-only-sync", "/quorum") == {
        "/sync": 503, "/async": 200, "/read-only-sync": 503, "/quorum": 503}, 30,
        "checks on the async standby")
    wait_until(lambda: codes(leader, "/sync", "/async", "/read-only-sync") == {
        "/sync": 503, "/async": 503, "/read-only-sync": 200}, 30, "checks on the leader")
    assert metric(s, "patroni_sync_standby") == 1 and metric(a, "patroni_sync_standby") == 0
    assert metric(s, "patroni_quorum_standby") == 0
    wait_until(lambda: cluster_roles(a) == {leader.name: "leader", sync: "sync_standby",
                                            asyn: "replica"}, 30, "roles in GET /cluster")
    assert list_roles(c3) == {leader.name: "Leader", sync: "Sync Standby", asyn: "Replica"}
    assert status(s).get("sync_standby") is True
    write(leader)
    wait_until(lambda: rows(s) == rows(leader) == 1, 30, "the row on the sync standby")


def test_two_synchronous_standbys(c3: LocalCluster) -> None:
    leader, _, _ = sync_on(c3)
    reps = sorted(m.name for m in others(c3, leader.name))
    patch_config(leader, {"synchronous_node_count": 2})
    wait_converged(c3, leader, f"FIRST 2 ({','.join(reps)})", set(reps))
    wait_until(lambda: sync_states(leader) == {n: "streaming/sync" for n in reps}, 30,
               "both standbys sync in pg_stat_replication")
    for n in reps:
        wait_until(lambda n=n: code_of(c3.procs[n], "/sync") == 200, 30, f"/sync on {n}")
        assert code_of(c3.procs[n], "/async") == 503
    assert list_roles(c3) == {leader.name: "Leader", **{n: "Sync Standby" for n in reps}}
    write(leader)
    patch_config(leader, {"synchronous_node_count": None})
    one_sync_standby(c3, leader)


def test_quorum_mode_with_three_members(c3: LocalCluster) -> None:
    leader, _, _ = sync_on(c3)
    reps = sorted(m.name for m in others(c3, leader.name))
    patch_config(leader, {"synchronous_mode": "quorum"})
    wait_converged(c3, leader, f"ANY 1 ({','.join(reps)})", set(reps), quorum=1)
    wait_until(lambda: sync_states(leader) == {n: "streaming/quorum" for n in reps}, 30,
               "both standbys quorum in pg_stat_replication")
    for n in reps:
        m = c3.procs[n]
        wait_until(lambda m=m: codes(m, "/quorum", "/read-only-quorum", "/sync", "/async") == {
            "/quorum": 200, "/read-only-quorum": 200, "/sync": 503, "/async": 503}, 30,
            f"quorum checks on {n}")
        assert metric(m, "patroni_quorum_standby") == 1
        assert metric(m, "patroni_sync_standby") == 0
    assert codes(leader, "/read-only-quorum", "/quorum") == {"/read-only-quorum": 200,
                                                             "/quorum": 503}
    wait_until(lambda: cluster_roles(leader) == {leader.name: "leader",
                                                 **{n: "quorum_standby" for n in reps}}, 30,
               "quorum roles in GET /cluster")
    assert list_roles(c3) == {leader.name: "Leader", **{n: "Quorum Standby" for n in reps}}
    write(leader)
    patch_config(leader, {"synchronous_mode": True})
    one_sync_standby(c3, leader)


def test_switchover_only_to_the_sync_standby(c3: LocalCluster) -> None:
    leader, sync, asyn = sync_on(c3)
    write(leader)
    before = rows(leader)
    code, text = call(leader, "POST", "/switchover", {"leader": leader.name,
                                                      "candidate": asyn})
    assert code == 412, text
    assert "candidate name does not match with sync_standby" in str(text)
    assert primary_of(c3) is leader
    code, text = call(leader, "POST", "/switchover", {"leader": leader.name,
                                                      "candidate": sync})
    assert code == 200, text
    new = wait_healthy(c3)
    assert new.name == sync
    one_sync_standby(c3, new)
    assert rows(new) == before
    write(new)


def test_stopped_sync_standby_is_replaced_non_strict(c3: LocalCluster) -> None:
    leader, sync, other = sync_on(c3)
    c3.stop(sync)  # clean stop of its agent and PostgreSQL
    # writes keep working: this commit does not hang on the stopped standby
    write(leader)
    wait_converged(c3, leader, f"FIRST 1 ({other})", {other})
    write(leader)
    c3.start(sync)
    wait_healthy(c3)
    # back as a streaming standby; exactly one synchronous standby, whichever it is
    back = one_sync_standby(c3, leader)
    assert back in (sync, other)
    wait_until(lambda: rows(c3.procs[sync]) == rows(leader), 30,
               "rows on the restarted standby")


def test_sync_standby_postgres_restart_keeps_writes_going(c3: LocalCluster) -> None:
    leader, sync, _ = sync_on(c3)
    m = c3.procs[sync]
    before = status(m)["postmaster_start_time"]
    done = threading.Event()
    outcomes: list[str] = []

    def writer() -> None:
        while not done.is_set():
            try:
                write(leader)
                outcomes.append("ok")
            except Exception as exc:  # recorded, judged after the restart
                outcomes.append(repr(exc))

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        out = cli(c3, "restart", sync, "--force")
        assert out.returncode == 0, out.stdout + out.stderr
        wait_until(lambda: status(m).get("postmaster_start_time") not in (None, before)
                   and status(m).get("replication_state") == "streaming", 60,
                   "the sync standby's PostgreSQL restarted and streaming")
        one_sync_standby(c3, leader)
    finally:
        done.set()
        thread.join(60)
    assert outcomes and all(o == "ok" for o in outcomes), [o for o in outcomes if o != "ok"]
    write(leader)


def test_stuck_sync_standby_is_replaced(c3: LocalCluster) -> None:
    leader, sync, other = sync_on(c3)
    stuck = c3.procs[sync]
    patch_config(leader, {"maximum_lag_on_syncnode": 1048576})
    pid = int(psql(stuck, "SELECT pid FROM pg_stat_wal_receiver"))
    os.kill(pid, signal.SIGSTOP)  # connected, but it neither receives nor flushes any more
    try:
        # WAL well past the lag limit; these commits do not wait for any standby
        out = sql(leader, "CREATE TABLE bulk AS SELECT g, repeat('x', 200) AS pad "
                          "FROM generate_series(1, 40000) g", "-c synchronous_commit=local")
        assert out.returncode == 0, out.stderr
        wait_converged(c3, leader, f"FIRST 1 ({other})", {other})
        # it was replaced for its lag, not for a lost connection
        assert sync_states(leader)[sync].startswith("streaming/")
        write(leader)
    finally:
        os.kill(pid, signal.SIGCONT)
    patch_config(leader, {"maximum_lag_on_syncnode": None})
    wait_until(lambda: rows(stuck) == rows(leader), 90, "the stuck standby catching up")
    wait_healthy(c3)


def test_failover_goes_to_the_sync_standby(c3: LocalCluster) -> None:
    leader, sync, asyn = sync_on(c3)
    commit_completes(leader, "INSERT INTO t SELECT nextval('t_id_seq') "
                             "FROM generate_series(1, 100)")
    committed = rows(leader)
    seen_primary: set[str] = set()

    def new_primary() -> MemberProc | None:
        for m in others(c3, leader.name):
            if code_of(m, "/primary") == 200:
                seen_primary.add(m.name)
        return primary_of(c3)

    c3.kill_node(leader.name)
    new = wait_until(new_primary, 90, "a new primary")
    assert new.name == sync and seen_primary == {sync}
    code, history = call(new, "GET", "/history")
    assert code == 200 and history[-1][4] == sync
    assert rows(new) == committed
    # the async standby follows and becomes the new leader's synchronous standby
    wait_converged(c3, new, f"FIRST 1 ({asyn})", {asyn})
    wait_until(lambda: code_of(c3.procs[asyn], "/sync") == 200, 30,
               "/sync on the new sync standby")
    write(new)
    # nothing set around the promotion asks for a restart (synchronous_standby_names is
    # reloaded; recovery_target_timeline stays in the primary's configuration)
    assert not status(new).get("pending_restart_reason"), status(new)


def test_disable_clears_key_and_names(c3: LocalCluster) -> None:
    leader = wait_until(lambda: primary_of(c3), 60, "a primary")
    patch_config(leader, {"synchronous_mode": False})
    wait_until(lambda: sync_key(c3) is None and ssn(leader) == "", 60,
               "sync key deleted and synchronous_standby_names ''")
    wait_until(lambda: all(r in ("leader", "replica") for r in cluster_roles(leader).values()),
               30, "no synchronous roles left")
    for m in others(c3, leader.name):
        wait_until(lambda m=m: codes(m, "/sync", "/async") == {"/sync": 503, "/async": 200}
                   and metric(m, "patroni_sync_standby") == 0, 30, f"{m.name} async")
    wait_until(lambda: sync_states(leader) and all(
        s.endswith("/async") for s in sync_states(leader).values()), 30,
        "every standby async in pg_stat_replication")
    write(leader)


# --------------------------------------------------------------------------- strict mode
def test_strict_mode_blocks_commits_without_standby(
        make_cluster: Callable[..., LocalCluster]) -> None:
    c = make_cluster(2, synchronous_mode=True, synchronous_mode_strict=True)
    leader = wait_healthy(c)
    (replica,) = others(c, leader.name)
    wait_converged(c, leader, f"FIRST 1 ({replica.name})", {replica.name})
    commit_completes(leader, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
    c.stop(replica.name)
    # the names stay: a commit waits for the standby, it is not acknowledged unprotected
    pending = subprocess.Popen(_psql_args(leader, "INSERT INTO t VALUES (2)"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: sync_waiters(leader) >= 1, 30, "a commit waiting on SyncRep")
        assert pending.poll() is None
        assert ssn(leader) != ""
        # a client that gives up (cancels) is told its commit is not replicated
        giving_up = subprocess.Popen(_psql_args(leader, "INSERT INTO t VALUES (3)"),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        wait_until(lambda: sync_waiters(leader) >= 2, 30, "a second commit waiting")
        psql(leader, "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                     "WHERE wait_event = 'SyncRep' AND query LIKE '%VALUES (3)%'")
        _, err = giving_up.communicate(timeout=30)
        assert SYNC_WARNING in err, err
        assert ssn(leader) != ""
        assert pending.poll() is None
        c.start(replica.name)
        _, err = pending.communicate(timeout=120)
        assert pending.returncode == 0, err
        assert SYNC_WARNING not in err
    finally:
        if pending.poll() is None:
            pending.kill()
            pending.wait()
    wait_healthy(c)
    wait_converged(c, leader, f"FIRST 1 ({replica.name})", {replica.name})
    write(leader)
    wait_until(lambda: rows(replica) == rows(leader) == 4, 30, "every row on the standby")


# --------------------------------------------------------------------------- quorum, four
def test_quorum_four_members_node_count_and_nosync(
        make_cluster: Callable[..., LocalCluster]) -> None:
    c = make_cluster(4, synchronous_mode="quorum")
    leader = wait_healthy(c)
    reps = sorted(m.name for m in others(c, leader.name))
    wait_converged(c, leader, f"ANY 1 ({','.join(reps)})", set(reps), quorum=2)
    patch_config(leader, {"synchronous_node_count": 2})
    wait_converged(c, leader, f"ANY 2 ({','.join(reps)})", set(reps), quorum=1)
    commit_completes(leader, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
    wait_until(lambda: sync_states(leader) == {n: "streaming/quorum" for n in reps}, 30,
               "three quorum standbys in pg_stat_replication")
    for n in reps:
        m = c.procs[n]
        wait_until(lambda m=m: code_of(m, "/quorum") == 200
                   and metric(m, "patroni_quorum_standby") == 1, 30, f"{n} a quorum standby")

    # nosync: never named, never a voter, an async replica
    nosync = c.procs[reps[-1]]
    voting = reps[:-1]
    set_tags(nosync, nosync=True)
    assert nosync.proc is not None
    nosync.proc.send_signal(signal.SIGHUP)
    wait_converged(c, leader, f"ANY 2 ({','.join(voting)})", set(voting), quorum=0)
    wait_until(lambda: codes(nosync, "/async", "/quorum", "/read-only-quorum") == {
        "/async": 200, "/quorum": 503, "/read-only-quorum": 503}, 30, "nosync checks")
    wait_until(lambda: sync_states(leader) == {**{n: "streaming/quorum" for n in voting},
                                               nosync.name: "streaming/async"}, 30,
               "the nosync member async in pg_stat_replication")
    assert metric(nosync, "patroni_quorum_standby") == 0
    wait_until(lambda: cluster_roles(leader)[nosync.name] == "replica", 30, "its role")
    assert list_roles(c)[nosync.name] == "Replica"
    patch_config(leader, {"synchronous_node_count": 1})
    wait_converged(c, leader, f"ANY 1 ({','.join(voting)})", set(voting), quorum=1)
    # mode on: the nosync member is not picked either
    patch_config(leader, {"synchronous_mode": True, "synchronous_node_count": 3})
    wait_converged(c, leader, f"FIRST 2 ({','.join(voting)})", set(voting))
    wait_until(lambda: sync_states(leader) == {**{n: "streaming/sync" for n in voting},
                                               nosync.name: "streaming/async"}, 30,
               "two sync standbys and the nosync member async")
    wait_until(lambda: code_of(nosync, "/async") == 200 and code_of(nosync, "/sync") == 503,
               30, "/async on the nosync member")
    assert list_roles(c) == {leader.name: "Leader", nosync.name: "Replica",
                             **{n: "Sync Standby" for n in voting}}
    write(leader)
