"""ZooKeeperStore over TLS with an encrypted client key (``zookeeper.key_password``) and an
x509 ACL (``zookeeper.set_acls`` in Patroni's own shape, ``CN=...: [ALL]``) against a real
ZooKeeper 3.8 requiring client certificates.

Certificates (trustme CA, RSA): the server's, and a client certificate whose subject is just
``CN=pgha-client``, its key PKCS#8-encrypted with a password. With the right ``key_password``
the store works and its znodes carry the x509 ACL; a wrong one fails (DCSError, the key cannot
be loaded); a plain, unauthenticated client can read nothing the store created.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kazoo.exceptions as kx
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from kazoo.client import KazooClient
from tests.support.zookeeper import ZooKeeperServer, zookeeper_unavailable

from pgha.dcs.base import DCSError
from pgha.dcs.store import ClusterStore
from pgha.dcs.zookeeper import ZooKeeperStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.skipif(zookeeper_unavailable(tls=True) is not None,
                       reason=str(zookeeper_unavailable(tls=True))),
]

CLIENT_DN = "CN=pgha-client"
KEY_PASSWORD = "k3y-pass"


def _pkcs8(pem: bytes, password: str | None = None) -> bytes:
    key = serialization.load_pem_private_key(pem, None)
    enc = (serialization.NoEncryption() if password is None
           else serialization.BestAvailableEncryption(password.encode()))
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def make_certs(d: Path) -> dict[str, Path]:
    """ca.pem, server.pem (PKCS#8 key + chain, as ZooKeeper's PEM key store wants),
    client.crt and client.key (encrypted with KEY_PASSWORD)."""
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    server = ca.issue_cert("127.0.0.1", "localhost", key_type=trustme.KeyType.RSA)
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    text = server.private_key_and_cert_chain_pem.bytes()
    key_pem = re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----"
                        rb"\n", text, re.S)
    assert key_pem is not None
    (d / "server.pem").write_bytes(text.replace(key_pem.group(0), _pkcs8(key_pem.group(0))))
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name.from_rfc4514_string(CLIENT_DN))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(ca_key, hashes.SHA256()))
    (d / "client.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "client.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(KEY_PASSWORD.encode())))
    return {n: d / n for n in ("ca.pem", "server.pem", "client.crt", "client.key")}


@pytest.fixture(scope="module")
def tls_zk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ZooKeeperServer, Any]]:
    certs = make_certs(tmp_path_factory.mktemp("zk-tls"))
    with ZooKeeperServer(tls=(certs["server.pem"], certs["ca.pem"])) as server:
        yield server, certs


def section(server: ZooKeeperServer, certs: Any, password: str) -> dict[str, Any]:
    return {"hosts": [f"127.0.0.1:{server.secure_port}"], "use_ssl": True,
            "cacert": str(certs["ca.pem"]), "cert": str(certs["client.crt"]),
            "key": str(certs["client.key"]), "key_password": password,
            "set_acls": {CLIENT_DN: ["ALL"]}}


async def test_encrypted_key_and_x509_acl(tls_zk: tuple[ZooKeeperServer, Any]) -> None:
    server, certs = tls_zk
    assert b"BEGIN ENCRYPTED PRIVATE KEY" in certs["client.key"].read_bytes()
    kv = ZooKeeperStore.from_config(section(server, certs, KEY_PASSWORD), ttl=4.0, timeout=5.0)
    scope = f"tls-{uuid.uuid4().hex[:8]}"
    await kv.connect()
    try:
        store = ClusterStore(kv, "/service/", scope, "pg1")
        assert await store.acquire_leader()
        await store.touch_member({"role": "primary"})
        view = await store.load()
        assert view.leader is not None and view.leader.name == "pg1" and "pg1" in view.members
        for key in ("leader", "members/pg1", ""):
            acl, _ = await asyncio.to_thread(kv._client.get_acls, store.key(key).rstrip("/"))
            assert [(a.id.scheme, a.id.id, a.perms) for a in acl] == [("x509", CLIENT_DN, 31)]
        plain = KazooClient(hosts=f"127.0.0.1:{server.port}")  # no TLS, no identity
        await asyncio.to_thread(plain.start, 10)
        try:
            with pytest.raises(kx.NoAuthError):
                await asyncio.to_thread(plain.get, store.key("leader"))
        finally:
            await asyncio.to_thread(plain.stop)
            await asyncio.to_thread(plain.close)
    finally:
        await kv.close()


async def test_wrong_key_password_fails(tls_zk: tuple[ZooKeeperServer, Any],
                                        caplog: pytest.LogCaptureFixture) -> None:
    server, certs = tls_zk
    kv = ZooKeeperStore.from_config(section(server, certs, "wrong"), ttl=4.0, timeout=2.0)
    try:
        with pytest.raises(DCSError):
            await kv.connect()
            await ClusterStore(kv, "/service/", "tls-wrong", "pg1").load()
    finally:
        await kv.close()
    # kazoo could not load the key (OpenSSL: "[SSL] PEM lib"), not some other failure
    assert any("PEM" in r.getMessage() for r in caplog.records), caplog.text[-2000:]
