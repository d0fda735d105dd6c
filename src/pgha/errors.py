"""Error helpers shared by the IO layers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


class AgentFatal(Exception):
    """The agent cannot go on and must exit non-zero; ``str(exc)`` is the one-line cause.
    Raised only after cleaning up what the failed step created (a supervisor such as systemd
    restarts the agent with its own backoff; the agent never loops on such a failure)."""


def describe(exc: BaseException) -> str:
    """A log-friendly description: the message, or the exception type when the message is
    empty (``TimeoutError()`` has none)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else f"{type(exc).__name__} (no message)"


async def bounded(aw: Awaitable[T], timeout: float) -> T:
    """Await ``aw`` for at most ``timeout`` seconds, even if it swallows cancellation (some
    gRPC/aetcd paths do, which defeats ``asyncio.timeout``): it runs as a task that is
    abandoned (cancelled, never awaited) when time is up. Raises TimeoutError then."""
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if task in done:
        return task.result()
    task.cancel()
    task.add_done_callback(_retrieve)
    raise TimeoutError(f"no answer within {timeout:g}s")


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # mark it retrieved: the caller gave up on it
