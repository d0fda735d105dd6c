"""GET /metrics: Patroni's gauges rendered from a published status, plus pgha's own metrics."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from tests.support.prom import PATRONI_COUNTER_LINTS, Exposition, parse, promtool_problems
from tests.unit.test_api import (
    HEAD_POS,
    MB,
    STOPPED,
    cluster_view,
    primary_status,
    replica_status,
    with_pg,
)

from pgha import __version__
from pgha.agent.metrics import AgentMetrics
from pgha.api.metrics import POSTGRES_STATE_CODES, render_metrics, version_number
from pgha.api.server import build_app
from pgha.core.model import ControlState, PgState
from pgha.core.status import AgentStatus

PATRONI_METRICS = [
    "patroni_version", "patroni_postgres_running", "patroni_postmaster_start_time",
    "patroni_primary", "patroni_xlog_location", "patroni_standby_leader", "patroni_replica",
    "patroni_sync_standby", "patroni_quorum_standby", "patroni_xlog_received_location",
    "patroni_xlog_replayed_location", "patroni_xlog_replayed_timestamp", "patroni_xlog_paused",
    "patroni_postgres_streaming", "patroni_postgres_in_archive_recovery",
    "patroni_postgres_server_version", "patroni_cluster_unlocked",
    "patroni_failsafe_mode_is_active", "patroni_postgres_timeline", "patroni_dcs_last_seen",
    "patroni_pending_restart", "patroni_is_paused", "patroni_postgres_state",
]
COUNTERS = {"patroni_xlog_location", "patroni_xlog_received_location",
            "patroni_xlog_replayed_location"}
REPLAYED_AT = "2024-06-01 10:05:00.250000+00:00"


@dataclass
class Source:
    status: AgentStatus
    metrics: AgentMetrics = field(default_factory=AgentMetrics)

    async def live_status(self) -> AgentStatus:
        return self.status

    def accept_failsafe(self, name: str) -> tuple[int, str]:
        return 503, "not in this test"

    def discarded_reports(self) -> tuple[dict[str, Any], ...]:
        return ()


def gauges(status: AgentStatus) -> dict[str, float]:
    """Every Patroni metric of the rendering as name -> value, checking it is labelled."""
    doc = parse(render_metrics(status, None))
    out: dict[str, float] = {}
    for name, labels, value in doc.samples:
        assert labels == {"scope": status.scope, "name": status.name}, name
        if not name.startswith("patroni_"):
            continue
        assert name not in out, f"{name} twice"
        out[name] = value
    return out


def stopped_status() -> AgentStatus:
    """A replica whose PostgreSQL the agent stopped (cleanly); the DCS is fine."""
    status = with_pg(replica_status(), **STOPPED, stopped_by_agent=True)
    return replace(status, pg=replace(status.pg, control_state=ControlState.SHUT_DOWN_IN_RECOVERY,
                                      wal_position=None))


def test_every_patroni_metric_has_help_type_and_one_labelled_sample() -> None:
    doc = parse(render_metrics(primary_status(), AgentMetrics()))
    names = [n for n in doc.types if n.startswith("patroni_")]
    assert names == PATRONI_METRICS
    for name in PATRONI_METRICS:
        assert doc.help[name], name
        assert doc.types[name] == ("counter" if name in COUNTERS else "gauge"), name
        assert len(doc.values(name)) == 1
    assert any(n.startswith("pgha_") for n in doc.types)


def test_primary() -> None:
    g = gauges(primary_status())
    start = datetime.fromisoformat("2024-06-01 10:00:00+00:00").timestamp()
    assert g == {
        "patroni_version": int(version_number(__version__)),
        "patroni_postgres_running": 1, "patroni_postmaster_start_time": start,
        "patroni_primary": 1, "patroni_xlog_location": HEAD_POS, "patroni_standby_leader": 0,
        "patroni_replica": 0, "patroni_sync_standby": 0, "patroni_quorum_standby": 0,
        "patroni_xlog_received_location": 0, "patroni_xlog_replayed_location": 0,
        "patroni_xlog_replayed_timestamp": 0, "patroni_xlog_paused": 0,
        "patroni_postgres_streaming": 0, "patroni_postgres_in_archive_recovery": 0,
        "patroni_postgres_server_version": 150007, "patroni_cluster_unlocked": 0,
        "patroni_failsafe_mode_is_active": 0, "patroni_postgres_timeline": 2,
        "patroni_dcs_last_seen": 1717236000, "patroni_pending_restart": 0,
        "patroni_is_paused": 0, "patroni_postgres_state": POSTGRES_STATE_CODES["running"],
    }


def test_replica() -> None:
    status = replica_status(pg_details={
        "postmaster_start_time": "2024-06-01 10:01:00.5+00:00", "server_version": 150007,
        "xlog": {"received_location": HEAD_POS - MB, "replayed_location": HEAD_POS - 2 * MB,
                 "replayed_timestamp": REPLAYED_AT, "paused": True},
        "replication_state": "streaming"}, dcs_last_seen=1717236001.9)
    g = gauges(status)
    assert g["patroni_primary"] == 0 and g["patroni_replica"] == 1
    assert g["patroni_postgres_running"] == 1
    assert g["patroni_xlog_location"] == 0
    assert g["patroni_xlog_received_location"] == HEAD_POS - MB
    assert g["patroni_xlog_replayed_location"] == HEAD_POS - 2 * MB
    assert g["patroni_xlog_replayed_timestamp"] == datetime.fromisoformat(REPLAYED_AT).timestamp()
    assert g["patroni_xlog_paused"] == 1
    assert g["patroni_postgres_streaming"] == 1
    assert g["patroni_postgres_in_archive_recovery"] == 0
    assert g["patroni_postmaster_start_time"] == \
        datetime.fromisoformat("2024-06-01 10:01:00.5+00:00").timestamp()
    assert g["patroni_postgres_timeline"] == 2
    assert g["patroni_dcs_last_seen"] == 1717236001
    assert g["patroni_postgres_state"] == 5


def test_replica_from_archive_and_unknown_replay_time() -> None:
    status = replica_status()
    status = replace(status, pg_details={**status.pg_details,
                                         "replication_state": "in archive recovery"})
    g = gauges(status)
    assert g["patroni_postgres_streaming"] == 0
    assert g["patroni_postgres_in_archive_recovery"] == 1
    assert g["patroni_xlog_replayed_timestamp"] == 0  # null in pg_last_xact_replay_timestamp


def test_stopped_member_reports_zeros_and_state_stopped() -> None:
    g = gauges(stopped_status())
    assert g["patroni_postgres_running"] == 0
    assert g["patroni_postmaster_start_time"] == 0
    assert g["patroni_primary"] == 0
    assert g["patroni_replica"] == 1  # role "replica", as GET /patroni says (and Patroni)
    for name in ("patroni_xlog_location", "patroni_xlog_received_location",
                 "patroni_xlog_replayed_location", "patroni_xlog_replayed_timestamp",
                 "patroni_xlog_paused", "patroni_postgres_streaming",
                 "patroni_postgres_server_version", "patroni_postgres_timeline"):
        assert g[name] == 0, name
    assert g["patroni_postgres_state"] == POSTGRES_STATE_CODES["stopped"]


def test_crashed_former_primary_and_busy_states() -> None:
    crashed = with_pg(primary_status(), **STOPPED)
    g = gauges(replace(crashed, holds_lock=False))
    assert g["patroni_postgres_state"] == POSTGRES_STATE_CODES["crashed"]
    assert g["patroni_primary"] == 0 and g["patroni_replica"] == 0  # role "demoted"
    cloning = replace(replica_status(), pg=PgState(busy="creating replica"), pg_details={})
    assert gauges(cloning)["patroni_postgres_state"] == 4
    starting = with_pg(replica_status(), accepting=False)
    g = gauges(starting)
    assert g["patroni_postgres_state"] == 6 and g["patroni_postgres_running"] == 0


def test_cluster_flags_follow_the_view() -> None:
    unlocked = replace(replica_status(), view=cluster_view(leader=None, pause=True))
    g = gauges(unlocked)
    assert g["patroni_cluster_unlocked"] == 1 and g["patroni_is_paused"] == 1
    never_read = replace(replica_status(), view=None, dcs_last_seen=None)
    g = gauges(never_read)
    assert g["patroni_cluster_unlocked"] == 0 and g["patroni_dcs_last_seen"] == 0
    assert gauges(primary_status(failsafe_active=True))["patroni_failsafe_mode_is_active"] == 1


def test_pending_restart_follows_the_status() -> None:
    assert gauges(replica_status())["patroni_pending_restart"] == 0
    assert gauges(replace(replica_status(), pending_restart=True))["patroni_pending_restart"] == 1


@pytest.mark.parametrize(("mode", "standbys", "name", "sync", "quorum"), [
    (True, "pg2", "pg2", 1, 0),
    ("on", "pg2,pg3", "pg2", 1, 0),
    ("quorum", "pg2", "pg2", 0, 1),
    (True, "pg3", "pg2", 0, 0),       # another member is the synchronous standby
    (False, "pg2", "pg2", 0, 0),      # a stale sync key while synchronous mode is off
], ids=["sync", "sync-of-two", "quorum", "not-named", "mode-off"])
def test_sync_and_quorum_standby_follow_the_sync_key(mode: object, standbys: str, name: str,
                                                     sync: int, quorum: int) -> None:
    view = cluster_view(sync={"leader": "pg1", "sync_standby": standbys},
                        config={"synchronous_mode": mode})
    status = replace(replica_status(), name=name, view=view)
    g = gauges(status)
    assert (g["patroni_sync_standby"], g["patroni_quorum_standby"]) == (sync, quorum)
    body = status.to_patroni_json()  # the metric and GET /patroni agree
    assert body.get("sync_standby", False) == bool(sync)
    assert body.get("quorum_standby", False) == bool(quorum)


def test_sync_key_of_a_former_leader_counts_for_nothing() -> None:
    view = cluster_view(sync={"leader": "pg3", "sync_standby": "pg2"},
                        config={"synchronous_mode": True})
    g = gauges(replace(replica_status(), view=view))
    assert g["patroni_sync_standby"] == 0 and g["patroni_quorum_standby"] == 0


def test_maximum_lag_on_failover_follows_the_dynamic_configuration() -> None:
    view = cluster_view(config={"maximum_lag_on_failover": 5 * MB})
    doc = parse(render_metrics(replace(replica_status(), view=view), None))
    assert doc.types["pgha_maximum_lag_on_failover_bytes"] == "gauge"
    assert doc.value("pgha_maximum_lag_on_failover_bytes", scope="demo") == 5 * MB
    assert parse(render_metrics(primary_status(), None)).value(
        "pgha_maximum_lag_on_failover_bytes") == 1048576  # the default
    # before the first DCS read the limit is unknown: HELP and TYPE, no sample
    never_read = parse(render_metrics(replace(replica_status(), view=None), None))
    assert never_read.types["pgha_maximum_lag_on_failover_bytes"] == "gauge"
    assert never_read.values("pgha_maximum_lag_on_failover_bytes") == []


def test_version_number() -> None:
    assert version_number("4.0.0") == "040000"
    assert version_number("0.1.0") == "000100"
    assert version_number("3.2.12") == "030212"
    assert version_number("1.2") == "010200"
    assert version_number("1.2.3rc1") == "010203"
    assert version_number("2") == "020000"


async def test_endpoint_serves_text_format_with_pgha_metrics() -> None:
    source = Source(primary_status())
    source.metrics.decision_loop.only.observe(0.03)
    source.metrics.record_promotion(requested=False)
    async with TestClient(TestServer(build_app(source))) as client:
        resp = await client.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        doc = parse(await resp.text())
        # the handler reads the latest published status on every scrape
        source.status = stopped_status()
        later = parse(await (await client.get("/metrics")).text())
    assert doc.value("patroni_primary") == 1 and later.value("patroni_primary") == 0
    assert later.value("patroni_postgres_state") == 12
    assert doc.value("pgha_decision_loop_duration_seconds_count") == 1
    assert doc.value("pgha_failovers_total") == 1
    assert doc.value("pgha_promotions_total", scope="demo", name="pg1") == 1


def _all_outputs() -> list[str]:
    metrics = AgentMetrics()
    metrics.decision_loop.only.observe(0.5)
    metrics.dcs_duration.labels("get_prefix").observe(0.002)
    return [render_metrics(s, metrics) for s in (primary_status(), replica_status(),
                                                  stopped_status())]


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool is not installed (Debian package prometheus; "
                           "scripts/setup installs it)")
@pytest.mark.parametrize("which", [0, 1, 2], ids=["primary", "replica", "stopped"])
def test_promtool_accepts_the_output(which: int) -> None:
    problems = promtool_problems(_all_outputs()[which])
    # only the three WAL-position counters Patroni names without _total (kept for dashboards)
    assert set(problems) <= PATRONI_COUNTER_LINTS, problems


def test_parse_helper_rejects_malformed_text() -> None:
    with pytest.raises(AssertionError):
        parse("x{a=\"b} 1\n")
    with pytest.raises(AssertionError):
        parse("# TYPE x gauge\n# TYPE x gauge\nx 1\n")
    assert isinstance(parse("x 1\n"), Exposition)
