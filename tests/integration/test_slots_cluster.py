"""Replication slots end to end: real agents, PostgreSQL 15 with ``test_decoding`` and etcd
(ttl 5 s, loop_wait 1 s).

1. Permanent slots, added to a running cluster (``PATCH /config``, then the restart
   ``wal_level: logical`` needs): a consumer reading the permanent logical slot ``cdc`` keeps
   reading after a switchover and after a node-death failover, missing no change; the
   permanent physical slot exists on every member; an ignored slot survives both, an unknown
   one is dropped.
2. Topology: a cascading member (``replicatefrom``) clones and streams from its parent, which
   keeps its slot; an archive-only member (``nostream``) replays through ``restore_command``
   and has no slot anywhere; both follow a failover.

The consumer behaves like a streaming client: it remembers the last LSN it confirmed and,
on a new primary, moves the slot there first (``pg_replication_slot_advance``), as a
``START_REPLICATION ... LOGICAL <lsn>`` does. No timing is asserted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from tests.support.cluster import (
    call,
    dump_logs,
    new_cluster,
    primary_of,
    psql,
    running_cluster,
    status,
    wait_healthy,
    wait_until,
)

from pgha.cli.localcluster import LocalCluster, MemberProc

pytestmark = pytest.mark.integration

PERMANENT = {"test_physical": 0,  # (null would delete it in a merge patch)
             "cdc": {"type": "logical", "database": "postgres", "plugin": "test_decoding"}}
IGNORED = [{"name": "unmanaged_slot", "plugin": "test_decoding"}]


def slots_on(m: MemberProc) -> dict[str, tuple[str, str]]:
    """``{slot: (type, plugin)}`` on member ``m``."""
    rows = psql(m, "SELECT slot_name, slot_type, coalesce(plugin, '') "
                   "FROM pg_replication_slots WHERE NOT temporary ORDER BY 1")
    return {name: (kind, plugin) for name, kind, plugin in
            (line.split("|") for line in rows.splitlines() if line)}


class Consumer:
    """Reads ``cdc`` with the SQL interface and keeps what it confirmed: the ids inserted
    into ``t`` that it saw, and the LSN after the last change it consumed."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.confirmed = "0/0"

    def resume_on(self, m: MemberProc) -> None:
        """What a streaming client's start position does on a new primary: the slot moves to
        what we confirmed when it lags behind (never backwards)."""
        psql(m, "SELECT pg_replication_slot_advance('cdc', lsn) FROM (SELECT "
                f"'{self.confirmed}'::pg_lsn AS lsn) x, pg_replication_slots s "
                "WHERE s.slot_name = 'cdc' AND s.confirmed_flush_lsn < x.lsn")

    def read(self, m: MemberProc) -> list[int]:
        rows = psql(m, "SELECT data FROM pg_logical_slot_get_changes('cdc', NULL, NULL)")
        new = [int(found.group(1)) for line in rows.splitlines() if (found := re.search(
            r"table public\.t: INSERT: id\[integer\]:(\d+)", line))]
        self.confirmed = psql(m, "SELECT confirmed_flush_lsn FROM pg_replication_slots "
                                 "WHERE slot_name = 'cdc'")
        self.seen += new
        return new


def insert(m: MemberProc, first: int, last: int) -> None:
    psql(m, f"INSERT INTO t SELECT g FROM generate_series({first}, {last}) g")


def caught_up(cluster: LocalCluster, leader: MemberProc) -> None:
    """Every live replica replayed the leader's current WAL."""
    target = psql(leader, "SELECT pg_current_wal_lsn()")
    for m in cluster.procs.values():
        if m is leader or not m.alive:
            continue
        wait_until(lambda m=m: psql(m, f"SELECT pg_last_wal_replay_lsn() >= '{target}'")
                   == "t", 60, f"{m.name} replaying up to {target}")


