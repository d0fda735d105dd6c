"""REST API served inside the agent's event loop (aiohttp AppRunner + TCPSite).

Handlers only read the agent's latest published :class:`pgha.status.AgentStatus`; they never
touch the DCS or PostgreSQL. Health checks answer 200 when their condition holds and 503
otherwise, with the status JSON as body; HEAD and OPTIONS give the code only. Any other GET path
answers 503 with the status JSON, as Patroni does.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from aiohttp import web

from pgha.api.checks import HEALTH_CHECKS, cluster_json
from pgha.api.metrics import CONTENT_TYPE, render_metrics
from pgha.commands import Command, Outcome
from pgha.metrics import AgentMetrics
from pgha.status import AgentStatus

if TYPE_CHECKING:
    from pgha.config import Config

log = logging.getLogger("pgha.api")


class StatusSource(Protocol):
    status: AgentStatus
    metrics: AgentMetrics  # pgha's own metrics, rendered by GET /metrics

    def accept_failsafe(self, name: str) -> tuple[int, str]: ...

    async def submit(self, command: Command) -> Outcome:
        """Carry out an operator command (see :mod:`pgha.commands` for the codes)."""
        ...


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def build_app(source: StatusSource) -> web.Application:
    """The aiohttp application; ``source.status`` is read on every request."""

    def health(check: Callable[[AgentStatus, web.Request], bool]) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            status = source.status
            code = 200 if check(status, request) else 503
            if request.method in ("HEAD", "OPTIONS"):
                return web.Response(status=code)
            return web.json_response(status.to_patroni_json(), status=code, dumps=_dumps)

        return handler

    async def patroni(request: web.Request) -> web.StreamResponse:
        if request.method in ("HEAD", "OPTIONS"):
            return web.Response(status=200)
        return web.json_response(source.status.to_patroni_json(), dumps=_dumps)

    async def cluster(request: web.Request) -> web.StreamResponse:
        status = source.status
        if status.view is None:
            return web.json_response({"members": [], "scope": status.scope}, status=503)
        return web.json_response(cluster_json(status.view, status.scope), dumps=_dumps)

    async def failsafe_get(request: web.Request) -> web.StreamResponse:
        view = source.status.view
        if view is None or not view.settings.failsafe_mode:
            return web.Response(status=502, text="failsafe_mode is off")
        return web.json_response(dict(view.failsafe or {}), dumps=_dumps)

    async def failsafe_post(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=400, text="body must be JSON")
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            return web.Response(status=400, text="body must name the primary: {\"name\": ...}")
        code, text = source.accept_failsafe(name)
        return web.Response(status=code, text=text)

    async def metrics(request: web.Request) -> web.StreamResponse:
        body = render_metrics(source.status, source.metrics)
        return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})

    async def unknown(request: web.Request) -> web.StreamResponse:
        if request.method in ("HEAD", "OPTIONS"):
            return web.Response(status=503)
        return web.json_response(source.status.to_patroni_json(), status=503, dumps=_dumps)

    app = web.Application()
    for path, check in HEALTH_CHECKS.items():
        handler = health(check)
        app.router.add_get(path, handler)  # also answers HEAD
        app.router.add_route("OPTIONS", path, handler)
    app.router.add_get("/patroni", patroni)
    app.router.add_route("OPTIONS", "/patroni", patroni)
    app.router.add_get("/cluster", cluster)
    app.router.add_get("/failsafe", failsafe_get)
    app.router.add_post("/failsafe", failsafe_post)
    app.router.add_get("/metrics", metrics)
    app.router.add_route("*", "/{tail:.*}", unknown)
    return app


class ApiServer:
    """Async context manager that serves the API on ``restapi.listen`` while entered."""

    def __init__(self, source: StatusSource, config: Config) -> None:
        self.source = source
        self.host = config.restapi.listen_host
        self.port = config.restapi.listen_port
        self.ssl_context: ssl.SSLContext | None = None
        if config.restapi.certfile:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(config.restapi.certfile, config.restapi.keyfile)
            self.ssl_context = ctx
        self.runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        self.runner = web.AppRunner(build_app(self.source), access_log=None,
                                    handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port, ssl_context=self.ssl_context,
                           reuse_address=True)
        await site.start()
        log.info("REST API listening on %s:%s", self.host, self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
