"""``postgresql.pre_promote`` and ``postgresql.before_stop`` on a real three-member cluster
(PostgreSQL 15 + etcd, ttl 5 s, loop_wait 1 s). Each member's hooks are scripts that append a
line to a marker file; a member's pre_promote exits with the code in its ``.rc`` file (0 when
there is none), its before_stop notes whether the postmaster still ran and exits 3 (ignored).

A replica whose pre_promote exits 1 is asked to take over (switchover), and later is left to
race after a clean stop of the leader: it never promotes, another member leads. A switchover
to a member whose pre_promote exits 0 promotes it; a clean stop runs before_stop while
PostgreSQL still runs. A probe checks every 20 ms that two members are never writable at
once. No timing is asserted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.cluster import (
    call,
    edit,
    new_cluster,
    primary_of,
    running_with_probe,
    wait_healthy,
    wait_until,
)

from pgha.cli.localcluster import LocalCluster, MemberProc

pytestmark = pytest.mark.integration


def marker(hooks: Path, m: MemberProc, hook: str) -> list[str]:
    path = hooks / f"{m.name}.{hook}"
    return path.read_text().split() if path.exists() else []


def write_hooks(hooks: Path, m: MemberProc) -> None:
    pre = hooks / f"{m.name}-pre_promote.sh"
    pre.write_text(f"#!/bin/sh\necho ran >> {hooks}/{m.name}.pre_promote\n"
                   f"exit \"$(cat {hooks}/{m.name}.rc 2>/dev/null || echo 0)\"\n")
    stop = hooks / f"{m.name}-before_stop.sh"
    stop.write_text(f"#!/bin/sh\nif [ -f {m.data_dir}/postmaster.pid ]; then echo running; "
                    f"else echo stopped; fi >> {hooks}/{m.name}.before_stop\nexit 3\n")
    for script in (pre, stop):
        script.chmod(0o755)
    edit(m, {"postgresql.pre_promote": str(pre), "postgresql.before_stop": str(stop)})


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    c = new_cluster(tmp_path / "c")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    with c:
        for m in c.procs.values():
            write_hooks(hooks, m)
        with running_with_probe(c, request):
            yield c


def other_primary(c: LocalCluster, *not_these: MemberProc) -> MemberProc:
    def found() -> MemberProc | None:
        p = primary_of(c)
        return p if p is not None and p not in not_these else None

    return wait_until(found, 90, f"a primary other than {[m.name for m in not_these]}")


def promoted_members(c: LocalCluster, leader: MemberProc) -> list[str]:
    code, history = call(leader, "GET", "/history")
    assert code == 200
    return [entry[4] for entry in history]


def test_pre_promote_fences_and_before_stop_runs(cluster: LocalCluster,
                                                 tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    leader = wait_healthy(cluster)
    fenced, ok_member = sorted((m for m in cluster.procs.values() if m is not leader),
                               key=lambda m: m.name)
    (hooks / f"{fenced.name}.rc").write_text("1\n")

    # 1. a switchover to the member whose pre_promote fails: no promotion, the request is
    # withdrawn, and a member that may take over leads
    code, text = call(leader, "POST", "/switchover", {"leader": leader.name,
                                                      "candidate": fenced.name})
    assert code == 503, text
    new = other_primary(cluster, fenced)
    wait_healthy(cluster)
    assert marker(hooks, fenced, "pre_promote"), "the pre_promote hook did not run"
    log = fenced.log_path.read_text()
    assert "postgresql.pre_promote exited with status 1: not promoting" in log
    assert "promoting PostgreSQL" not in log
    assert fenced.name not in promoted_members(cluster, new)
    # the former leader's before_stop ran before its PostgreSQL stopped for the hand-over;
    # its exit status 3 changed nothing
    assert marker(hooks, leader, "before_stop")[:1] == ["running"]

    # 2. a switchover to a member whose pre_promote exits 0 (whichever of the two others
    # does not lead now) promotes it
    target = ok_member if new is leader else leader
    runs = len(marker(hooks, target, "pre_promote"))
    code, text = call(new, "POST", "/switchover", {"leader": new.name,
                                                   "candidate": target.name})
    assert code == 200, text
    assert wait_healthy(cluster) is target
    assert len(marker(hooks, target, "pre_promote")) == runs + 1
    assert promoted_members(cluster, target)[-1] == target.name

    # 3. a clean stop of the leader: its before_stop runs while PostgreSQL still runs; the
    # fenced member may race but never promotes: the remaining member takes over
    before = len(marker(hooks, target, "before_stop"))
    cluster.stop(target.name)
    stops = marker(hooks, target, "before_stop")
    assert len(stops) == before + 1 and stops[-1] == "running"
    third = other_primary(cluster, fenced, target)
    assert "promoting PostgreSQL" not in fenced.log_path.read_text()
    assert fenced.name not in promoted_members(cluster, third)