def copies_in_sync(cluster: LocalCluster, leader: MemberProc) -> None:
    """Every live replica's copy of ``cdc`` reached the leader's confirmed position."""
    target = psql(leader, "SELECT confirmed_flush_lsn FROM pg_replication_slots "
                          "WHERE slot_name = 'cdc'")
    for m in cluster.procs.values():
        if m is leader or not m.alive:
            continue
        wait_until(lambda m=m: psql(m, "SELECT confirmed_flush_lsn >= "
                                       f"'{target}' FROM pg_replication_slots "
                                       "WHERE slot_name = 'cdc'") == "t",
                   60, f"{m.name}'s copy of cdc at {target}")


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path / "slots", request, ignore_slots=IGNORED) as c:
        yield c


def configure_permanent_slots(cluster: LocalCluster, leader: MemberProc) -> None:
    """As a Patroni user adds them to a running cluster: ``PATCH /config``; the logical slot
    needs ``wal_level: logical``, which pgha sets and reports as a pending restart; the
    operator restarts every member."""
    code, text = call(leader, "PATCH", "/config", {"slots": PERMANENT})
    assert code == 200, text
    for m in cluster.procs.values():
        wait_until(lambda m=m: status(m).get("pending_restart"), 60,
                   f"{m.name} pending a restart for wal_level")
        code, text = call(m, "POST", "/restart", {})
        assert code == 200, text
    for m in cluster.procs.values():  # (a replica restarts once more to load its copies)
        wait_until(lambda m=m: psql(m, "SHOW wal_level") == "logical", 60,
                   f"wal_level logical on {m.name}")


def test_permanent_logical_slot_survives_switchover_and_failover(cluster: LocalCluster) -> None:
    leader = wait_healthy(cluster)
    configure_permanent_slots(cluster, leader)
    psql(leader, "CREATE TABLE t (id int PRIMARY KEY)")
    psql(leader, "SELECT pg_create_logical_replication_slot('unmanaged_slot', 'test_decoding')")
    psql(leader, "SELECT pg_create_logical_replication_slot('dummy_slot', 'test_decoding')")
    wait_until(lambda: "dummy_slot" not in slots_on(leader), 30, "the unknown slot dropped")
    for m in cluster.procs.values():
        wait_until(lambda m=m: {"test_physical", "cdc"} <= slots_on(m).keys(), 90,
                   f"the permanent slots on {m.name}")
        assert slots_on(m)["cdc"] == ("logical", "test_decoding")
        assert slots_on(m)["test_physical"][0] == "physical"
        if m is not leader:
            assert psql(m, "SHOW hot_standby_feedback") == "on"
    assert "unmanaged_slot" in slots_on(leader)
    consumer = Consumer()
    insert(leader, 1, 100)
    assert consumer.read(leader) == list(range(1, 101))
    insert(leader, 101, 200)  # not consumed before the switchover
    caught_up(cluster, leader)
    copies_in_sync(cluster, leader)

    # 1. switchover
    candidate = next(m for m in cluster.procs.values() if m is not leader)
    code, text = call(leader, "POST", "/switchover", {"leader": leader.name,
                                                      "candidate": candidate.name})
    assert code == 200, text
    new = wait_until(lambda: (p := primary_of(cluster)) is candidate and p, 90,
                     f"{candidate.name} primary")
    consumer.resume_on(new)
    assert consumer.read(new) == list(range(101, 201))
    insert(new, 201, 300)
    assert consumer.read(new) == list(range(201, 301))
    insert(new, 301, 400)
    wait_healthy(cluster)
    assert "unmanaged_slot" in slots_on(leader)  # ignored: kept on the former primary

    # 2. node death of the new primary
    caught_up(cluster, new)
    copies_in_sync(cluster, new)
    cluster.kill_node(new.name)
    third = wait_until(lambda: (p := primary_of(cluster)) is not None and p is not new and p,
                       90, "a new primary after the node death")
    consumer.resume_on(third)
    assert consumer.read(third) == list(range(301, 401))
    assert consumer.seen == list(range(1, 401))  # nothing missing, nothing twice
    assert {"test_physical", "cdc"} <= slots_on(third).keys()
    # the old primary comes back as a replica and gets the copies again
    cluster.start(new.name)
    wait_until(lambda: {"test_physical", "cdc"} <= slots_on(new).keys(), 120,
               f"the permanent slots on {new.name} again")
    assert "unmanaged_slot" in slots_on(leader)


