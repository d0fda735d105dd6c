"""Checkers that judge a campaign from the clients' side, never from pgha's own view.

* :class:`SplitBrainProbe`: every ``interval`` seconds, for every member, a FRESH connection
  (over the member's unix socket) asks whether this server would accept a write now (not in
  recovery, not read-only). Each member is sampled on its own task, so a frozen member does not
  slow the others. A member's writable samples form intervals (consecutive writable samples
  are joined: what happened between them is not known, so it counts as writable); an instant
  covered by the intervals of two members is a split-brain instant.
* :func:`overlapping_commits`: two writes acknowledged by different members whose
  [start, acknowledgement] windows overlap (both servers committed within the same window).
* :func:`lost_writes`: acknowledged rows missing on the primary.
* :func:`find_primary` / :func:`converged`: the member that accepts a write, found by trying;
  whether every other member replays the primary's timeline up to its position and holds the
  same rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from pgha.cli.localcluster import MemberProc
from tests.support.writer import Write

_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
           TimeoutError)
WRITABLE_SQL = ("SELECT NOT pg_is_in_recovery()"
                " AND NOT current_setting('transaction_read_only')::bool")


async def connect(m: MemberProc, timeout: float = 1.0) -> asyncpg.Connection:
    async with asyncio.timeout(timeout):
        return await asyncpg.connect(host=str(m.data_dir.parent), port=m.pg_port,
                                     user="postgres", database="postgres", timeout=timeout)


@dataclass
class Interval:
    member: str
    start: float
    end: float


@dataclass
class SplitBrainProbe:
    members: list[MemberProc]
    interval: float = 0.02
    timeout: float = 0.3
    samples: int = 0
    intervals: dict[str, list[Interval]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run_in_thread(self) -> threading.Thread:
        t = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True,
                             name="split-brain-probe")
        t.start()
        return t

    async def _run(self) -> None:
        await asyncio.gather(*(self._sample_member(m) for m in self.members))

    async def _writable(self, m: MemberProc) -> bool:
        conn: asyncpg.Connection | None = None
        try:
            conn = await connect(m, self.timeout)
            async with asyncio.timeout(self.timeout):
                return bool(await conn.fetchval(WRITABLE_SQL))
        except _ERRORS:
            return False
        finally:
            if conn is not None:
                conn.terminate()

    async def _sample_member(self, m: MemberProc) -> None:
        mine = self.intervals.setdefault(m.name, [])
        previous_writable = False
        while not self.stop.is_set():
            started = time.monotonic()
            writable = await self._writable(m)
            answered = time.monotonic()
            self.samples += 1
            if writable:
                if previous_writable and mine:
                    mine[-1].end = answered
                else:
                    mine.append(Interval(m.name, started, answered))
            previous_writable = writable
            await asyncio.sleep(max(0.0, started + self.interval - time.monotonic()))

    def overlaps(self, since: float = 0.0) -> list[tuple[float, float, list[str]]]:
        """Instants (start, end, members) when two members' writable intervals overlap."""
        found: list[tuple[float, float, list[str]]] = []
        spans = sorted((iv for ivs in list(self.intervals.values()) for iv in list(ivs)
                        if iv.end >= since), key=lambda iv: iv.start)
        for i, a in enumerate(spans):
            for b in spans[i + 1:]:
                if b.start > a.end:
                    break
                if b.member != a.member:
                    found.append((b.start, min(a.end, b.end), sorted({a.member, b.member})))
        return found


def overlapping_commits(writes: list[Write], since: float = 0.0) -> list[tuple[Write, Write]]:
    """Pairs of acknowledged writes on different members whose windows overlap."""
    acked = sorted((w for w in writes if w.acked is not None and w.acked >= since),
                   key=lambda w: w.started)
    pairs: list[tuple[Write, Write]] = []
    for i, a in enumerate(acked):
        assert a.acked is not None
        for b in acked[i + 1:]:
            if b.started > a.acked:
                break
            if b.member != a.member:
                pairs.append((a, b))
    return pairs


