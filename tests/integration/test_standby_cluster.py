"""A standby cluster in front of a primary cluster: two DCS scopes on one etcd, real agents and
PostgreSQL 15 (ttl 5 s, loop_wait 1 s).

The standby cluster ``dr`` reaches the primary cluster ``demo`` through a TCP link standing in
for the load balancer (or virtual IP) operators put in front of a remote primary: the test
points it at the primary cluster's current primary, as HAProxy's ``/primary`` check would.

Walked through in order: the standby cluster bootstraps by cloning the remote, its lock holder
is a standby leader (``GET /patroni`` role, ``/standby-leader``, ``pgha list``), the other
member follows it; the primary cluster's switchover is followed; a switchover and a node death
inside the standby cluster each give a new standby leader (never a primary);
``promote-cluster`` makes it a primary; ``demote-cluster`` makes it a standby leader of the
remote again (rewound, not re-cloned). No timing is asserted. (The member that followed the
promoted leader is left on that leader's newer timeline: re-pointing it is not part of this
test.)
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.chaos.links import Link, LinkHub
from tests.support.cluster import (
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


def pgha(m: MemberProc, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgha.cli.main", "-c", str(m.config_path),
                           *args], capture_output=True, text=True, timeout=180, check=False,
                          env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})


def role_of(m: MemberProc) -> str | None:
    try:
        return str(status(m).get("role"))
    except (OSError, AssertionError):
        return None


def standby_leader_of(c: LocalCluster) -> MemberProc | None:
    found = [m for m in c.procs.values() if m.alive and role_of(m) == "standby_leader"]
    return found[0] if len(found) == 1 else None


def has_mark(m: MemberProc, value: int) -> bool:
    return psql(m, f"SELECT count(*) FROM marks WHERE v = {value}") == "1"


def marked_everywhere(c: LocalCluster, value: int) -> None:
    for m in c.procs.values():
        if m.alive:
            wait_until(lambda m=m: has_mark(m, value), 90, f"mark {value} on {c.scope}/{m.name}")


@pytest.fixture
def clusters(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[
        tuple[LocalCluster, LocalCluster, Link]]:
    hub = LinkHub()
    primary = new_cluster(tmp_path / "primary", members=2)
    try:
        with primary:
            primary.start_all(stagger=0.3)
            leader = wait_healthy(primary)
            psql(leader, "CREATE TABLE marks (v int)")
            link = hub.link("remote", ("127.0.0.1", leader.pg_port))
            assert primary.etcd is not None
            standby = new_cluster(
                tmp_path / "standby", members=2, scope="dr",
                dcs_section={"etcd3": {"hosts": [primary.etcd.endpoint]}},
                standby_cluster={"host": "127.0.0.2", "port": link.port},
                postgresql={"use_pg_rewind": True})
            with standby:
                standby.start_all(stagger=0.5)
                yield primary, standby, link
                rep = getattr(request.node, "rep_call", None)
                if rep is None or rep.failed:
                    dump_logs(primary)
                    dump_logs(standby)
    finally:
        hub.close()


def test_standby_cluster_follows_fails_over_promotes_and_demotes(
        clusters: tuple[LocalCluster, LocalCluster, Link]) -> None:
    primary, standby, link = clusters
    # 1. bootstrapped from the remote; a standby leader and a replica following it
    sl = wait_until(lambda: standby_leader_of(standby), 120, "a standby leader")
    other = next(m for m in standby.procs.values() if m is not sl)
    wait_until(lambda: status(other).get("replication_state") == "streaming", 90,
               "the other member streaming from the standby leader")
    assert psql(sl, "SELECT pg_is_in_recovery()") == "t"
    assert http_get(f"{sl.api}/standby-leader")[0] == 200
    assert http_get(f"{sl.api}/primary")[0] == 503
    assert "Standby Leader" in pgha(sl, "list").stdout
    psql(primary_of(primary) or pytest.fail("no primary"), "INSERT INTO marks VALUES (1)")
    marked_everywhere(standby, 1)

    # 2. the primary cluster switches over; the load balancer follows; so does the standby
    old = primary_of(primary)
    assert old is not None
    candidate = next(m for m in primary.procs.values() if m is not old)
    code, text = call(old, "POST", "/switchover", {"leader": old.name,
                                                    "candidate": candidate.name})
    assert code == 200, text
    new = wait_until(lambda: (p := primary_of(primary)) is candidate and p, 90, "switchover")
    link.target = ("127.0.0.1", new.pg_port)
    psql(new, "INSERT INTO marks VALUES (2)")
    marked_everywhere(standby, 2)

    # 3. a switchover inside the standby cluster: the lock moves, nobody promotes
    out = pgha(sl, "switchover", "--candidate", other.name, "--force")
    assert out.returncode == 0, out.stdout + out.stderr
    wait_until(lambda: standby_leader_of(standby) is other, 90, f"{other.name} standby leader")
    assert psql(other, "SELECT pg_is_in_recovery()") == "t"
    psql(new, "INSERT INTO marks VALUES (3)")
    marked_everywhere(standby, 3)

    # 4. node death of the standby leader: the other member takes over as standby leader
    standby.kill_node(other.name)
    wait_until(lambda: standby_leader_of(standby) is sl, 90, f"{sl.name} standby leader")
    assert psql(sl, "SELECT pg_is_in_recovery()") == "t"
    psql(new, "INSERT INTO marks VALUES (4)")
    wait_until(lambda: has_mark(sl, 4), 90, "mark 4 through the new standby leader")
    standby.start(other.name)

    # 5. promote-cluster: the standby leader promotes; the primary cluster is untouched
    out = pgha(sl, "promote-cluster", "--force")
    assert out.returncode == 0, out.stdout + out.stderr
    assert psql(sl, "SELECT pg_is_in_recovery()") == "f"
    psql(sl, "INSERT INTO marks VALUES (100)")
    assert primary_of(primary) is new

    # 6. demote-cluster: back to a standby cluster of the remote, rewound rather than cloned
    out = pgha(sl, "demote-cluster", "--host", "127.0.0.2", "--port", str(link.port),
               "--force")
    assert out.returncode == 0, out.stdout + out.stderr
    psql(new, "INSERT INTO marks VALUES (5)")
    leader = wait_until(lambda: standby_leader_of(standby), 90, "a standby leader again")
    wait_until(lambda: has_mark(leader, 5), 90, "mark 5 on the standby leader")
    assert psql(leader, "SELECT count(*) FROM marks WHERE v = 100") == "0"  # rewound
    assert "Standby Leader" in pgha(leader, "list").stdout
