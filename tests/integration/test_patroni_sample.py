"""Patroni's own sample configuration (the postgres0.yml shape: ``wal_keep_segments``,
``wal_level: hot_standby``, md5 host lines and no local line in pg_hba, ``unix_socket_directories:
'..'``, archive settings, bootstrap users, REST credentials, its timings) runs unchanged apart
from ports and paths: three streaming members on PostgreSQL 15, the parameters translated for
15, and the operator's CLI working from the same file."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.cluster import PG_BIN, SRC, new_cluster, status, wait_healthy, wait_until

from pgha.cli.localcluster import LocalCluster, MemberProc

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[1] / "unit" / "fixtures" / "postgres0.yml"


def sample_config(c: LocalCluster, m: MemberProc, index: int) -> dict[str, Any]:
    """The sample with this member's name, ports and directories (what an operator edits)."""
    cfg: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    assert c.etcd is not None
    cfg["name"] = f"postgresql{index}"
    cfg["restapi"]["listen"] = cfg["restapi"]["connect_address"] = f"127.0.0.1:{m.api_port}"
    cfg["etcd"]["host"] = c.etcd.endpoint
    pg = cfg["postgresql"]
    pg["listen"] = pg["connect_address"] = f"127.0.0.1:{m.pg_port}"
    pg["data_dir"] = str(m.data_dir)
    pg["pgpass"] = str(m.data_dir.parent / f"pgpass{index}")
    pg["bin_dir"] = str(PG_BIN)
    return cfg


def sql(m: MemberProc, query: str) -> str:
    """As the sample's superuser over TCP (the sample's pg_hba has no local line)."""
    out = subprocess.run(
        [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(m.pg_port), "-U", "postgres",
         "-d", "postgres", "-XAtq", "-c", query],
        capture_output=True, text=True, timeout=20, check=True,
        env={**os.environ, "PGPASSWORD": "zalando"})
    return out.stdout.strip()


def post(m: MemberProc, path: str, body: dict[str, Any]) -> int:
    token = base64.b64encode(b"username:password").decode()
    req = urllib.request.Request(f"http://127.0.0.1:{m.api_port}{path}", method="POST",
                                 data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Basic {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return int(resp.status)


def test_patroni_sample_configuration_runs_three_streaming_members(tmp_path: Path) -> None:
    c = new_cluster(tmp_path / "c")
    with c:
        members = list(c.procs.values())
        for i, m in enumerate(members):
            m.config_path.write_text(yaml.safe_dump(sample_config(c, m, i), sort_keys=False))
        c.start_all()
        leader = wait_healthy(c, timeout=240)
        for m in members:
            assert sql(m, "SHOW wal_keep_size") == "128MB"  # wal_keep_segments: 8, renamed
            assert sql(m, "SHOW wal_level") == "replica"  # hot_standby, as PostgreSQL 15 says
            assert sql(m, "SHOW archive_mode") == "on"
            assert status(m)["patroni"]["name"].startswith("postgresql")
        assert sql(leader, "SELECT rolcreaterole AND rolcreatedb FROM pg_roles "
                           "WHERE rolname = 'admin'") == "t"  # bootstrap.users

        listing = subprocess.run(
            [sys.executable, "-m", "pgha.cli.main", "-c", str(members[0].config_path), "list"],
            capture_output=True, text=True, timeout=60, check=True,
            env={**os.environ, "PYTHONPATH": str(SRC)}).stdout
        assert "batman" in listing and listing.count("streaming") == 2, listing

        candidate = next(m for m in members if m is not leader)
        name = status(candidate)["patroni"]["name"]
        assert post(leader, "/switchover", {"leader": status(leader)["patroni"]["name"],
                                            "candidate": name}) == 200
        wait_until(lambda: status(candidate).get("role") == "primary" or None, 120,
                   f"{name} to be primary")
        wait_healthy(c, timeout=240)
