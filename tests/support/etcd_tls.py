"""An etcd member serving clients over TLS, optionally with client-certificate authentication
(``--client-cert-auth``), with a throwaway CA and certificates made by ``openssl``, and a helper
enabling etcd authentication (root user) through the JSON gateway."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.etcd import ETCD_BIN, EtcdServer


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(directory: Path) -> dict[str, str]:
    """CA, server (127.0.0.1/localhost) and client certificates in ``directory``."""
    d = directory
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=pgha-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                               "extendedKeyUsage=serverAuth,clientAuth\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=pgha-{name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", f"{name}.pem",
                 cwd=d)
    return {k: str(d / v) for k, v in {
        "cacert": "ca.pem", "cert": "client.pem", "key": "client.key",
        "server_cert": "server.pem", "server_key": "server.key"}.items()}


class EtcdTlsServer(EtcdServer):
    """One etcd member on ``https://127.0.0.1:<port>`` requiring a client certificate. The
    simple auth tokens it issues expire after ``token_ttl`` seconds."""

    def __init__(self, token_ttl: int = 300, client_cert_auth: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.token_ttl = token_ttl
        self.client_cert_auth = client_cert_auth
        self.certs = make_certs(self.base_dir)

    @property
    def client_url(self) -> str:
        return f"https://127.0.0.1:{self.client_port}"

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.certs["cacert"])
        context.load_cert_chain(self.certs["cert"], self.certs["key"])
        return context

    def spawn(self) -> None:
        if self.running:
            return
        args = [
            ETCD_BIN, "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", self.cluster_token,
            "--cert-file", self.certs["server_cert"], "--key-file", self.certs["server_key"],
            "--auth-token", "simple", "--auth-token-ttl", str(self.token_ttl),
        ]  # fmt: skip
        if self.client_cert_auth:
            args += ["--trusted-ca-file", self.certs["cacert"], "--client-cert-auth"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=1,
                                        context=self.ssl_context()) as resp:
                return b'"true"' in resp.read()
        except OSError:
            return False

    def post(self, path: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = token
        request = urllib.request.Request(f"{self.client_url}{path}", json.dumps(body).encode(),
                                         headers)
        with urllib.request.urlopen(request, timeout=5, context=self.ssl_context()) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result

    def enable_auth(self, user: str, password: str) -> None:
        """Create ``user`` with the root role and enable authentication."""
        self.post("/v3/auth/role/add", {"name": "root"})
        self.post("/v3/auth/user/add", {"name": user, "password": password})
        self.post("/v3/auth/user/grant", {"user": user, "role": "root"})
        self.post("/v3/auth/enable", {})


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
