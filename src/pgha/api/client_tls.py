"""Client-side TLS and credentials for calls to members' REST APIs, shared by the agent (peer
status and failsafe calls) and the CLI.

- TLS: CA file ``ctl.cacert`` (else ``restapi.cafile``), client certificate ``ctl.certfile`` /
  ``ctl.keyfile`` (else ``restapi.certfile``/``keyfile`` when ``restapi.verify_client`` is set,
  so members that demand client certificates accept each other), no verification with
  ``ctl.insecure: true`` (or the CLI's ``-k``).
- Credentials for unsafe methods: ``ctl.authentication`` {username, password} when present,
  else ``restapi.authentication``.

Unreadable certificate or key files raise OSError / ssl.SSLError.
"""

from __future__ import annotations

import base64
import ssl
from typing import Any

from pgha.config import ClusterAccess


def _ctl(config: ClusterAccess) -> dict[str, Any]:
    return dict(config.ctl or {})


def basic_auth(username: str, password: str) -> str:
    """The ``Authorization`` header value for HTTP Basic (UTF-8 credentials)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def credentials(config: ClusterAccess) -> str | None:
    """The Basic ``Authorization`` header for unsafe methods: ``ctl.authentication`` first,
    then ``restapi.authentication``; None when neither is set."""
    auth = _ctl(config).get("authentication")
    if isinstance(auth, dict) and auth.get("username") is not None:
        return basic_auth(str(auth["username"]), str(auth.get("password") or ""))
    rest = config.restapi.authentication
    if rest is not None:
        return basic_auth(rest.username, rest.password)
    return None


def ssl_context(config: ClusterAccess, insecure: bool = False) -> ssl.SSLContext:
    """The client TLS context from the ``ctl`` section (see the module docstring)."""
    ctl = _ctl(config)
    cafile = ctl.get("cacert") or config.restapi.cafile
    ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
    if insecure or bool(ctl.get("insecure", False)):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    certfile, keyfile, password = ctl.get("certfile"), ctl.get("keyfile"), \
        ctl.get("keyfile_password")
    if not certfile and config.restapi.verify_client in ("optional", "required"):
        certfile, keyfile, password = (config.restapi.certfile, config.restapi.keyfile,
                                       config.restapi.keyfile_password)
    if certfile:
        ctx.load_cert_chain(certfile, keyfile or None, password)
    return ctx
