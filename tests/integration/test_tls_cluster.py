"""A cluster whose REST APIs require TLS client certificates and Basic credentials (and set
``ciphers``, ``server_tokens`` and ``https_extra_headers``).

The members must still reach each other: a switchover is refused (412) unless the leader's
agent can read the candidate's ``/patroni`` over mutual TLS, so a 200 here shows the agents'
own peer calls present the cluster's certificate. Clients without a certificate are refused
at the handshake; unsafe methods without credentials get 401.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from tests.support.cluster import SRC, dump_logs, new_cluster, wait_until

from pgha.cli.localcluster import MemberProc, free_port

pytestmark = pytest.mark.integration

USER, PASSWORD = "admin", "s3cret"


def make_pki(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and one certificate for 127.0.0.1 (server and client): (ca, cert, key) files."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return ca_file, cert_file, key_file


def require_client_certificates(m: MemberProc, ca_file: Path, cert_file: Path,
                                key_file: Path) -> None:
    cfg = yaml.safe_load(m.config_path.read_text())
    cfg["restapi"].update({
        "certfile": str(cert_file), "keyfile": str(key_file), "cafile": str(ca_file),
        "verify_client": "required", "ciphers": "ECDHE+AESGCM:!aNULL",
        "server_tokens": "ProductOnly", "https_extra_headers": {"X-Cluster": "tls"},
        "authentication": {"username": USER, "password": PASSWORD}})
    m.config_path.write_text(yaml.safe_dump(cfg))


def response_headers(ctx: ssl.SSLContext, m: MemberProc, path: str) -> dict[str, str]:
    req = urllib.request.Request(f"https://127.0.0.1:{m.api_port}{path}")
    try:
        with urllib.request.urlopen(req, timeout=60, context=ctx) as resp:
            return dict(resp.headers)
    except urllib.error.HTTPError as err:
        return dict(err.headers)


def call(ctx: ssl.SSLContext, m: MemberProc, method: str, path: str, body: Any = None,
         auth: bool = True) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if auth:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    req = urllib.request.Request(f"https://127.0.0.1:{m.api_port}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60, context=ctx) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_switchover_between_members_that_require_client_certificates(tmp_path: Path) -> None:
    ca_file, cert_file, key_file = make_pki(tmp_path)
    client = ssl.create_default_context(cafile=str(ca_file))
    client.load_cert_chain(str(cert_file), str(key_file))
    anonymous = ssl.create_default_context(cafile=str(ca_file))

    c = new_cluster(tmp_path / "c")
    with c:
        for m in c.procs.values():
            require_client_certificates(m, ca_file, cert_file, key_file)
        c.start_all(stagger=0.3)
        try:
            def primary() -> MemberProc | None:
                found = [m for m in c.procs.values()
                         if call(client, m, "GET", "/primary")[0] == 200]
                return found[0] if len(found) == 1 else None

            def streaming(m: MemberProc) -> bool:
                code, text = call(client, m, "GET", "/patroni")
                return code == 200 and json.loads(text).get("replication_state") == "streaming"

            leader = wait_until(primary, 120, "a primary over mutual TLS")
            others = [m for m in c.procs.values() if m is not leader]
            for m in others:
                wait_until(lambda m=m: streaming(m), 120, f"{m.name} streaming")

            # no client certificate: refused in the TLS handshake (TLS 1.3 reports it on the
            # first read, as a closed connection)
            with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
                call(anonymous, leader, "GET", "/patroni")
            code, _ = call(client, leader, "POST", "/reload", auth=False)
            assert code == 401
            for path in ("/patroni", "/replica"):  # 200 and 503
                headers = response_headers(client, leader, path)
                assert headers["Server"] == "pgha" and headers["X-Cluster"] == "tls"

            target = others[0]
            code, text = call(client, leader, "POST", "/switchover",
                              {"leader": leader.name, "candidate": target.name})
            assert code == 200, text
            assert wait_until(primary, 60, "the new primary").name == target.name
        except BaseException:
            dump_logs(c)
            raise


@pytest.mark.parametrize("connect_address", ["same", "other"])
def test_second_agent_with_a_running_members_name_exits_at_once(
        tmp_path: Path, connect_address: str) -> None:
    """The reported bug: a second agent started with a running member's configuration and
    another REST port, REST requiring client certificates, ran on and released the running
    leader's lock over and over. It must exit at start with Patroni's message, and the leader
    keep its lock. ``same``: only ``restapi.listen`` differs (the published api_url is the
    running member's); ``other``: ``connect_address`` follows the new port."""
    ca_file, cert_file, key_file = make_pki(tmp_path)
    client = ssl.create_default_context(cafile=str(ca_file))
    client.load_cert_chain(str(cert_file), str(key_file))
    c = new_cluster(tmp_path / "c", members=1)
    with c:
        leader = c.procs["pg1"]
        require_client_certificates(leader, ca_file, cert_file, key_file)
        c.start("pg1")
        try:
            wait_until(lambda: call(client, leader, "GET", "/primary")[0] == 200 or None, 120,
                       "pg1 running as the leader")
            pid = leader.postmaster_pid()
            cfg = yaml.safe_load(leader.config_path.read_text())
            port = free_port()
            cfg["restapi"]["listen"] = f"127.0.0.1:{port}"
            if connect_address == "other":
                cfg["restapi"]["connect_address"] = f"127.0.0.1:{port}"
            dup = tmp_path / "dup.yml"
            dup.write_text(yaml.safe_dump(cfg))
            log_before = leader.log_path.read_text()
            started = time.monotonic()
            out = subprocess.run(
                [sys.executable, "-m", "pgha.cli.main", "run", str(dup)],
                capture_output=True, text=True, timeout=60, check=False,
                env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
            elapsed = time.monotonic() - started
            assert out.returncode == 1, out.stderr
            assert "Can't start; there is already a node named 'pg1' running" in out.stderr
            assert elapsed < 20, f"took {elapsed:.1f}s"
            assert "ReleaseLeader" not in out.stderr
            time.sleep(2.0)  # a few of the leader's cycles
            new_lines = leader.log_path.read_text()[len(log_before):]
            assert "ReleaseLeader" not in new_lines and "leader_rebind" not in new_lines
            assert leader.alive and call(client, leader, "GET", "/primary")[0] == 200
            assert leader.postmaster_pid() == pid
        except BaseException:
            dump_logs(c)
            raise
