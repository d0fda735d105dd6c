"""A cluster whose REST APIs require TLS client certificates and Basic credentials.

The members must still reach each other: a switchover is refused (412) unless the leader's
agent can read the candidate's ``/patroni`` over mutual TLS, so a 200 here shows the agents'
own peer calls present the cluster's certificate. Clients without a certificate are refused
at the handshake; unsafe methods without credentials get 401.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from tests.support.cluster import dump_logs, new_cluster, wait_until

from pgha.cli.localcluster import MemberProc

pytestmark = pytest.mark.integration

USER, PASSWORD = "admin", "s3cret"


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
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = (tmp_path / "ca.pem", tmp_path / "cert.pem",
                                    tmp_path / "key.pem")
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    client = ssl.create_default_context(cafile=str(ca_file))
    client.load_cert_chain(str(cert_file), str(key_file))
    anonymous = ssl.create_default_context(cafile=str(ca_file))

    c = new_cluster(tmp_path / "c")
    with c:
        for m in c.procs.values():
            cfg = yaml.safe_load(m.config_path.read_text())
            cfg["restapi"].update({
                "certfile": str(cert_file), "keyfile": str(key_file), "cafile": str(ca_file),
                "verify_client": "required",
                "authentication": {"username": USER, "password": PASSWORD}})
            m.config_path.write_text(yaml.safe_dump(cfg))
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

            target = others[0]
            code, text = call(client, leader, "POST", "/switchover",
                              {"leader": leader.name, "candidate": target.name})
            assert code == 200, text
            assert wait_until(primary, 60, "the new primary").name == target.name
        except BaseException:
            dump_logs(c)
            raise
