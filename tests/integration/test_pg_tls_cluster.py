"""A cluster whose PostgreSQL accepts TCP connections only over TLS with client certificates.

PostgreSQL runs with ``ssl=on``, a server certificate from its own CA, and a pg_hba that has
``hostssl ... cert`` lines for the replication user, the superuser and the rewind user and no
password or trust line for TCP. The agents connect as Patroni does with
``use_unix_socket: false``: their own superuser connections use TCP too. So everything below —
the clone of both replicas (pg_basebackup), streaming (primary_conninfo), the agents' own
status queries and their queries of other members, a switchover, a node-death failover and the
rewind of the old primary (pg_rewind) — works only if each role's sslmode, sslcert, sslkey,
sslrootcert (and, for the replication user, the sslpassword of its encrypted key) reach the
connection. The unix socket keeps ``local ... trust`` for the test's own psql only.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import trustme
import yaml
from cryptography.hazmat.primitives import serialization
from tests.support.cluster import (
    dump_logs,
    is_primary,
    new_cluster,
    primary_of,
    psql,
    status,
    wait_healthy,
    wait_until,
)

from pgha.cli.localcluster import LocalCluster, MemberProc

pytestmark = pytest.mark.integration

ROLES = {"superuser": "postgres", "replication": "replicator", "rewind": "rewind_user"}
KEY_PASSPHRASE = "key pass 'phrase'"  # quoted in primary_conninfo, kept off command lines

SSL_REPLICATION_SQL = """
SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)
 WHERE s.ssl AND s.client_dn = '/O=t/OU=t/CN=replicator' AND r.state = 'streaming'
"""
# (pg_stat_ssl.client_dn is cut at 63 bytes: the test's certificates have short names)
# the agent's own pooled status connection to its server (application_name pgha)
SSL_AGENT_SQL = """
SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
 WHERE a.application_name = 'pgha' AND s.ssl AND s.client_dn = '/O=t/OU=t/CN=postgres'
