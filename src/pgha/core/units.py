"""Values with units in the configuration (pure): durations."""

from __future__ import annotations

import math
import re
from typing import Any

_DURATION = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*(ms|s|min|h|d)?\s*")
_SECONDS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``"90"``, ``"500ms"``, ``"90s"``, ``"30min"``,
    ``"1h"``, ``"1d"``. Raises ``ValueError`` for anything else or a negative value."""
    match = _DURATION.fullmatch(str(value))
    if isinstance(value, bool) or match is None:
        raise ValueError("expected a duration such as 30min, 1h, 90s or a number of seconds")
    seconds = float(match[1]) * _SECONDS[match[2] or "s"]
    if seconds < 0:
        raise ValueError("must be >= 0")
    if not math.isfinite(seconds):
        raise ValueError("must be a finite number")
    return seconds
