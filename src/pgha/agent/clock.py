"""The agent's clocks, injected so tests can run the loop's components on a fake clock.

``monotonic`` measures leases, deadlines and ages (never the wall clock: it may jump);
``wall`` stamps what operators read (``dcs_last_seen``) and is compared with scheduled times.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Clock:
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time


SYSTEM_CLOCK = Clock()