async def _fetch(m: MemberProc, sql: str, *args: Any, timeout: float = 5.0) -> list[Any]:
    conn = await connect(m, timeout)
    try:
        async with asyncio.timeout(timeout):
            return list(await conn.fetch(sql, *args))
    finally:
        conn.terminate()


def fetch(m: MemberProc, sql: str, *args: Any, timeout: float = 5.0) -> list[Any]:
    """Rows of ``sql`` on ``m`` (a fresh connection; raises on any failure)."""
    return asyncio.run(_fetch(m, sql, *args, timeout=timeout))


def find_primary(members: list[MemberProc]) -> MemberProc | None:
    """The one member that would accept a write now, None when none or several would."""
    found = []
    for m in members:
        with contextlib.suppress(*_ERRORS, RuntimeError):
            if fetch(m, WRITABLE_SQL, timeout=2.0)[0][0]:
                found.append(m)
    return found[0] if len(found) == 1 else None


def lost_writes(primary: MemberProc, writes: list[Write], until: float | None = None
                ) -> list[Write]:
    """Writes acknowledged (before ``until``) whose row the primary does not have."""
    rows = {r[0] for r in fetch(primary, "SELECT seq FROM bench", timeout=30.0)}
    return [w for w in writes if w.acked is not None and (until is None or w.acked < until)
            and w.seq not in rows]


@dataclass
class MemberState:
    name: str
    writable: bool | None = None  # None: not reachable
    timeline: int | None = None
    lsn: int | None = None  # primary: current; replica: replayed
    streaming: bool = False
    rows: tuple[int, int] | None = None  # count, sum(seq)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "writable": self.writable, "timeline": self.timeline,
                "lsn": self.lsn, "streaming": self.streaming}


STATE_SQL = """
SELECT NOT pg_is_in_recovery() AS primary,
       CASE WHEN pg_is_in_recovery()
            THEN (SELECT received_tli FROM pg_stat_wal_receiver)
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
       END AS timeline,
       (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
             ELSE pg_current_wal_lsn() END - '0/0')::bigint AS lsn,
       coalesce((SELECT status = 'streaming' FROM pg_stat_wal_receiver), false) AS streaming
"""


def member_state(m: MemberProc, with_rows: bool = False) -> MemberState:
    state = MemberState(m.name)
    try:
        row = fetch(m, STATE_SQL, timeout=2.0)[0]
        state.writable, state.timeline = bool(row["primary"]), row["timeline"]
        state.lsn, state.streaming = row["lsn"], bool(row["streaming"])
        if with_rows:
            count_sum = fetch(m, "SELECT count(*), coalesce(sum(seq), 0) FROM bench",
                              timeout=30.0)[0]
            state.rows = (int(count_sum[0]), int(count_sum[1]))
    except (*_ERRORS, RuntimeError, IndexError):
        pass
    return state


def cluster_states(members: list[MemberProc]) -> list[MemberState]:
    return [member_state(m) for m in members]


def converged(members: list[MemberProc]) -> tuple[bool, str]:
    """Whether exactly one member is primary and every other one streams on its timeline, has
    replayed up to the primary's position taken at the start of the check, and holds the same
    rows (the caller pauses the writers first). The second value says what is missing."""
    states = cluster_states(members)
    primaries = [s for s in states if s.writable]
    if len(primaries) != 1:
        return False, f"{len(primaries)} primaries: {[s.as_dict() for s in states]}"
    primary = primaries[0]
    target = primary.lsn or 0
    for s in states:
        if s is primary:
            continue
        if s.writable is None:
            return False, f"{s.name} does not answer"
        if not s.streaming or s.timeline != primary.timeline:
            return False, (f"{s.name} not streaming on timeline {primary.timeline}: "
                           f"{s.as_dict()}")
        if (s.lsn or 0) < target:
            return False, f"{s.name} replayed {s.lsn} < primary {target}"
    by_name = {m.name: m for m in members}
    expected = member_state(by_name[primary.name], with_rows=True).rows
    for s in states:
        if s is primary:
            continue
        got = member_state(by_name[s.name], with_rows=True).rows
        if got != expected:
            return False, f"{s.name} rows {got} != primary {primary.name} rows {expected}"
    return True, f"primary {primary.name} on timeline {primary.timeline}"
