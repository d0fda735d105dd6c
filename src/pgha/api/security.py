"""Access control of the unsafe methods and the server's TLS context.

Contract of :meth:`AccessGuard.check` (called for every POST/PUT/PATCH/DELETE, never for GET),
in this order, the first failure answering at once:

1. ``restapi.allowlist`` (IPs, CIDRs, host names) plus, with ``allowlist_include_members``, the
   hosts of the members' ``api_url`` in the last DCS view: a client address outside it gets
   403 ``Access is denied``. Neither configured = everyone passes. Routes that peers call
   (``POST /failsafe``, ``allowlist=False`` in the route table) also admit every member of
   the cluster, ``allowlist_include_members`` or not: the hosts of each member's ``api_url``
   and ``conn_url`` in the last DCS view and of the ``api_url`` in its ``failsafe`` key (a
   primary cut off from the DCS must reach its replicas); anyone else outside the list still
   gets 403. (Patroni only leaves the members out of that check.)
2. Over HTTPS with ``verify_client`` optional or required: no verified client certificate
   gets 403 ``client certificate required`` (with ``required`` the TLS handshake already
   refuses clients without one).
3. ``restapi.authentication``: missing or wrong HTTP Basic credentials get 401 with
   ``WWW-Authenticate: Basic realm="pgha"``. Credentials are compared in constant time.

Host names are resolved with a timeout (:data:`RESOLVE_TIMEOUT`) and cached for
:data:`RESOLVE_TTL` seconds (failures for a tenth of that); a name that cannot be resolved
admits nobody.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from aiohttp import web

from pgha.config.models import RestApiConfig
from pgha.core.model import ClusterView

log = logging.getLogger("pgha.api")

RESOLVE_TIMEOUT = 2.0
RESOLVE_TTL = 60.0
REALM = "pgha"

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve = Callable[[str], Awaitable[list[str]]]


async def _getaddrinfo(host: str) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _address(text: str | None) -> IpAddress | None:
    if not text:
        return None
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class HostResolver:
    """Host name -> addresses, each lookup bounded by :data:`RESOLVE_TIMEOUT` and cached."""

    def __init__(self, resolve: Resolve = _getaddrinfo) -> None:
        self._resolve = resolve
        self._cache: dict[str, tuple[float, frozenset[IpAddress]]] = {}

    async def addresses(self, host: str) -> frozenset[IpAddress]:
        now = time.monotonic()
        hit = self._cache.get(host)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                found = await self._resolve(host)
            addrs = frozenset(a for a in map(_address, found) if a is not None)
            ttl = RESOLVE_TTL
        except (OSError, TimeoutError) as exc:
            log.warning("allowlist: cannot resolve %r: %s", host, exc or "timed out")
            addrs, ttl = frozenset(), RESOLVE_TTL / 10
        self._cache[host] = (now + ttl, addrs)
        return addrs


class Allowlist:
    """``restapi.allowlist`` entries split into networks and host names."""

    def __init__(self, entries: Iterable[str], include_members: bool,
                 resolver: HostResolver) -> None:
        self.networks: list[IpNetwork] = []
        self.hosts: list[str] = []
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.append(entry)
        self.include_members = include_members
        self.resolver = resolver

    @property
    def active(self) -> bool:
        return bool(self.networks or self.hosts or self.include_members)

    async def admits(self, remote: str | None, view: ClusterView | None, *,
                     members: bool = False) -> bool:
        """Whether client address ``remote`` is in the list (members' ``api_url`` hosts from
        ``view`` with ``include_members``); with ``members``, every host :func:`member_hosts`
        names in ``view`` passes too."""
        addr = _address(remote)
        if addr is None:
            return False
        if any(addr in net for net in self.networks):
            return True
        hosts = list(self.hosts)
        if view is not None and (self.include_members or members):
            hosts.extend(member_hosts(view, every_url=members))
        for host in dict.fromkeys(hosts):
            literal = _address(host)
            if literal is not None:
                if literal == addr:
                    return True
            elif addr in await self.resolver.addresses(host):
                return True
        return False


def _host(url: str | None) -> str | None:
    try:
        return urlsplit(url).hostname if url else None
    except ValueError:
        return None


def member_hosts(view: ClusterView, *, every_url: bool = False) -> list[str]:
    """The hosts of the members' ``api_url`` in ``view``; with ``every_url`` also of their
    ``conn_url`` and of the ``api_url`` values in the ``failsafe`` key. Unparsable URLs are
    left out."""
    urls = [m.api_url for m in view.members.values()]
    if every_url:
        urls += [m.conn_url for m in view.members.values()]
        urls += list((view.failsafe or {}).values())
    return [h for h in map(_host, urls) if h]


class AccessGuard:
    """Checks one unsafe request (see the module docstring); ``view`` gives the last DCS view
    for ``allowlist_include_members``."""

    def __init__(self, restapi: RestApiConfig | None, view: Callable[[], ClusterView | None],
                 resolver: HostResolver | None = None) -> None:
        self.view = view
        self.resolver = resolver or HostResolver()
        self.configure(restapi)

    def configure(self, restapi: RestApiConfig | None) -> None:
        """Use the allowlist, client-certificate rule and credentials of ``restapi`` from the
        next request on (a configuration reload; requests never see a mix of both)."""
        self.allowlist = Allowlist(restapi.allowlist if restapi else [],
                                   bool(restapi and restapi.allowlist_include_members),
                                   self.resolver)
        self.tls = bool(restapi and restapi.certfile)
        self.need_cert = self.tls and bool(
            restapi and restapi.verify_client in ("optional", "required"))
        auth = restapi.authentication if restapi else None
        self.credentials = f"{auth.username}:{auth.password}".encode() if auth else None

    async def check(self, request: web.Request, *, allowlist: bool = True) -> web.Response | None:
        """None when the request may proceed, else the 401/403 answer to send.
        ``allowlist=False`` (routes peers call): every member of the cluster passes the
        allowlist too (step 1 of the module docstring); the other steps are the same."""
        # one configuration for the whole check, even if a reload lands while we resolve
        allowed, need_cert, credentials = self.allowlist, self.need_cert, self.credentials
        if allowed.active and not await allowed.admits(request.remote, self.view(),
                                                       members=not allowlist):
            return web.Response(status=403, text="Access is denied")
        if need_cert:
            transport = request.transport
            cert = transport.get_extra_info("peercert") if transport is not None else None
            if not cert:
                return web.Response(status=403, text="client certificate required")
        if credentials is not None and not self._authorized(request, credentials):
            return web.Response(status=401, text="authentication required",
                                headers={"WWW-Authenticate": f'Basic realm="{REALM}"'})
        return None

    @staticmethod
    def _authorized(request: web.Request, credentials: bytes) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, credentials)


def server_ssl_context(restapi: RestApiConfig) -> ssl.SSLContext | None:
    """TLS context for the server, None without ``certfile``. ``cafile`` verifies client
    certificates; ``verify_client``: ``required`` refuses the handshake without a valid client
    certificate, ``optional`` verifies one when offered (unsafe methods then require it),
    ``none``/unset never asks. ``ciphers`` (OpenSSL cipher-list syntax) replaces the ciphers
    offered for TLS 1.2 and older; as with any ``ssl.SSLContext.set_ciphers``, the TLS 1.3
    cipher suites stay OpenSSL's defaults (Python has no setting for them); ``ssl.SSLError``
    when it selects none."""
    if not restapi.certfile:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=restapi.cafile)
    if restapi.ciphers:
        ctx.set_ciphers(restapi.ciphers)
    ctx.load_cert_chain(restapi.certfile, restapi.keyfile, password=restapi.keyfile_password)
    ctx.verify_mode = {"required": ssl.CERT_REQUIRED,
                       "optional": ssl.CERT_OPTIONAL}.get(restapi.verify_client or "none",
                                                          ssl.CERT_NONE)
    return ctx