"""


def _write_key(path: Path, pem: bytes, passphrase: str | None = None) -> None:
    key = serialization.load_pem_private_key(pem, password=None)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
        else serialization.NoEncryption())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       encryption))
    os.chmod(path, 0o600)  # the test's files; pgha never changes them


def make_pki(d: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost, and a client certificate per role
    (CN = user name). The replication user's key is encrypted."""
    d.mkdir()
    ca = trustme.CA()
    files = {"ca": d / "ca.pem", "server.crt": d / "server.crt", "server.key": d / "server.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(files["server.crt"]))
    _write_key(files["server.key"], server.private_key_pem.bytes())
    for user in ROLES.values():
        leaf = ca.issue_cert(f"{user.replace('_', '-')}.client.test", common_name=user,
                             organization_name="t", organization_unit_name="t")
        files[f"{user}.crt"], files[f"{user}.key"] = d / f"{user}.crt", d / f"{user}.key"
        leaf.cert_chain_pems[0].write_to_path(str(files[f"{user}.crt"]))
        _write_key(files[f"{user}.key"], leaf.private_key_pem.bytes(),
                   KEY_PASSPHRASE if user == "replicator" else None)
    return files


def configure(c: LocalCluster, pki: dict[str, Path]) -> None:
    modes = {"superuser": "verify-full", "replication": "verify-full", "rewind": "verify-ca"}
    for m in c.procs.values():
        cfg = yaml.safe_load(m.config_path.read_text())
        pg = cfg["postgresql"]
        pg["parameters"].update({
            "ssl": "on", "ssl_cert_file": str(pki["server.crt"]),
            "ssl_key_file": str(pki["server.key"]), "ssl_ca_file": str(pki["ca"])})
        pg["pg_hba"] = [
            "local all all trust",
            "hostssl replication replicator 127.0.0.1/32 cert",
            "hostssl all postgres 127.0.0.1/32 cert",
            "hostssl all rewind_user 127.0.0.1/32 cert",
        ]
        pg["use_unix_socket"] = False
        auth = {}
        for role, user in ROLES.items():
            auth[role] = {"username": user, "sslmode": modes[role],
                          "sslcert": str(pki[f"{user}.crt"]), "sslkey": str(pki[f"{user}.key"]),
                          "sslrootcert": str(pki["ca"])}
        auth["replication"]["sslpassword"] = KEY_PASSPHRASE
        pg["authentication"] = auth
        m.config_path.write_text(yaml.safe_dump(cfg))


def ssl_streams(leader: MemberProc, count: int) -> bool:
    return psql(leader, SSL_REPLICATION_SQL) == str(count)


def switchover(leader: MemberProc, candidate: str) -> tuple[int, str]:
    req = urllib.request.Request(
        f"{leader.api}/switchover", method="POST",
        data=json.dumps({"leader": leader.name, "candidate": candidate}).encode(),
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_tls_client_certificate_cluster(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    modes = {p: os.stat(p).st_mode for p in pki.values()}
    c = new_cluster(tmp_path / "c")
    with c:
        configure(c, pki)
        c.start_all(stagger=0.3)
        try:
            _scenario(c, pki)
        except BaseException:
            dump_logs(c, tail=120)
            for m in c.procs.values():
                try:
                    print(m.name, psql(m, "SELECT a.pid, a.usename, a.application_name, "
                                          "a.backend_type, s.ssl, s.client_dn FROM "
                                          "pg_stat_activity a JOIN pg_stat_ssl s USING (pid)"))
                except Exception as exc:  # a stopped member: nothing to show
                    print(m.name, exc)
            raise
    # pgha used the key and certificate files in place: modes unchanged
    assert {p: os.stat(p).st_mode for p in pki.values()} == modes


def _scenario(c: LocalCluster, pki: dict[str, Path]) -> None:
    # bootstrap and clone of both replicas, streaming over TLS as CN=replicator
    leader = wait_healthy(c, timeout=180)
    wait_until(lambda: ssl_streams(leader, 2), 30, "two TLS replication connections")
    wait_until(lambda: psql(leader, SSL_AGENT_SQL) != "0", 30, "the agent's own TLS connection")
    assert psql(leader, "SHOW ssl") == "on"
    replica = next(m for m in c.procs.values() if m is not leader)
    conninfo = psql(replica, "SHOW primary_conninfo")
    assert f"sslkey={pki['replicator.key']}" in conninfo
    assert "sslmode=verify-full" in conninfo
    assert "sslpassword='key pass \\'phrase\\''" in conninfo
    # the passphrase is on no command line and in no log
    for name, text in c.iter_logs():
        assert KEY_PASSPHRASE not in text, name
    psql(leader, "CREATE TABLE t (id int primary key)")
    psql(leader, "INSERT INTO t SELECT generate_series(1, 100)")

    # switchover
    target = replica
    code, text = switchover(leader, target.name)
    assert code == 200, text
    new = wait_until(lambda: primary_of(c), 60, "the switchover's new primary")
    assert new.name == target.name
    leader = wait_healthy(c, timeout=120)
    assert leader.name == target.name
    wait_until(lambda: ssl_streams(leader, 2), 30, "TLS streaming after the switchover")
    psql(leader, "INSERT INTO t VALUES (101)")

    # node death of the leader: agent and postmaster SIGKILLed
    old = leader
    timeline = status(old)["timeline"]
    c.kill_node(old.name)
    new = wait_until(lambda: primary_of(c), 60, "a primary after the node death")
    assert new.name != old.name
    psql(new, "INSERT INTO t VALUES (102)")
    assert status(new)["timeline"] == timeline + 1

    # the old primary comes back: crash recovery leaves its WAL past the fork, pg_rewind (as
    # rewind_user with its certificate) brings it back, and it streams from the new leader
    c.start(old.name)
    wait_until(lambda: status(old).get("role") == "replica"
               and status(old).get("state") == "running", 120, "the old primary rejoined")
    wait_until(lambda: psql(old, "SELECT count(*) FROM t") == "102", 60, "rejoined data")
    assert not is_primary(old)
    log = old.log_path.read_text(errors="replace")
    assert re.search(r"pg_rewind from \S+ done", log), "no pg_rewind in the old primary's log"
    leader = wait_healthy(c, timeout=120)
    assert leader.name == new.name
    wait_until(lambda: ssl_streams(leader, 2), 30, "TLS streaming after the rewind")
    for name, text in c.iter_logs():
        assert KEY_PASSPHRASE not in text, name
