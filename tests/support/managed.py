"""One base for the test servers' context-manager scaffolding (etcd, ZooKeeper, ...)."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class ManagedServer:
    """``with server:`` / ``async with server:`` start it and always ``close()`` it: also when
    starting fails halfway, so no process or directory is left behind. Subclasses define
    ``start()``, ``astart()`` and ``close()`` (idempotent)."""

    def start(self) -> None:
        raise NotImplementedError

    async def astart(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        try:
            await self.astart()
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
