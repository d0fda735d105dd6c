"""A TCP proxy on loopback that a test can cut and heal, to partition one agent from the DCS.

Runs its own event loop in a daemon thread so synchronous tests can use it. ``cut()`` turns the
path into a black hole: bytes in either direction are discarded and new connections are accepted
but never reach the target, so requests hang until the client's own timeout, as in a real
partition (``cut(reset=True)`` aborts connections instead). ``heal()`` lets traffic through again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            self._writers.add(writer)
            with contextlib.suppress(OSError):
                while await reader.read(65536):
                    pass  # black hole
            self._writers.discard(writer)
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    if self._cut:
                        continue  # black hole: discard
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def _drop_all(self) -> None:
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def cut(self, reset: bool = False) -> None:
        """Partition: discard all traffic (or, with ``reset``, abort every connection)."""
        self._cut = True
        if reset:
            self._loop.call_soon_threadsafe(self._drop_all)

    def heal(self) -> None:
        """Let traffic through again. Connections that lost bytes in the black hole are
        aborted first (their streams are corrupt); clients reconnect."""
        def reopen() -> None:
            self._drop_all()
            self._cut = False

        self._loop.call_soon_threadsafe(reopen)

    def close(self) -> None:
        def stop() -> None:
            self._drop_all()
            if self._server is not None:
                self._server.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(stop)
        self._thread.join(5)
