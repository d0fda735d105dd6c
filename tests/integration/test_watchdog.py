"""End to end: the watchdog device of real agents, with a regular file standing in for
``/dev/watchdog`` (it refuses the watchdog ioctls, so the agent feeds it by writing ``1`` and
closes it with the magic ``V``): armed on the leader only, disarmed on switchover and on a
clean stop, never armed on a replica. (A softdog test would need a kernel that lets us load
modules; there is no /dev/watchdog here.)

No timing is asserted; waits only bound how long the test may take.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.cluster import (
    call,
    dump_logs,
    edit,
    new_cluster,
    primary_of,
    wait_healthy,
    wait_until,
)

pytestmark = pytest.mark.integration


def feeds(path: Path) -> int:
    return path.read_bytes().count(b"1")


def test_watchdog_follows_the_leader(tmp_path: Path) -> None:
    cluster = new_cluster(tmp_path / "c", members=2)
    with cluster:
        devices = {}
        for name, m in cluster.procs.items():
            devices[name] = m.data_dir.parent / "watchdog"
            devices[name].write_bytes(b"")
            edit(m, {"watchdog": {"mode": "automatic", "device": str(devices[name]),
                                  "safety_margin": 1}})
        try:
            cluster.start("pg1")
            wait_until(lambda: primary_of(cluster), 120, "pg1 primary")
            cluster.start("pg2")
            wait_healthy(cluster)
            dev1, dev2 = devices["pg1"], devices["pg2"]
            wait_until(lambda: feeds(dev1) >= 3, 30, "the leader feeding its watchdog")
            assert dev2.read_bytes() == b""  # never armed on a replica
            log1 = cluster.procs["pg1"].log_path.read_text()
            assert "watchdog" in log1 and "armed" in log1

            code, body = call(cluster.procs["pg1"], "POST", "/switchover",
                              {"leader": "pg1", "candidate": "pg2"})
            assert code == 200, body
            wait_until(lambda: dev1.read_bytes().endswith(b"V"), 60,
                       "the former leader's magic close")
            wait_until(lambda: feeds(dev2) >= 3, 60, "the new leader feeding its watchdog")
            wait_healthy(cluster)
            closed = dev1.read_bytes()
            assert closed.endswith(b"V")

            cluster.stop("pg2")  # a clean stop of the leader
            assert dev2.read_bytes().endswith(b"V")
            wait_until(lambda: primary_of(cluster), 60, "pg1 leader again")
            wait_until(lambda: feeds(dev1) > closed.count(b"1") or
                       not dev1.read_bytes().endswith(b"V"), 30, "pg1 armed again")
        except Exception:
            dump_logs(cluster)
            raise
