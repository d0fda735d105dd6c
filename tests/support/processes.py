"""Checks on processes a test started through pgha."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest


async def assert_gone(pid: int, what: str, within: float = 2.5) -> None:
    """Fail (after killing it) unless process ``pid`` ends within ``within`` seconds."""
    for _ in range(int(within / 0.05)):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    pytest.fail(f"{what} outlived its timeout")
