"""Error helpers shared by the IO layers."""

from __future__ import annotations


def describe(exc: BaseException) -> str:
    """A log-friendly description: the message, or the exception type when the message is
    empty (``TimeoutError()`` has none)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else f"{type(exc).__name__} (no message)"
