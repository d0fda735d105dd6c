"""REST API: health checks, /patroni, /cluster, served by the real aiohttp app in-process."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from tests.unit.api_support import (
    HEAD_POS,
    MB,
    STOPPED,
    SYSID,
    Source,
    api,
    call,
    cluster_view,
    code,
    primary_status,
    replica_status,
    with_pg,
)

from pgha import __version__
from pgha.api.checks import parse_lag
from pgha.api.cluster import cluster_json
from pgha.core.model import ControlState, DataState, PgRole, Tags
from pgha.core.status import AgentStatus

# --------------------------------------------------------------------------- parse_lag


@pytest.mark.parametrize(("text", "value"), [
    ("0", 0), ("1048576", 1048576), ("16kB", 16 * 1024), ("16KB", 16 * 1024),
    ("1MB", MB), ("1mb", MB), (" 2 MB ", 2 * MB), ("3GB", 3 * 1024**3), ("1TB", 1024**4),
    ("10B", 10), ("10b", 10),
])
def test_parse_lag(text: str, value: int) -> None:
    assert parse_lag(text) == value


@pytest.mark.parametrize("text", ["", "x", "-1", "1.5MB", "MB", "1 PB", "1MiB", "1 2"])
def test_parse_lag_malformed(text: str) -> None:
    assert parse_lag(text) is None


@pytest.mark.parametrize("text", ["1k", "1M", "1G", "1T"])
def test_parse_lag_unit_without_b_does_not_raise(text: str) -> None:
    assert parse_lag(text) in (None, 1024 ** ("kmgt".index(text[1].lower()) + 1))


# --------------------------------------------------------------------------- /primary


@pytest.mark.parametrize("path", ["/", "/primary", "/master", "/read-write"])
async def test_primary_200_when_holding_lock_and_running_primary(path: str) -> None:
    status, body = await call(primary_status(), path)
    assert status == 200
    data = json.loads(body)
    assert data["role"] == "primary"
    assert data["state"] == "running"


@pytest.mark.parametrize("status", [
    with_pg(primary_status(), **STOPPED),  # lock held, PostgreSQL down (Patroni says 200)
    with_pg(primary_status(), accepting=False),  # lock held, still starting
    with_pg(primary_status(), role=PgRole.REPLICA),  # lock held, not promoted yet
    primary_status(holds_lock=False),  # running primary without the lock
    replica_status(),
], ids=["pg-down", "starting", "not-promoted", "no-lock", "replica"])
async def test_primary_503(status: AgentStatus) -> None:
    code_, body = await call(status, "/primary")
    assert code_ == 503
    assert json.loads(body)["patroni"]["name"] == status.name  # status JSON as the body


# --------------------------------------------------------------------------- /replica


async def test_replica_200_for_running_replica() -> None:
    code_, body = await call(replica_status(), "/replica")
    assert code_ == 200
    assert json.loads(body)["role"] == "replica"


@pytest.mark.parametrize("status", [
    replica_status(tags=Tags(noloadbalance=True)),
    with_pg(replica_status(), **STOPPED),
    with_pg(replica_status(), accepting=False),
    primary_status(),
], ids=["noloadbalance", "stopped", "starting", "primary"])
async def test_replica_503(status: AgentStatus) -> None:
    assert await code(status, "/replica") == 503


@pytest.mark.parametrize(("query", "expected"), [
    ("lag=2097152", 200),  # exactly the lag in bytes
    ("lag=2097151", 503),
    ("lag=1MB", 503),
    ("lag=2MB", 200),
    ("lag=3MB", 200),
    ("lag=16kB", 503),
    ("lag=2047kB", 503),
    ("lag=2048kB", 200),
    ("lag=1GB", 200),
    ("lag=garbage", 503),
    ("lag=", 503),
])
async def test_replica_lag(query: str, expected: int) -> None:
    # leader at HEAD_POS, this replica 2 MB behind
    assert await code(replica_status(), f"/replica?{query}") == expected


async def test_replica_lag_uses_the_larger_of_optime_and_leader_position() -> None:
    status = replica_status(view=cluster_view(optime=HEAD_POS + 8 * MB))
    assert await code(status, "/replica?lag=10MB") == 200  # 8 MB + 2 MB behind the optime
    assert await code(status, "/replica?lag=9MB") == 503
    status = replica_status(view=cluster_view(optime=HEAD_POS - 8 * MB))
    assert await code(status, "/replica?lag=2MB") == 200


@pytest.mark.parametrize("status", [
    replica_status(view=None),
    replica_status(view=cluster_view(leader_xlog=None, optime=None)),
    replica_status(wal=None),
], ids=["no-view", "no-head", "own-position-unknown"])
async def test_replica_lag_unknown_is_503_but_plain_check_is_200(status: AgentStatus) -> None:
    assert await code(status, "/replica?lag=1GB") == 503
    assert await code(status, "/replica") == 200


async def test_replica_lag_malformed_unit_is_not_a_server_error() -> None:
    assert await code(replica_status(), "/replica?lag=1k") in (200, 503)


TAGGED = replica_status(tags=Tags(nofailover=True, failover_priority=3,
                                  custom={"zone": "eu-1", "rack": 7}))


@pytest.mark.parametrize(("query", "expected"), [
    ("tag_zone=eu-1", 200),
    ("tag_zone=eu-2", 503),
    ("tag_rack=7", 200),
    ("tag_nofailover=true", 200),
    ("tag_nofailover=True", 200),
    ("tag_nofailover=false", 503),
    ("tag_failover_priority=3", 200),
    ("tag_missing=x", 503),
    ("tag_noloadbalance=false", 503),  # false tags are not published, as in Patroni
    ("tag_zone=eu-1&tag_rack=7", 200),
    ("tag_zone=eu-1&tag_rack=8", 503),
    ("tag_zone=eu-1&lag=1MB", 503),
    ("tag_zone=eu-1&lag=4MB", 200),
    ("other=1", 200),
])
async def test_replica_tag_filters(query: str, expected: int) -> None:
    assert await code(TAGGED, f"/replica?{query}") == expected


# --------------------------------------------------------------------------- other checks


@pytest.mark.parametrize(("status", "expected"), [
    (primary_status(), 200),
    (replica_status(), 200),
    (primary_status(holds_lock=False), 200),
    (with_pg(primary_status(), **STOPPED), 503),
    (with_pg(replica_status(), accepting=False), 503),
], ids=["primary", "replica", "primary-no-lock", "stopped", "starting"])
async def test_health(status: AgentStatus, expected: int) -> None:
    assert await code(status, "/health") == expected


@pytest.mark.parametrize(("status", "expected"), [
    (primary_status(), 200),
    (primary_status(holds_lock=False), 503),
    (with_pg(primary_status(), **STOPPED), 503),
    (replica_status(), 503),
], ids=["leader", "no-lock", "leader-pg-down", "replica"])
async def test_leader(status: AgentStatus, expected: int) -> None:
    assert await code(status, "/leader") == expected


@pytest.mark.parametrize(("status", "expected"), [
    (primary_status(), 200),
    (replica_status(), 200),
    (replica_status(tags=Tags(noloadbalance=True)), 503),
    (with_pg(replica_status(), **STOPPED), 503),
    (primary_status(holds_lock=False), 503),
], ids=["primary", "replica", "noloadbalance", "stopped", "primary-no-lock"])
async def test_read_only(status: AgentStatus, expected: int) -> None:
    assert await code(status, "/read-only") == expected


# --------------------------------------------------------------------------- HEAD / OPTIONS


@pytest.mark.parametrize(("status", "path", "expected"), [
    (primary_status(), "/primary", 200),
    (replica_status(), "/primary", 503),
    (replica_status(), "/replica", 200),
    (primary_status(), "/replica", 503),
    (with_pg(primary_status(), **STOPPED), "/health", 503),
    (primary_status(), "/health", 200),
])
async def test_options_gives_code_only(status: AgentStatus, path: str, expected: int) -> None:
    assert await call(status, path, "OPTIONS") == (expected, b"")


@pytest.mark.parametrize(("status", "path"), [
    (replica_status(), "/primary"),
    (primary_status(), "/replica"),
    (with_pg(primary_status(), **STOPPED), "/health"),
])
async def test_head_failing_check_gives_503_code_only(status: AgentStatus, path: str) -> None:
    assert await call(status, path, "HEAD") == (503, b"")


@pytest.mark.parametrize(("status", "path"), [
    (primary_status(), "/primary"),
    (primary_status(), "/"),
    (replica_status(), "/replica"),
    (primary_status(), "/health"),
])
async def test_head_passing_check_gives_200_code_only(status: AgentStatus, path: str) -> None:
    assert await call(status, path, "HEAD") == (200, b"")


# --------------------------------------------------------------------------- unknown, /patroni


@pytest.mark.parametrize("method", ["GET", "POST", "PUT"])
async def test_unknown_path_503_with_status_json(method: str) -> None:
    code_, body = await call(primary_status(), "/no/such/thing", method)
    assert code_ == 503
    data = json.loads(body)
    assert data["state"] == "running"
    assert data["patroni"] == {"version": __version__, "scope": "demo", "name": "pg1"}


async def test_unknown_path_head_code_only() -> None:
    assert await call(primary_status(), "/no/such/thing", "HEAD") == (503, b"")


async def test_patroni_primary_fields() -> None:
    code_, body = await call(primary_status(), "/patroni")
    assert code_ == 200
    data = json.loads(body)
    assert data["state"] == "running"
    assert data["role"] == "primary"
    assert data["timeline"] == 2
    assert data["xlog"] == {"location": HEAD_POS}
    assert data["server_version"] == 150007
    assert data["postmaster_start_time"] == "2024-06-01 10:00:00.000 UTC"
    assert data["database_system_identifier"] == SYSID
    assert data["patroni"] == {"version": __version__, "scope": "demo", "name": "pg1"}
    assert data["cluster_unlocked"] is False
    assert data["dcs_last_seen"] == 1717236000
    assert data["pending_restart"] is False
    assert "tags" not in data  # all-default tags are not published
    assert data["pgha"]["holds_lock"] is True


async def test_patroni_replica_fields() -> None:
    status = replica_status(tags=Tags(nofailover=True, custom={"zone": "eu-1"}),
                            view=cluster_view(leader=None, pause=True))
    code_, body = await call(status, "/patroni")
    assert code_ == 200
    data = json.loads(body)
    assert data["role"] == "replica"
    assert data["xlog"]["received_location"] == HEAD_POS - 2 * MB
    assert data["replication_state"] == "streaming"
    assert data["cluster_unlocked"] is True
    assert data["pause"] is True
    assert data["tags"] == {"zone": "eu-1", "nofailover": True}


@pytest.mark.parametrize(("pg_kw", "state", "role"), [
    (dict(running=False, accepting=False, down_since=5.0, stopped_by_agent=False),
     "crashed", "demoted"),
    (dict(running=False, accepting=False, down_since=5.0, stopped_by_agent=True),
     "stopped", "demoted"),
    (dict(running=False, accepting=False, down_since=5.0,
          control_state=ControlState.SHUT_DOWN_IN_RECOVERY), "crashed", "replica"),
    (dict(running=True, accepting=False), "starting", "primary"),
    (dict(running=False, accepting=False, data=DataState.EMPTY, sysid=None, timeline=None),
     "stopped", "uninitialized"),
    (dict(busy="creating replica", running=False, accepting=False), "creating replica",
     "demoted"),
], ids=["crashed", "stopped-by-agent", "crashed-replica", "starting", "empty", "busy"])
async def test_patroni_always_200(pg_kw: dict[str, Any], state: str, role: str) -> None:
    status = replace(with_pg(primary_status(), **pg_kw), holds_lock=False, view=None)
    code_, body = await call(status, "/patroni")
    assert code_ == 200
    data = json.loads(body)
    assert (data["state"], data["role"]) == (state, role)
    assert "cluster_unlocked" not in data  # no DCS view yet
    if not status.pg.running:
        assert "xlog" not in data  # details of a stopped server are not reported


async def test_patroni_head_code_only() -> None:
    assert await call(with_pg(primary_status(), **STOPPED), "/patroni", "HEAD") == (200, b"")


async def test_patroni_options_200() -> None:
    assert await call(primary_status(), "/patroni", "OPTIONS") == (200, b"")


# --------------------------------------------------------------------------- /cluster


async def test_cluster_body() -> None:
    code_, body = await call(replica_status(), "/cluster")
    assert code_ == 200
    data = json.loads(body)
    assert data["scope"] == "demo"
    assert "pause" not in data
    members = {m["name"]: m for m in data["members"]}
    assert [m["name"] for m in data["members"]] == ["pg1", "pg2", "pg3"]
    assert members["pg1"]["role"] == "leader"
    assert members["pg1"]["state"] == "running"
    assert "lag" not in members["pg1"]
    assert (members["pg1"]["host"], members["pg1"]["port"]) == ("10.0.0.1", 5432)
    assert members["pg1"]["timeline"] == 2
    assert members["pg2"]["role"] == "replica"
    assert members["pg2"]["state"] == "streaming"
    assert members["pg2"]["lag"] == 3 * MB
    assert members["pg2"]["lsn"] == "0/4D00000"
    assert members["pg2"]["port"] == 5433
    assert members["pg2"]["tags"] == {"nofailover": True}
    assert members["pg2"]["api_url"] == "http://10.0.0.2:8008/patroni"
    assert members["pg3"]["lag"] == "unknown"
    assert members["pg3"]["lsn"] == "unknown"
    assert members["pg3"]["state"] == "stopped"


async def test_cluster_without_view_is_503() -> None:
    code_, body = await call(replica_status(view=None), "/cluster")
    assert code_ == 503
    assert json.loads(body) == {"members": [], "scope": "demo"}


def test_cluster_json_without_leader_and_paused() -> None:
    data = cluster_json(cluster_view(leader=None, optime=HEAD_POS + MB, pause=True), "demo")
    assert data["pause"] is True
    assert all(m["role"] == "replica" for m in data["members"])
    lags = {m["name"]: m["lag"] for m in data["members"]}
    # no leader member: the lag counts from the published optime
    assert lags == {"pg1": MB, "pg2": 4 * MB, "pg3": "unknown"}


def test_cluster_json_lag_never_negative() -> None:
    view = cluster_view(leader_xlog=HEAD_POS - 10 * MB)
    lags = {m["name"]: m.get("lag") for m in cluster_json(view, "demo")["members"]}
    assert lags["pg2"] == 0


# --------------------------------------------------------------------------- failsafe


async def test_failsafe_post_is_handed_to_the_agent() -> None:
    src = Source(replica_status())
    async with api(src) as client:
        resp = await client.post("/failsafe", json={"name": "pg1", "api_url": "http://x"})
        assert resp.status == 200
        assert await resp.text() == "Accepted"
    assert src.failsafe_calls == ["pg1"]


async def test_failsafe_post_hands_over_the_slot_positions_and_answers_our_lsn() -> None:
    src = Source(replica_status())
    async with api(src) as client:
        resp = await client.post("/failsafe", json={
            "name": "pg1", "slots": {"cdc": 500, "pg2": 400, "bad": "x", "neg": -1}})
        assert resp.status == 200
        assert resp.headers["lsn"] == str(src.status.pg.wal_position)
    assert src.failsafe_slots == {"cdc": 500, "pg2": 400}


@pytest.mark.parametrize("answer", [(502, "failsafe_mode is off"),
                                    (500, "this member runs as a primary")])
async def test_failsafe_post_refusals_keep_their_code(answer: tuple[int, str]) -> None:
    src = Source(replica_status(), failsafe_answer=answer)
    async with api(src) as client:
        resp = await client.post("/failsafe", json={"name": "pg1"})
        assert (resp.status, await resp.text()) == answer


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"name": 3}', b"{}"])
async def test_failsafe_post_with_a_bad_body_is_400_and_changes_nothing(body: bytes) -> None:
    src = Source(replica_status())
    async with api(src) as client:
        resp = await client.post("/failsafe", data=body,
                                 headers={"Content-Type": "application/json"})
        assert resp.status == 400
    assert src.failsafe_calls == []


async def test_failsafe_get_is_502_when_failsafe_mode_is_off() -> None:
    assert await code(replica_status(), "/failsafe") == 502


def test_cluster_lists_member_retained_and_permanent_slots_with_their_positions() -> None:
    config = {"slots": {"archiver": 0, "cdc": {"type": "logical", "database": "app",
                                                "plugin": "pgoutput"}}}
    view = replace(cluster_view(config=config), status_slots={"pg2": 0x3000060, "cdc": 16},
                   retain_slots=("pg1", "pg2", "pg3", "old_member"))
    slots = cluster_json(view, "demo")["slots"]
    assert slots == {
        "archiver": {"type": "physical", "permanent": True, "lsn": "unknown"},
        "cdc": {"type": "logical", "permanent": True, "database": "app", "plugin": "pgoutput",
                "lsn": "0/10"},
        "old_member": {"type": "physical", "retained": True, "lsn": "unknown"},
        "pg1": {"type": "physical", "member": "pg1", "lsn": "unknown"},
        "pg2": {"type": "physical", "member": "pg2", "lsn": "0/3000060"},
        "pg3": {"type": "physical", "member": "pg3", "lsn": "unknown"},
    }
    off = replace(view, settings=replace(view.settings, use_slots=False))
    assert "slots" not in cluster_json(off, "demo")
