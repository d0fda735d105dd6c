"""pg_controldata: running it, parsing its output, and LSN text <-> int helpers."""

from __future__ import annotations

import logging
import re
import time

from pgha.core.model import ControlState
from pgha.pg.cmd import clean_env, run
from pgha.pg.settings import PgSettings

log = logging.getLogger("pgha.pg")

CONTROLDATA_TIMEOUT = 15.0

_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")

# Keys as printed by pg_controldata in the C locale.
STATE = "Database cluster state"
CHECKPOINT_LSN = "Latest checkpoint location"
CHECKPOINT_TLI = "Latest checkpoint's TimeLineID"
MIN_RECOVERY_LSN = "Minimum recovery ending location"
MIN_RECOVERY_TLI = "Min recovery ending loc's timeline"
SYSID = "Database system identifier"


def parse_lsn(text: str) -> int:
    """``"0/3000028"`` -> ``0x3000028``; raises ValueError for anything else."""
    match = _LSN_RE.match(text.strip())
    if not match:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(lsn: int) -> str:
    """``0x3000028`` -> ``"0/3000028"`` (PostgreSQL's own spelling, upper-case hex)."""
    if lsn < 0 or lsn >= 1 << 64:
        raise ValueError(f"LSN out of range: {lsn}")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_controldata(text: str) -> dict[str, str]:
    """``Key: value`` lines -> dict (values stripped). Lines without ``": "`` are ignored."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def control_state(data: dict[str, str]) -> ControlState:
    """The ``Database cluster state`` as a ControlState (UNKNOWN when missing or unfamiliar)."""
    try:
        return ControlState(data.get(STATE, ""))
    except ValueError:
        return ControlState.UNKNOWN


def checkpoint_position(data: dict[str, str]) -> tuple[int, int] | None:
    """``(timeline, lsn)`` of the latest checkpoint record's START, or None when unreadable."""
    try:
        return int(data[CHECKPOINT_TLI]), parse_lsn(data[CHECKPOINT_LSN])
    except (KeyError, ValueError):
        return None


def divergence_position(data: dict[str, str]) -> tuple[int, int] | None:
    """``(timeline, lsn)`` to feed :func:`pgha.core.timeline.diverged` for stopped data.

    The latest checkpoint's start; for data stopped during recovery, ``minRecoveryPoint - 1``
    (the last byte its pages may reflect) when that is later. None when unreadable.
    """
    position = checkpoint_position(data)
    if position is None:
        return None
    try:
        min_tli = int(data.get(MIN_RECOVERY_TLI, "0"))
        min_lsn = parse_lsn(data.get(MIN_RECOVERY_LSN, "0/0"))
    except ValueError:
        return position
    if min_tli > 0 and min_lsn > 0 and min_lsn - 1 > position[1]:
        return min_tli, min_lsn - 1
    return position


def wal_position(data: dict[str, str]) -> int | None:
    """WAL position of stopped data: the later of the latest checkpoint location and the
    minimum recovery ending location; None when unreadable."""
    position = checkpoint_position(data)
    if position is None:
        return None
    try:
        return max(position[1], parse_lsn(data.get(MIN_RECOVERY_LSN, "0/0")))
    except ValueError:
        return position[1]


async def read_controldata(settings: PgSettings) -> dict[str, str]:
    """Run ``pg_controldata`` on the data directory; ``{}`` when it fails (logged at debug)."""
    if not (settings.data_dir / "global" / "pg_control").exists():
        return {}
    result = await run([settings.binary("pg_controldata"), "-D", str(settings.data_dir)],
                       timeout=CONTROLDATA_TIMEOUT, env=clean_env())
    if not result.ok:
        log.debug("pg_controldata failed: %s", result.describe())
        return {}
    return parse_controldata(result.stdout)


class ControlDataCache:
    """:func:`read_controldata` of one data directory, run again only when
    ``global/pg_control`` changed: its inode, size or modification time differ from the last
    read's, or it was modified less than :attr:`SETTLED` seconds before that read (a later
    write in the same timestamp tick would keep the same modification time). pg_controldata
    prints nothing but that file's content, so a hit returns what a new run would."""

    SETTLED = 1.0  # seconds: a file older than this gets a new mtime on its next write

    def __init__(self) -> None:
        self._stamp: tuple[str, int, int, int] | None = None
        self._data: dict[str, str] = {}

    async def read(self, settings: PgSettings) -> dict[str, str]:
        """What :func:`read_controldata` returns (a copy); ``{}`` when pg_control is missing."""
        try:
            st = (settings.data_dir / "global" / "pg_control").stat()
        except OSError:
            self._stamp = None
            return await read_controldata(settings)
        stamp = (str(settings.data_dir), st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return dict(self._data)
        data = await read_controldata(settings)
        settled = time.time() - st.st_mtime_ns / 1e9 >= self.SETTLED
        self._stamp = stamp if settled and data else None
        self._data = data
        return dict(data)
