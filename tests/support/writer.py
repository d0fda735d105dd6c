"""Client-side checkers for fault tests and benchmarks: a writer that records every
acknowledged write, and a probe that samples which members accept writes."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field

import asyncpg

from pgha.cli.localcluster import MemberProc

_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
           TimeoutError)


async def _connect(m: MemberProc) -> asyncpg.Connection:
    return await asyncpg.connect(host=str(m.data_dir.parent), port=m.pg_port, user="postgres",
                                 database="postgres")


@dataclass
class Write:
    seq: int
    started: float
    acked: float | None = None
    member: str | None = None
    xid: int | None = None  # the committing transaction's id (32 bits, as in the WAL)


@dataclass
class Writer:
    """Inserts one row every ``interval`` seconds into whichever member accepts writes, trying
    the last primary first (as a client with target_session_attrs=read-write would).

    Rows are tagged ``seq_start + k * seq_step`` (k = 1, 2, ...), so several writers with the
    same ``seq_step`` and distinct ``seq_start`` in ``[0, seq_step)`` never share a tag. One
    attempt on one member (connect and INSERT, autocommit) is given ``timeout`` seconds; a write
    is acknowledged when the INSERT's COMMIT returned within it. While ``pause`` is set no write
    is started (a checker quiesces the load to compare members)."""

    members: list[MemberProc]
    interval: float = 0.05
    writes: list[Write] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    seq_start: int = 0
    seq_step: int = 1
    timeout: float = 0.5
    pause: threading.Event = field(default_factory=threading.Event)

    def run_in_thread(self) -> threading.Thread:
        t = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        t.start()
        return t

    async def _run(self) -> None:
        conns: dict[str, asyncpg.Connection] = {}
        primary: str | None = None
        seq = self.seq_start
        tick = time.monotonic()
        while not self.stop.is_set():
            if self.pause.is_set():
                await asyncio.sleep(self.interval)
                tick = time.monotonic()
                continue
            seq += self.seq_step
            w = Write(seq, time.monotonic())
            order = sorted(self.members, key=lambda m: m.name != primary)
            for m in order:
                try:
                    async with asyncio.timeout(self.timeout):
                        conn = conns.get(m.name)
                        if conn is None or conn.is_closed():
                            conn = await _connect(m)
                            conns[m.name] = conn
                        xid = await conn.fetchval(
                            "INSERT INTO bench (seq) VALUES ($1)"
                            " RETURNING pg_current_xact_id()::text::bigint", seq)
                except _ERRORS:
                    bad = conns.pop(m.name, None)
                    if bad is not None:
                        bad.terminate()
                    continue
                w.acked, w.member, primary = time.monotonic(), m.name, m.name
                w.xid = int(xid) % (1 << 32)
                break
            self.writes.append(w)
            tick += self.interval
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
        for conn in conns.values():
            conn.terminate()

    def unavailable_after(self, t0: float, not_member: str | None = None) -> float | None:
        """Seconds from ``t0`` to the first acknowledged write that follows the first failed
        write after ``t0`` (0 when no write failed); ``not_member`` excludes the old leader."""
        after = [w for w in self.writes if w.started >= t0]
        first_fail = next((w for w in after if w.acked is None), None)
        if first_fail is None and not_member is None:
            return 0.0
        for w in after:
            if w.acked is None:
                continue
            if first_fail is not None and w.started < first_fail.started:
                continue
            if not_member is not None and w.member == not_member:
                continue
            return w.acked - t0
        return None

    def longest_gap(self, t0: float) -> float | None:
        """The longest time between two consecutive acknowledged writes, counting from the
        last one acknowledged before ``t0`` (how long writes were refused around an event).
        None when no write was acknowledged after ``t0``."""
        acked = sorted(w.acked for w in self.writes if w.acked is not None)
        before = [a for a in acked if a < t0]
        after = [a for a in acked if a >= t0]
        if not after:
            return None
        points = before[-1:] + after
        return max((b - a for a, b in itertools.pairwise(points)), default=0.0)


@dataclass
class WritableProbe:
    """Every ``interval`` seconds asks each member whether it accepts writes (a live
    connection on which ``pg_is_in_recovery()`` is false) and records the samples in which
    more than one member did."""

    members: list[MemberProc]
    interval: float = 0.02
    overlaps: list[tuple[float, list[str]]] = field(default_factory=list)
    samples: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run_in_thread(self) -> threading.Thread:
        t = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        t.start()
        return t

    async def _writable(self, conns: dict[str, asyncpg.Connection], m: MemberProc) -> bool:
        try:
            async with asyncio.timeout(0.3):
                conn = conns.get(m.name)
                if conn is None or conn.is_closed():
                    conn = conns[m.name] = await _connect(m)
                return not await conn.fetchval("SELECT pg_is_in_recovery()")
        except _ERRORS:
            bad = conns.pop(m.name, None)
            if bad is not None:
                bad.terminate()
            return False

    async def _run(self) -> None:
        conns: dict[str, asyncpg.Connection] = {}
        while not self.stop.is_set():
            started = time.monotonic()
            flags = await asyncio.gather(*(self._writable(conns, m) for m in self.members))
            writable = [m.name for m, ok in zip(self.members, flags, strict=True) if ok]
            self.samples += 1
            if len(writable) > 1:
                self.overlaps.append((started, writable))
            await asyncio.sleep(max(0.0, started + self.interval - time.monotonic()))
        for conn in conns.values():
            conn.terminate()
