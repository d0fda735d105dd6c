"""REST API served inside the agent's event loop (aiohttp AppRunner + TCPSite).

Contract: the router is generated from :data:`pgha.api.routes.ROUTES` (the same table the
OpenAPI document comes from); handlers (:mod:`pgha.api.handlers`) only read the agent's latest
published :class:`pgha.core.status.AgentStatus` and submit commands to it. Any path or method not in
the table answers 503 with the status JSON, as Patroni does. Unsafe methods pass the access
guard of :mod:`pgha.api.security`; GETs run no middleware.
"""

from __future__ import annotations

import logging
import ssl
from types import TracebackType
from typing import TYPE_CHECKING, Self

from aiohttp import web

from pgha.api.handlers import Handlers, StatusSource
from pgha.api.routes import ROUTES
from pgha.api.security import AccessGuard, HostResolver, server_ssl_context
from pgha.config.models import RestApiConfig

if TYPE_CHECKING:
    from pgha.config import Config

__all__ = ["ApiServer", "StatusSource", "build_app"]

log = logging.getLogger("pgha.api")


def build_app(source: StatusSource, restapi: RestApiConfig | None = None,
              resolver: HostResolver | None = None) -> web.Application:
    """The aiohttp application; ``source.status`` is read on every request. ``restapi``
    configures access control (none when omitted); ``resolver`` resolves allowlist host
    names (tests pass a fake)."""
    guard = AccessGuard(restapi, lambda: source.status.view, resolver)
    handlers = Handlers(source, guard)
    app = web.Application()
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


class ApiServer:
    """Async context manager that serves the API on ``restapi.listen`` while entered, over
    HTTPS when ``restapi.certfile`` is set (see :func:`server_ssl_context`)."""

    def __init__(self, source: StatusSource, config: Config) -> None:
        self.source = source
        self.restapi = config.restapi
        self.host = config.restapi.listen_host
        self.port = config.restapi.listen_port
        self.ssl_context: ssl.SSLContext | None = server_ssl_context(config.restapi)
        self.runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        self.runner = web.AppRunner(build_app(self.source, self.restapi), access_log=None,
                                    handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port, ssl_context=self.ssl_context,
                           reuse_address=True)
        await site.start()
        log.info("REST API listening on %s://%s:%s", "https" if self.ssl_context else "http",
                 self.host, self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
