"""Scripted REST API servers standing in for pgha members in CLI tests.

:class:`FakeApis` runs one aiohttp server per member on loopback (free ports) in a background
thread with its own event loop. Each :class:`FakeMember` records every request (method, path,
JSON body, Authorization header) and answers from its script: ``member.script(method, path,
status, body)`` or a list of ``(status, body)`` answers consumed in order (the last one
repeats). ``GET /patroni`` answers a running member's status unless scripted; anything else
unscripted answers 500 so a test notices. With ``auth=(user, password)`` unsafe methods
without those Basic credentials get 401, as the real API does. Everything is stopped on
``close()`` / leaving the ``with`` block.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web

Answer = tuple[int, Any]


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: Any
    authorization: str | None


@dataclass
class FakeMember:
    name: str
    auth: tuple[str, str] | None = None
    url: str = ""
    requests: list[Request] = field(default_factory=list)
    _script: dict[tuple[str, str], list[Answer]] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        """What the member would publish in its member key."""
        return f"{self.url}/patroni"

    def script(self, method: str, path: str, status: int | list[Answer], body: Any = "") -> None:
        """Answer ``method path`` with ``status``/``body`` (a dict/list is sent as JSON), or
        with each of a list of ``(status, body)`` in turn, repeating the last."""
        answers = status if isinstance(status, list) else [(status, body)]
        self._script[(method.upper(), path)] = list(answers)

    def calls(self, method: str | None = None, path: str | None = None) -> list[Request]:
        return [r for r in self.requests
                if (method is None or r.method == method) and (path is None or r.path == path)]

    def _next(self, method: str, path: str) -> Answer:
        answers = self._script.get((method, path))
        if not answers:
            if method == "GET" and path == "/patroni":
                return 200, {"state": "running", "role": "replica", "server_version": 150004,
                             "patroni": {"version": "9.9.9", "scope": "demo",
                                         "name": self.name}}
            return 500, f"unscripted {method} {path}"
        return answers.pop(0) if len(answers) > 1 else answers[0]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        auth = request.headers.get("Authorization")
        self.requests.append(Request(request.method, request.path, body, auth))
        if self.auth is not None and request.method in ("POST", "PUT", "PATCH", "DELETE"):
            expected = "Basic " + base64.b64encode(":".join(self.auth).encode()).decode()
            if auth != expected:
                return web.Response(status=401, text="no auth header received",
                                    headers={"WWW-Authenticate": 'Basic realm="pgha"'})
        status, answer = self._next(request.method, request.path)
        if isinstance(answer, dict | list):
            return web.json_response(answer, status=status)
        return web.Response(status=status, text=str(answer))


class FakeApis:
    """Servers for several fake members; use as a context manager."""

    def __init__(self) -> None:
        self.members: dict[str, FakeMember] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runners: list[web.AppRunner] = []

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def add(self, name: str, auth: tuple[str, str] | None = None) -> FakeMember:
        """Start a server for member ``name`` on a free loopback port."""
        member = FakeMember(name, auth)
        future = asyncio.run_coroutine_threadsafe(self._start(member), self._loop)
        member.url = future.result(timeout=10)
        self.members[name] = member
        return member

    async def _start(self, member: FakeMember) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", member.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runners.append(runner)
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
