"""REST API served inside the agent's event loop (aiohttp AppRunner on sockets it binds itself,
so that a configuration reload can change TLS settings and the listen address in place).

Contract: the router is generated from :data:`pgha.api.routes.ROUTES` (the same table the
OpenAPI document comes from); handlers (:mod:`pgha.api.handlers`) only read the agent's latest
published :class:`pgha.core.status.AgentStatus` and submit commands to it. Any path or method not in
the table answers 503 with the status JSON, as Patroni does. Unsafe methods pass the access
guard of :mod:`pgha.api.security`; GETs run no middleware. Every response gets the headers of
:mod:`pgha.api.headers`. The listening sockets' backlog is ``restapi.request_queue_size``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Self

from aiohttp import web

from pgha.api.handlers import Handlers, StatusSource
from pgha.api.headers import ResponseHeaders
from pgha.api.routes import ROUTES
from pgha.api.security import AccessGuard, HostResolver, server_ssl_context
from pgha.api.tls_files import SettingError, load_server_tls, server_digest
from pgha.config.models import RestApiConfig

if TYPE_CHECKING:
    from pgha.config import Config

__all__ = ["ApiReload", "ApiServer", "StatusSource", "build_app"]

log = logging.getLogger("pgha.api")


def build_app(source: StatusSource, restapi: RestApiConfig | None = None,
              resolver: HostResolver | None = None,
              guard: AccessGuard | None = None,
              headers: ResponseHeaders | None = None) -> web.Application:
    """The aiohttp application; ``source.status`` is read on every request. ``restapi``
    configures access control and response headers (none when omitted) unless ``guard`` /
    ``headers`` are given (the server passes its own, which a reload reconfigures);
    ``resolver`` resolves allowlist host names (tests pass a fake)."""
    guard = guard or AccessGuard(restapi, lambda: source.status.view, resolver)
    headers = headers or ResponseHeaders(restapi)
    handlers = Handlers(source, guard)
    app = web.Application()
    app.on_response_prepare.append(headers.on_prepare)
    for route in ROUTES:
        handler = handlers.for_route(route)
        for path in route.paths:
            if route.method == "GET":
                app.router.add_get(path, handler)  # also answers HEAD
            else:
                app.router.add_route(route.method, path, handler)
            if route.code_only:
                app.router.add_route("OPTIONS", path, handler)
    app.router.add_route("*", "/{tail:.*}", handlers.unknown)
    return app


async def bind(host: str, port: int) -> list[socket.socket]:
    """Bound (not yet listening) TCP sockets for ``host:port``, as asyncio's ``create_server``
    makes them: every address ``host`` resolves to (a wildcard ``""``/``*``: every interface),
    ``SO_REUSEADDR``, IPv6 sockets v6-only. OSError (nothing left open) when one cannot be
    bound."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(None if host in ("", "*") else host, port,
                                   family=socket.AF_UNSPEC, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


@dataclass(frozen=True)
class ApiReload:
    """What :meth:`ApiServer.reconfigure` did: new TLS settings (certificates, keys, CA,
    ``verify_client``, ``ciphers``) for new connections, a new listen address, a new listen
    backlog (``request_queue_size``)."""

    tls: bool = False
    rebound: bool = False
    backlog: bool = False


