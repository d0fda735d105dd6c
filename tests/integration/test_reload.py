"""SIGHUP and ``POST /reload`` on a live agent: a rotated REST API certificate (same CA, same
file names, new serial) and a new REST password take effect for new connections without a
restart (same agent pid); a reload with a missing certificate keeps the running settings and
says which key is wrong."""

from __future__ import annotations

import base64
import os
import signal
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import trustme
import yaml
from cryptography import x509
from tests.support.cluster import dump_logs, new_cluster, wait_until

from pgha.cli.localcluster import MemberProc

pytestmark = pytest.mark.integration

USER = "admin"


def issue(ca: trustme.CA, folder: Path) -> int:
    """Write a new server certificate and key for 127.0.0.1 over ``cert.pem``/``key.pem``;
    return its serial number."""
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    (folder / "cert.pem").write_bytes(leaf.cert_chain_pems[0].bytes())
    (folder / "key.pem").write_bytes(leaf.private_key_pem.bytes())
    return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number


def served_serial(ctx: ssl.SSLContext, m: MemberProc) -> int:
    """The serial number of the certificate a new connection to the member's API is shown."""
    with socket.create_connection(("127.0.0.1", m.api_port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def call(ctx: ssl.SSLContext, m: MemberProc, method: str, path: str,
         password: str | None = None) -> int:
    headers = {}
    if password is not None:
        token = base64.b64encode(f"{USER}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    req = urllib.request.Request(f"https://127.0.0.1:{m.api_port}{path}", method=method,
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


def reload_lines(m: MemberProc, start: str) -> list[str]:
    """The agent's log lines whose message starts with ``start``."""
    return [line for line in m.log_path.read_text().splitlines()
            if line.partition(": ")[2].startswith(start)]


def set_restapi(m: MemberProc, **restapi: object) -> None:
    cfg = yaml.safe_load(m.config_path.read_text())
    cfg["restapi"].update(restapi)
    m.config_path.write_text(yaml.safe_dump(cfg))


def test_sighup_rotates_certificate_and_password_without_a_restart(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(pki / "ca.pem"))
    first = issue(ca, pki)
    client = ssl.create_default_context(cafile=str(pki / "ca.pem"))

    c = new_cluster(tmp_path / "c", members=1)
    with c:
        (m,) = c.procs.values()
        set_restapi(m, certfile=str(pki / "cert.pem"), keyfile=str(pki / "key.pem"),
                    cafile=str(pki / "ca.pem"),
                    authentication={"username": USER, "password": "old-pass"})
        c.start_all()
        try:
            assert m.proc is not None
            pid = m.proc.pid
            wait_until(lambda: call(client, m, "GET", "/primary") == 200, 120, "a primary")
            assert served_serial(client, m) == first
            assert call(client, m, "POST", "/reload", "old-pass") == 202
            wait_until(lambda: reload_lines(m, "reload: no change"), 30, "the API's reload")

            # rotate: new certificate under the same names, new password; then SIGHUP
            second = issue(ca, pki)
            assert second != first
            set_restapi(m, authentication={"username": USER, "password": "new-pass"})
            os.kill(pid, signal.SIGHUP)
            wait_until(lambda: reload_lines(m, "reload: applied:"), 30, "SIGHUP's reload")
            assert served_serial(client, m) == second
            assert call(client, m, "POST", "/reload", "old-pass") == 401
            assert call(client, m, "POST", "/reload", "new-pass") == 202
            assert call(client, m, "GET", "/primary") == 200
            assert m.alive and m.proc.pid == pid  # no restart
            (applied,) = reload_lines(m, "reload: applied:")
            assert "restapi.authentication" in applied
            assert "server TLS for new connections" in applied

            # a broken reload (missing certificate) keeps the running settings
            set_restapi(m, certfile=str(pki / "gone.pem"),
                        authentication={"username": USER, "password": "third-pass"})
            assert call(client, m, "POST", "/reload", "new-pass") == 202
            (rejected,) = wait_until(lambda: reload_lines(m, "reload: restapi.certfile:"), 30,
                                     "the rejected reload in the log")
            assert "cannot read" in rejected and "keeping the running configuration" in rejected
            assert served_serial(client, m) == second
            assert call(client, m, "POST", "/reload", "third-pass") == 401
            assert call(client, m, "GET", "/primary") == 200
            assert m.alive and m.proc.pid == pid
        except BaseException:
            dump_logs(c)
            raise