# ------------------------------------------------------------------ topology

@pytest.fixture
def topology(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    archive = tmp_path / "archive"
    archive.mkdir()
    params = {"archive_mode": "on", "archive_command": f"cp %p {archive}/%f",
              "archive_timeout": 0}
    c = new_cluster(tmp_path / "topology", members=4,
                    postgresql={"parameters": params})
    with c:
        tags = {"pg3": {"replicatefrom": "pg2"}, "pg4": {"nostream": True}}
        for name, extra in tags.items():
            m = c.procs[name]
            cfg = yaml.safe_load(m.config_path.read_text())
            cfg["tags"].update(extra)
            if name == "pg4":
                cfg["postgresql"]["recovery_conf"] = {
                    "restore_command": f"cp {archive}/%f %p"}
            m.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        c.start("pg1")
        wait_until(lambda: primary_of(c) is c.procs["pg1"], 90, "pg1 primary")
        for name in ("pg2", "pg3", "pg4"):
            c.start(name)
        yield c
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.failed:
            dump_logs(c)


def upstream_port(m: MemberProc) -> int | None:
    text = psql(m, "SELECT sender_port FROM pg_stat_wal_receiver")
    return int(text) if text else None


def replicated(c: LocalCluster, leader: MemberProc, value: int) -> None:
    psql(leader, f"INSERT INTO marks VALUES ({value})")
    psql(leader, "SELECT pg_switch_wal()")  # hands the segment to the archive for pg4
    for m in c.procs.values():
        if m is leader or not m.alive:
            continue
        wait_until(lambda m=m: psql(m, f"SELECT count(*) FROM marks WHERE v = {value}") == "1",
                   90, f"{value} on {m.name}")


def test_cascading_and_archive_only_members_follow_a_failover(topology: LocalCluster) -> None:
    c = topology
    pg1, pg2, pg3, pg4 = (c.procs[n] for n in ("pg1", "pg2", "pg3", "pg4"))
    wait_until(lambda: status(pg3).get("replication_state") == "streaming", 120,
               "pg3 streaming")
    wait_until(lambda: status(pg4).get("replication_state") == "in archive recovery", 120,
               "pg4 recovering from the archive")
    psql(pg1, "CREATE TABLE marks (v int)")
    replicated(c, pg1, 1)
    assert upstream_port(pg3) == pg2.pg_port  # streams from its replicatefrom member
    assert psql(pg3, "SELECT count(*) FROM pg_stat_wal_receiver") == "1"
    assert upstream_port(pg4) is None  # nostream: no WAL receiver
    wait_until(lambda: psql(pg2, "SELECT active FROM pg_replication_slots "
                                 "WHERE slot_name = 'pg3'") == "t", 60, "pg3's slot on pg2")
    for m in (pg1, pg2, pg3):
        assert "pg4" not in slots_on(m)  # an archive-only member has no slot anywhere
    assert psql(pg1, "SELECT active FROM pg_replication_slots WHERE slot_name = 'pg3'") == "f"
    code, cluster_body = call(pg1, "GET", "/cluster")
    assert code == 200 and "pg4" not in cluster_body["slots"]
    assert cluster_body["slots"]["pg3"]["member"] == "pg3"

    c.kill_node("pg1")
    new = wait_until(lambda: (p := primary_of(c)) is not None and p is not pg1 and p, 90,
                     "a new primary")
    replicated(c, new, 2)  # every other member has it: pg4 through the archive
    if new is pg2:
        assert upstream_port(pg3) == pg2.pg_port  # still cascading
    if new is not pg4:  # nostream does not keep a member from leading (as in Patroni)
        assert upstream_port(pg4) is None
        assert status(pg4).get("replication_state") == "in archive recovery"
