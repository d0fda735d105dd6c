"""Loopback TCP links that a campaign can cut, slow down and heal: the stand-in for a network
partition when the tests cannot use network namespaces (they run as an unprivileged user).

One :class:`LinkHub` owns a daemon thread with one event loop; each :class:`Link` listens on its
own loopback port and forwards to one target. A link is in one of three states:

* open: bytes are forwarded as they come, after ``delay`` seconds when one is set;
* cut: a black hole, as a real partition looks to both ends -- bytes in either direction are
  discarded and new connections are accepted but never reach the target, so requests hang until
  the client's own timeout;
* healed after a cut: connections that lost bytes are aborted first (their streams are corrupt)
  and new ones pass again.

Every method may be called from any thread. A path is cut by cutting every link on it; the
links know nothing of members or roles (see :mod:`tests.support.chaos.cluster`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
_CHUNK = 65536
# Links listen on their own loopback address: a port the OS hands a link can then never be one
# that a cluster chose (on 127.0.0.1) for a server it has not started yet.
LISTEN_HOST = "127.0.0.2"


class Link:
    """``endpoint`` (``127.0.0.2:port``) leads to ``target`` unless cut."""

    def __init__(self, hub: LinkHub, name: str, target: tuple[str, int]) -> None:
        self.hub = hub
        self.name = name
        self.target = target
        self.port = 0
        self.is_cut = False
        self.delay = 0.0
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()

    @property
    def endpoint(self) -> str:
        return f"{LISTEN_HOST}:{self.port}"

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, LISTEN_HOST, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._transports.add(writer.transport)
        try:
            if self.is_cut:
                await _drain_forever(reader)
                return
            try:
                async with asyncio.timeout(5):
                    up_reader, up_writer = await asyncio.open_connection(*self.target)
            except (OSError, TimeoutError):
                return
            self._transports.add(up_writer.transport)
            try:
                await asyncio.gather(self._pipe(reader, up_writer),
                                     self._pipe(up_reader, writer))
            finally:
                self._transports.discard(up_writer.transport)
                up_writer.close()
        finally:
            self._transports.discard(writer.transport)
            writer.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await src.read(_CHUNK):
                if self.is_cut:
                    continue  # black hole
                if self.delay > 0:
                    await asyncio.sleep(self.delay)
                    if self.is_cut:
                        continue
                dst.write(data)
                await dst.drain()
        with contextlib.suppress(OSError):
            dst.close()

    def _abort_all(self) -> None:
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    def cut(self) -> None:
        """Partition this path (black hole), at once for every open connection."""
        self.is_cut = True

    def heal(self) -> None:
        """Open the path again with no delay; connections that crossed the cut are aborted."""
        def reopen() -> None:
            if self.is_cut:
                self._abort_all()
            self.is_cut = False
            self.delay = 0.0

        self.hub.call_soon(reopen)

    def slow(self, seconds: float) -> None:
        """Delay every chunk by ``seconds`` (each direction), until :meth:`heal`."""
        self.delay = seconds

    async def _close(self) -> None:
        self._abort_all()
        if self._server is not None:
            self._server.close()


async def _drain_forever(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(OSError):
        while await reader.read(_CHUNK):
            pass


class LinkHub:
    """Owns the links' event loop (a daemon thread); ``close()`` stops every link."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="chaos-links")
        self._thread.start()
        self.links: list[Link] = []

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def call_soon(self, fn: Any) -> None:
        self._loop.call_soon_threadsafe(fn)

    def link(self, name: str, target: tuple[str, int]) -> Link:
        """A new open link to ``target``, listening once this returns."""
        link = Link(self, name, target)
        self._run(link._listen())
        self.links.append(link)
        return link

    def close(self) -> None:
        async def stop_all() -> None:
            for link in self.links:
                await link._close()

        if not self._loop.is_running():
            return
        with contextlib.suppress(Exception):
            self._run(stop_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
