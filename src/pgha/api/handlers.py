"""Request handlers: read the agent's last published status, or parse a body into a command
and hand it to the agent.

Contract: handlers never touch the DCS or PostgreSQL. Health checks and ``/patroni`` serialize
the status JSON once per status object (:class:`StatusJson`), so a GET costs one condition
check and one response. Unsafe routes pass :class:`pgha.api.security.AccessGuard` first, then
read the body (within :data:`BODY_TIMEOUT`), parse it (400 with the reason, nothing submitted)
and answer the agent's :class:`pgha.core.commands.Outcome` as is: JSON when ``data`` is not None,
else ``message`` as text. An agent that does not answer within :func:`submit_timeout` gets
503; the command keeps running in the agent.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from aiohttp import web

from pgha.api import bodies
from pgha.api.checks import Check
from pgha.api.cluster import cluster_json, history_json
from pgha.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from pgha.api.metrics import MetricsSource, render_metrics
from pgha.api.routes import Route
from pgha.api.security import AccessGuard
from pgha.core.commands import CancelRestart, CancelSwitchover, Command, Outcome, Reload
from pgha.core.status import AgentStatus

log = logging.getLogger("pgha.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Parser = Callable[[bytes], Command]

BODY_TIMEOUT = 10.0
CODE_ONLY = frozenset({"HEAD", "OPTIONS"})


class StatusSource(Protocol):
    """What the API needs from the agent."""

    @property
    def status(self) -> AgentStatus:
        """The latest published status (replaced, never mutated)."""
        ...

    @property
    def metrics(self) -> MetricsSource | None:
        """pgha's own metrics, rendered by GET /metrics (None: only Patroni's gauges)."""
        ...

    async def live_status(self) -> AgentStatus:
        """The published status with PostgreSQL's WAL positions read now (``GET /patroni``,
        which peers compare in a leader race)."""
        ...

    def accept_failsafe(self, name: str,
                        slots: Mapping[str, int] | None = None) -> tuple[int, str]: ...

    def discarded_reports(self) -> Sequence[Mapping[str, Any]]:
        """What rewinds and re-clones of this member threw away (in memory; see
        :mod:`pgha.pg.waldump` for the report), oldest first."""
        ...

    def decisions(self, limit: int | None = None) -> Sequence[Mapping[str, Any]]:
        """The agent's recent decision records as JSON objects, oldest first; the newest
        ``limit`` of them when given (see :mod:`pgha.agent.decisions`)."""
        ...

    async def submit(self, command: Command) -> Outcome:
        """Carry out an operator command (see :mod:`pgha.core.commands` for the codes)."""
        ...


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def submit_timeout(status: AgentStatus) -> float:
    """How long to wait for the agent: a switchover may wait ``2 * max(10, loop_wait)`` after
    a decision cycle of up to ``loop_wait``; twice that, and at least a minute."""
    loop_wait = status.view.settings.loop_wait if status.view is not None else 10.0
    return max(60.0, 6 * max(10.0, loop_wait))


class StatusJson:
    """The status JSON as bytes, serialized once per (immutable) status object."""

    __slots__ = ("_body", "_status")

    def __init__(self) -> None:
        self._status: AgentStatus | None = None
        self._body = b""

    def body(self, status: AgentStatus) -> bytes:
        if status is not self._status:
            self._body = dumps(status.to_patroni_json()).encode()
            self._status = status
        return self._body


def _answer(outcome: Outcome) -> web.Response:
    if outcome.data is not None:
        return web.json_response(outcome.data, status=outcome.code, dumps=dumps)
    return web.Response(status=outcome.code, text=outcome.message)


def _retrieve(task: asyncio.Future[Outcome]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("API command failed in the agent", exc_info=task.exception())


class Handlers:
    """The handler table for :data:`pgha.api.routes.ROUTES` over one status source."""

    def __init__(self, source: StatusSource, guard: AccessGuard) -> None:
        self.source = source
        self.guard = guard
        self.json = StatusJson()
        self._openapi_body: bytes | None = None  # built on the first request
        self.table: dict[str, Handler] = {
            "patroni": self.patroni,
            "cluster": self.cluster,
            "history": self.history,
            "decisions": self.decisions,
            "config_get": self.config_get,
            "failsafe_get": self.failsafe_get,
            "openapi": self.openapi,
            "metrics": self.metrics,
            "failsafe_post": self.failsafe_post,
            "config_patch": self.command(self._parse_patch),
            "config_put": self.command(bodies.parse_replace_config),
            "switchover": self.command(lambda raw: bodies.parse_switchover(raw)),
            "failover": self.command(bodies.parse_failover),
            "restart": self.command(lambda raw: bodies.parse_restart(raw)),
            "reinitialize": self.command(bodies.parse_reinitialize),
            "switchover_delete": self.command(lambda raw: CancelSwitchover(), body=False),
            "restart_delete": self.command(lambda raw: CancelRestart(), body=False),
            "reload": self.command(lambda raw: Reload(), body=False),
        }

    def for_route(self, route: Route) -> Handler:
        """The handler of ``route``, behind the access guard when the method is unsafe."""
        if route.handler == "health":
            if route.check is None:
                raise ValueError(f"health route {route.paths} has no check")
            inner = self.health(route.check)
        else:
            inner = self.table[route.handler]
        if not route.unsafe:
            return inner
        guard, allowlist = self.guard, route.allowlist

        async def guarded(request: web.Request) -> web.StreamResponse:
            denied = await guard.check(request, allowlist=allowlist)
            return denied if denied is not None else await inner(request)

        return guarded

    # ------------------------------------------------------------------ reads

    def health(self, check: Check) -> Handler:
        source, cache = self.source, self.json

        async def handler(request: web.Request) -> web.StreamResponse:
            status = source.status
            code = 200 if check(status, request) else 503
            if request.method in CODE_ONLY:
                return web.Response(status=code)
            return web.Response(body=cache.body(status), status=code,
                                content_type="application/json")

        return handler

    async def patroni(self, request: web.Request) -> web.StreamResponse:
        if request.method in CODE_ONLY:
            return web.Response(status=200)
        return web.Response(body=self.json.body(await self.source.live_status()),
                            content_type="application/json")

    async def unknown(self, request: web.Request) -> web.StreamResponse:
        """Any path or method not in the table: 503 with the status JSON, as Patroni does."""
        if request.method in CODE_ONLY:
            return web.Response(status=503)
        return web.Response(body=self.json.body(self.source.status), status=503,
                            content_type="application/json")

    async def cluster(self, request: web.Request) -> web.StreamResponse:
        status = self.source.status
        if status.view is None:
            return web.json_response({"members": [], "scope": status.scope}, status=503,
                                     dumps=dumps)
        return web.json_response(cluster_json(status.view, status.scope, status), dumps=dumps)

    async def history(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            history_json(self.source.status.view, self.source.discarded_reports()), dumps=dumps)

    async def decisions(self, request: web.Request) -> web.StreamResponse:
        raw = request.query.get("limit")
        limit = None
        if raw is not None:
            limit = int(raw) if raw.isascii() and raw.isdigit() else -1
            if limit < 0:
                return web.Response(status=400,
                                    text=f"limit: must be a non-negative integer, not {raw!r}")
        return web.json_response(list(self.source.decisions(limit)), dumps=dumps)

    async def config_get(self, request: web.Request) -> web.StreamResponse:
        view = self.source.status.view
        if view is None or view.config is None:
            return web.Response(status=502, text="no configuration in the DCS")
        return web.json_response(dict(view.config), dumps=dumps)

    async def failsafe_get(self, request: web.Request) -> web.StreamResponse:
        view = self.source.status.view
        if view is None or not view.settings.failsafe_mode:
            return web.Response(status=502, text="failsafe_mode is off")
        return web.json_response(dict(view.failsafe or {}), dumps=dumps)

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        body = render_metrics(self.source.status, self.source.metrics)
        return web.Response(body=body.encode(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        if self._openapi_body is None:
            from pgha.api.openapi import build_openapi

            self._openapi_body = dumps(build_openapi()).encode()
        return web.Response(body=self._openapi_body, content_type="application/json")

    # ------------------------------------------------------------------ writes

    async def failsafe_post(self, request: web.Request) -> web.StreamResponse:
        try:
            body = bodies.load_object(await self._read(request), required=True)
        except bodies.BadRequest as exc:
            return web.Response(status=400, text=exc.reason)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            return web.Response(status=400, text='body must name the primary: {"name": ...}')
        raw_slots = body.get("slots")
        slots = {k: v for k, v in raw_slots.items() if isinstance(k, str) and isinstance(
            v, int) and not isinstance(v, bool) and v >= 0} if isinstance(raw_slots, dict) else {}
        code, text = self.source.accept_failsafe(name, slots)
        headers = {}
        position = self.source.status.pg.wal_position
        if code == 200 and position is not None:
            headers["lsn"] = str(position)  # as Patroni: the primary learns our position
        return web.Response(status=code, text=text, headers=headers)

    def _parse_patch(self, raw: bytes) -> Command:
        view = self.source.status.view
        return bodies.parse_patch_config(raw, view.config if view is not None else None)

    def command(self, parse: Parser, *, body: bool = True) -> Handler:
        """Handler of an unsafe route: read and parse the body (unless ``body`` is False: then
        any body is ignored) into a command and answer the agent's outcome."""

        async def handler(request: web.Request) -> web.StreamResponse:
            raw = await self._read(request) if body else b""
            try:
                command = parse(raw)
            except bodies.BadRequest as exc:
                return web.Response(status=400, text=exc.reason)
            return _answer(await self._submit(command))

        return handler

    async def _read(self, request: web.Request) -> bytes:
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                return await request.read()
        except TimeoutError:
            raise web.HTTPRequestTimeout(text="the request body did not arrive in time") \
                from None

    async def _submit(self, command: Command) -> Outcome:
        timeout = submit_timeout(self.source.status)
        task = asyncio.ensure_future(self.source.submit(command))
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(task)
        except TimeoutError:
            task.add_done_callback(_retrieve)
            log.warning("API: no answer from the agent to %s within %.0f s",
                        type(command).__name__, timeout)
            return Outcome(503, f"no answer from the agent within {timeout:.0f} s; the "
                                "command may still complete")
