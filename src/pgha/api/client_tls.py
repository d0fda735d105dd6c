"""Client-side TLS and credentials for calls to members' REST APIs, shared by the agent (peer
status and failsafe calls) and the CLI.

- TLS: CA file ``ctl.cacert`` (else ``restapi.cafile``), client certificate ``ctl.certfile`` /
  ``ctl.keyfile`` (else ``restapi.certfile``/``keyfile`` when ``restapi.verify_client`` is set,
  so members that demand client certificates accept each other), no verification with
  ``ctl.insecure: true`` (or the CLI's ``-k``).
- Credentials for unsafe methods: ``ctl.authentication`` {username, password} when present,
  else ``restapi.authentication`` (the CLI; the agent sends its ``restapi.authentication``).
- Which request carries them (:class:`PeerAuth`, :func:`send`): unsafe methods always; safe
  ones (GET) only to a peer (scheme, host and port) that answered a GET without them with 401,
  retried once with them, and from then on sent with them. Credentials going over plain http
  are logged as a WARNING naming the URL, once per peer per process.

Unreadable certificate or key files raise OSError / ssl.SSLError.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:  # the callers hold aiohttp; the operator commands import it only to send
    import aiohttp

from pgha.config import ClusterAccess

log = logging.getLogger("pgha.api.client")

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_CLEARTEXT_WARNED: set[str] = set()  # peers already warned about, for the whole process


def peer_of(url: str) -> str:
    """``scheme://host:port`` of ``url`` (lower case): what credentials are remembered and
    warned about by."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class PeerAuth:
    """Decides which requests carry the Basic ``Authorization`` value ``header`` (None: no
    credentials configured, nothing is ever sent). State owned: the peers that demanded
    credentials for a GET (kept for the life of the object)."""

    def __init__(self, header: str | None) -> None:
        self.header = header
        self._needs_auth: set[str] = set()

    def headers(self, method: str, url: str) -> dict[str, str]:
        """The headers of a request: credentials for an unsafe ``method`` or a peer known to
        demand them, else none. Sending them over http logs the clear-text warning."""
        if self.header is None or (method.upper() not in UNSAFE
                                   and peer_of(url) not in self._needs_auth):
            return {}
        if urlsplit(url).scheme.lower() != "https":
            warn_cleartext(url)
        return {"Authorization": self.header}

    def retry(self, method: str, url: str, status: int, sent: dict[str, str]) -> bool:
        """Whether to repeat a request that got ``status`` with credentials: a 401 to a
        request ``sent`` without them when credentials exist; the peer is then remembered."""
        if status != 401 or self.header is None or "Authorization" in sent:
            return False
        self._needs_auth.add(peer_of(url))
        log.info("%s answered %s %s with 401: sending credentials to it from now on",
                 peer_of(url), method.upper(), urlsplit(url).path or "/")
        return True


def warn_cleartext(url: str) -> None:
    """Log, once per peer per process, that credentials go to ``url`` unencrypted."""
    peer = peer_of(url)
    if peer in _CLEARTEXT_WARNED:
        return
    _CLEARTEXT_WARNED.add(peer)
    log.warning("sending REST credentials in clear text to %s; configure restapi TLS", url)


async def send(session: aiohttp.ClientSession, auth: PeerAuth, method: str, url: str, *,
               timeout: float, body: Any = None) -> tuple[int, bytes]:
    """``method`` ``url`` with an optional JSON ``body`` and the credentials ``auth`` decides,
    repeated once with them after a 401 (:meth:`PeerAuth.retry`); the (status, body) of the
    last answer. Both attempts together are bounded by ``timeout``; raises TimeoutError,
    aiohttp.ClientError or ssl.SSLError when there is no answer."""
    method = method.upper()
    async with asyncio.timeout(timeout):
        headers = auth.headers(method, url)
        async with session.request(method, url, json=body, headers=headers) as resp:
            status, data = resp.status, await resp.read()
        if auth.retry(method, url, status, headers):
            async with session.request(method, url, json=body,
                                       headers=auth.headers(method, url)) as resp:
                status, data = resp.status, await resp.read()
    return status, data


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