class ApiServer:
    """Async context manager that serves the API on ``restapi.listen`` while entered, over
    HTTPS when ``restapi.certfile`` is set (see :func:`server_ssl_context`).

    :meth:`reconfigure` applies a re-read ``restapi`` section to the running server (access
    control and response headers at once; TLS and the listen address for new connections,
    open connections keep theirs; the backlog of the listening sockets), or changes nothing
    and raises SettingError."""

    def __init__(self, source: StatusSource, config: Config,
                 resolver: HostResolver | None = None) -> None:
        self.source = source
        self.restapi = config.restapi
        self.ssl_context: ssl.SSLContext | None = server_ssl_context(config.restapi)
        self._tls_digest = server_digest(config.restapi)
        self.guard = AccessGuard(config.restapi, lambda: source.status.view, resolver)
        self.headers = ResponseHeaders(config.restapi)
        self.runner: web.AppRunner | None = None
        self._sites: list[tuple[web.SockSite, socket.socket]] = []

    @property
    def host(self) -> str:
        return self.restapi.listen_host

    @property
    def port(self) -> int:
        return self.restapi.listen_port

    async def __aenter__(self) -> Self:
        self.runner = web.AppRunner(build_app(self.source, guard=self.guard,
                                              headers=self.headers),
                                    access_log=None, handle_signals=False)
        await self.runner.setup()
        try:
            await self._serve(await bind(self.host, self.port), self.ssl_context,
                              self.restapi.request_queue_size)
        except BaseException:
            await self.runner.cleanup()
            raise
        self._log_listening()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        self._sites = []

    def _log_listening(self) -> None:
        log.info("REST API listening on %s://%s:%s", "https" if self.ssl_context else "http",
                 self.host, self.port)

    async def _serve(self, socks: list[socket.socket], context: ssl.SSLContext | None,
                     backlog: int) -> None:
        """Serve on ``socks`` (bound) with ``context``, listening with ``backlog``; then stop
        serving on the previous sockets (their open connections stay)."""
        assert self.runner is not None
        old, new = self._sites, []
        try:
            for sock in socks:
                site = web.SockSite(self.runner, sock, ssl_context=context, backlog=backlog)
                await site.start()
                new.append((site, sock))
        except BaseException:
            for site, _ in new:
                await site.stop()
            for sock in socks:
                sock.close()
            raise
        self._sites = new
        for site, _ in old:
            await site.stop()

    async def reconfigure(self, restapi: RestApiConfig) -> ApiReload:
        """Apply a re-read ``restapi`` section (see the class docstring). TLS files that
        changed on disk count as a change even under the same names. A new listen address is
        bound before the old one is closed; when the port is the same and the old socket is
        in the way (``0.0.0.0:8008`` -> ``10.0.0.5:8008``) the old one is closed first and
        bound again if the new one fails. SettingError names the key (``restapi.certfile``,
        ``restapi.listen``, ...) when nothing was changed."""
        tls = load_server_tls(restapi)
        tls_changed = tls.digest != self._tls_digest
        moved = (restapi.listen_host, restapi.listen_port) != (self.host, self.port)
        backlog = restapi.request_queue_size
        backlog_changed = backlog != self.restapi.request_queue_size
        if self.runner is not None and (moved or not self._sites):
            await self._rebind(restapi, tls.context)  # (no sites: an earlier rebind failed)
        elif self.runner is not None and (tls_changed or backlog_changed):
            # same address: serve the same listening sockets (duplicated) with the new
            # context and backlog, then close the old servers: no moment without a listener
            await self._serve([sock.dup() for _, sock in self._sites], tls.context, backlog)
        self.guard.configure(restapi)
        self.headers.configure(restapi)
        self.restapi, self.ssl_context, self._tls_digest = restapi, tls.context, tls.digest
        if moved or tls_changed:
            self._log_listening()
        return ApiReload(tls=tls_changed, rebound=moved, backlog=backlog_changed)

    async def _rebind(self, restapi: RestApiConfig, context: ssl.SSLContext | None) -> None:
        host, port, backlog = restapi.listen_host, restapi.listen_port, restapi.request_queue_size
        try:
            socks = await bind(host, port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or port != self.port:
                raise SettingError("restapi.listen", f"cannot listen on {restapi.listen}: "
                                   f"{exc.strerror or exc}") from None
        else:
            await self._serve(socks, context, backlog)
            return
        old_context = self.ssl_context
        for site, _ in self._sites:
            await site.stop()
        self._sites = []
        try:
            socks = await bind(host, port)
        except OSError as exc:
            error = SettingError("restapi.listen", f"cannot listen on {restapi.listen}: "
                                 f"{exc.strerror or exc}")
            try:
                await self._serve(await bind(self.host, self.port), old_context,
                                  self.restapi.request_queue_size)
            except OSError as again:
                log.critical("REST API: cannot listen on %s again either: %s; it stays "
                             "down until a reload or restart succeeds", self.restapi.listen,
                             again.strerror or again)
            raise error from None
        await self._serve(socks, context, backlog)
