"""A failing action never spins (DESIGN.md rule 9), on real PostgreSQL and etcd: a bootstrap
that fails ends the agent with its cause and gives ``initialize`` back; a clone the leader
refuses is retried with backoff and reported in ``GET /patroni``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.support.cluster import (
    dump_logs,
    edit,
    exit_of,
    new_cluster,
    status,
    wait_healthy,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_failed_bootstrap_exits_with_its_cause_and_frees_initialize(tmp_path: Path) -> None:
    c = new_cluster(tmp_path / "c", members=1)
    with c:
        m = c.procs["pg1"]
        edit(m, {"bootstrap.initdb": [{"encoding": "NO-SUCH-ENCODING"}]})
        code, log = exit_of(c, "pg1")
        assert code == 1, log
        assert "CRITICAL" in log and "failed to bootstrap the cluster: initdb failed" in log
        assert log.count("running initdb") == 1  # no initdb loop
        assert not m.data_dir.exists() or not any(m.data_dir.iterdir())
        # initialize was given back: fixed, the same member bootstraps the cluster
        edit(m, {"bootstrap.initdb": [{"encoding": "UTF8"}]})
        c.start("pg1")
        wait_healthy(c)


def test_refused_clone_backs_off_and_is_reported(tmp_path: Path) -> None:
    c = new_cluster(tmp_path / "c", members=2)
    with c:
        replica = c.procs["pg2"]
        edit(replica, {"postgresql.authentication.replication.password": "wrong"})
        c.start("pg1")
        wait_until(lambda: status(c.procs["pg1"]).get("role") == "primary" or None, 120,
                   "a primary")
        c.start("pg2")
        try:
            body = wait_until(
                lambda: ((s := status(replica)).get("state") == "clone failed" and s) or None,
                60, "the failed clone in GET /patroni")
            assert "password authentication failed" in body["last_error"]["error"]
            assert body["last_error"]["action"] == "clone"
            started = time.monotonic()
            first = replica.log_path.read_text().count("cloning from pg1")
            time.sleep(20)
            attempts = replica.log_path.read_text().count("cloning from pg1") - first
        except Exception:
            dump_logs(c)
            raise
        # 1 s doubling: at most about five attempts in 20 s (a tight loop would make dozens)
        assert attempts <= 6, f"{attempts} clone attempts in {time.monotonic() - started:.0f}s"
        assert status(replica)["last_error"]["failures"] >= 3
