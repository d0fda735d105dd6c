"""A fake PostgreSQL for the simulation: the executor's ``PgControl`` over a simulated world.

One :class:`FakePostgres` per member; they share a :class:`FakeWorld` (the clock, every member's
instance by name, and the safety hooks the simulation checks its invariants in). Nothing here
sleeps or does IO, so the simulation stays deterministic: every method acts at once on the
simulated state at the world's current instant.

The data is modelled as WAL *segments*: ``[(timeline, end_lsn), ...]`` in LSN order, each
saying which timeline wrote the bytes up to ``end_lsn`` (from the previous end). Two data
directories agree up to :func:`common_prefix`; a replica can stream from an upstream only while
its segments are a prefix of the upstream's (otherwise it diverged, as a walreceiver would
find), and :meth:`FakePostgres.rejoin` rewinds diverged data back to that common prefix before
it streams again (without ``use_pg_rewind`` it refuses and stays stopped: no consent to wipe).
Semantics otherwise follow the action docstrings in :mod:`pgha.core.actions`:

* ``clone``/``rejoin`` need their source running and reachable (its node up);
* ``stop`` with ``FAST`` is a clean stop: a primary writes a shutdown checkpoint record
  (:data:`CHECKPOINT_RECORD` bytes) that every replica streaming from it receives before it
  exits (unless that replica's replication is stalled); ``IMMEDIATE`` is a crash-like stop;
* ``promote`` starts a new timeline at the current position and records the switch point in the
  timeline history (``timeline_history``);
* synchronous replication: ``set_sync_standby_names`` keeps its value (``sync_names``) across
  restarts of PostgreSQL and of the agent, as postgresql.conf does (a clone does not copy it);
  a running primary reports one :class:`~pgha.core.model.StandbyConn` per replica streaming
  from it (running, node up, upstream this member, data not diverged from ours; a stalled one
  stays connected, its flush does not advance) with the ``sync_state`` PostgreSQL shows for
  the value in effect, and :meth:`FakePostgres.sync_ack_lsn` says up to where PostgreSQL has
  acknowledged commits under that value. ``sync_names_since`` is agent-side in the real
  thing (the primary's WAL when this agent process first observed the value): it is set by
  :meth:`FakePostgres.observe` and forgotten by :meth:`FakePostgres.agent_restarted`;
* replication slots (``slots``, by name): :meth:`FakePostgres.sync_slots` drops (only while
  inactive), creates (physical ones at the current WAL position; logical ones on a primary
  only) and advances (never backwards, never past our own WAL; a ``lost`` copy is recreated
  when physical, dropped when logical), returning ``{slot: problem}`` like the real one;
  :meth:`FakePostgres.copy_logical_slots` copies the source's matching logical slots when the
  source is a running, reachable primary and we are a running replica. A physical slot is
  active while the member it is named after streams from us (its position then follows that
  member's flush). A clone starts without slots (pg_basebackup copies none), pg_rewind keeps
  none either, a promotion keeps them;
* ``peer_received_position`` answers a hand-over's poll: the candidate's position when it is
  reachable and streams from us, else :class:`~pgha.pg.errors.PgError` at once (standing for
  the statement timeout a stalled network gives; the executor treats both alike, and the
  simulation never waits in real time).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from pgha.core.actions import SlotSpec, StopMode, SyncSlots, Upstream, slot_name
from pgha.core.model import (
    ControlState,
    DataState,
    ObservedSlot,
    PgRole,
    PgState,
    StandbyConn,
)
from pgha.core.sync import SyncNames, parse_sync_names
from pgha.pg.errors import PgError
from pgha.pg.settings import PgSettings, PgUser

SYSID = "42"
INITDB_WAL = 1000  # position of a freshly initialised cluster
CHECKPOINT_RECORD = 104  # bytes of a shutdown checkpoint record

Segments = tuple[tuple[int, int], ...]


def wal_end(segments: Segments) -> int:
    """The end of the data's WAL (0 when there is none)."""
    return segments[-1][1] if segments else 0


def common_prefix(a: Segments, b: Segments) -> int:
    """The LSN up to which ``a`` and ``b`` hold the same WAL."""
    start = 0
    for (ta, ea), (tb, eb) in zip(a, b, strict=False):
        if ta != tb:
            return start
        if ea != eb:
            return min(ea, eb)
        start = ea
    return min(wal_end(a), wal_end(b))


def consistent(a: Segments, b: Segments) -> bool:
    """True when neither diverged from the other (one is a prefix of the other)."""
    return common_prefix(a, b) == min(wal_end(a), wal_end(b))


def truncate(segments: Segments, lsn: int) -> Segments:
    """``segments`` cut at ``lsn``."""
    out: list[tuple[int, int]] = []
    for tl, end in segments:
        if out and out[-1][1] >= lsn:
            break
        out.append((tl, min(end, lsn)))
    return tuple(out)


def extend(segments: Segments, timeline: int, lsn: int) -> Segments:
    """``segments`` with WAL written on ``timeline`` up to ``lsn``."""
    if lsn <= wal_end(segments):
        return segments
    if segments and segments[-1][0] == timeline:
        return (*segments[:-1], (timeline, lsn))
    return (*segments, (timeline, lsn))


def _priority(names: SyncNames, standby: str) -> int | None:
    """The standby's place in the list (its priority; ``*`` matches any), None if unlisted."""
    folded = standby.casefold()
    for i, name in enumerate(names.names):
        if name == "*" or name.casefold() == folded:
            return i
    return None


def sync_states(names: SyncNames, connected: list[str]) -> dict[str, str]:
    """``sync_state`` of each connected standby as PostgreSQL shows it for ``names``: ``ANY``:
    listed ones ``quorum``; ``FIRST n``: the first ``n`` listed in list order ``sync``, other
    listed ones ``potential``; unlisted (or an empty value) ``async``."""
    out = dict.fromkeys(connected, "async")
    if names.empty:
        return out
    listed = sorted((p, n) for n in connected if (p := _priority(names, n)) is not None)
    for i, (_, name) in enumerate(listed):
        out[name] = "quorum" if names.quorum else ("sync" if i < names.num else "potential")
    return out


class FakeWorld(Protocol):
    """What the fakes need of the simulation around them."""

    def now(self) -> float:
        """The simulated monotonic clock."""
        ...

    def member_names(self) -> list[str]:
        """Every member's name."""
        ...

    def pg(self, name: str) -> FakePostgres | None:
        """Member ``name``'s PostgreSQL, None when there is no such member."""
        ...

    def before_start_primary(self, pg: FakePostgres) -> None:
        """Called before a start as primary takes effect (may raise to flag a violation)."""
        ...

    def before_promote(self, pg: FakePostgres) -> None:
        """Called before a promotion takes effect."""
        ...

    def after_promote(self, pg: FakePostgres, old_timeline: int) -> None:
        """Called once a replica was promoted to a new timeline."""
        ...

    def after_rejoin(self, pg: FakePostgres, leader: FakePostgres) -> None:
        """Called once a rejoin made ``pg`` a replica of ``leader``."""
        ...


def _settings(name: str) -> PgSettings:
    user = PgUser("postgres")
    return PgSettings(
        name=name, scope="sim", data_dir=Path(f"/nonexistent/{name}"), bin_dir=Path("/nonexistent"),
        listen_host=name, port=5432, connect_host=name, superuser=user, replication=user,
        rewind=user, parameters={}, pg_hba=(), initdb_options=(), bootstrap_users={},
        pgpass=Path("/nonexistent/pgpass"), socket_dir=Path("/nonexistent"))


@dataclass
class FakePostgres:
    """One member's simulated PostgreSQL (see the module docstring). The public attributes are
    the simulated state; the simulation reads and changes them directly for faults (a crash:
    :meth:`crash`; a dead node: ``node_up``; slow replication: ``stalled_until``)."""

    name: str
    world: FakeWorld
    data: DataState = DataState.EMPTY
    running: bool = False
    role: PgRole | None = None
    timeline: int = 1
    segments: Segments = ()
    control: ControlState = ControlState.UNKNOWN
    upstream: str | None = None
    down_since: float | None = None
    sysid: str | None = None
    ckpt_lsn: int | None = None  # start of the shutdown checkpoint of a clean stop
    history: tuple[tuple[int, int], ...] = ()  # (timeline, switch lsn) of ended timelines
    node_up: bool = True
    stalled_until: float = 0.0
    isolated: bool = False  # the node is cut off from every other node (and the DCS)
    fresh_initdb: bool = False  # initdb ran and the cluster was never started
    rewinds: int = 0  # pg_rewind runs (for the scenarios' state lines)
    known_tli: int = 1  # newest timeline whose history file we hold (pg_wal)
    sync_names: str = ""  # synchronous_standby_names in postgresql.conf ('' : the user's)
    sync_managed: bool = False  # set by set_sync_standby_names (None gives it back)
    sync_seen: tuple[str, int] | None = None  # agent-side: (value, our WAL when first observed)
    # a running replica reports this timeline instead of its own (a real one whose WAL receiver
    # is down reports pg_control's, which lags until the next restartpoint)
    stale_timeline: int | None = None
    slots: dict[str, ObservedSlot] = field(default_factory=dict)  # stored state (active: no)
    _settings: PgSettings | None = field(default=None, repr=False)

    # -- simulated state -----------------------------------------------------------------
    @property
    def wal(self) -> int:
        return wal_end(self.segments)

    @property
    def writable(self) -> bool:
        return self.running and self.role is PgRole.PRIMARY

    def state(self) -> PgState:
        """What ``observe()`` reports (synchronously, for the simulation's own use)."""
        valid = self.data is DataState.VALID
        position = self.ckpt_lsn if (not self.running and self.ckpt_lsn is not None) \
            else self.wal
        return PgState(
            data=self.data, running=self.running, accepting=self.running,
            role=self.role if self.running else None, sysid=self.sysid,
            timeline=(self.stale_timeline if self.stale_timeline is not None and self.running
                      and self.role is PgRole.REPLICA else self.timeline) if valid else None,
            wal_position=position if valid else None,
            control_state=ControlState.UNKNOWN if self.running else self.control,
            upstream=self.upstream if self.running else None, down_since=self.down_since,
            slots=self.observed_slots() if self.running else None,
            **self._sync_state())

    def observed_slots(self) -> tuple[ObservedSlot, ...]:
        """``pg_replication_slots``: the stored slots, a physical one active (at the flush
        position) while the member it is named after streams from us."""
        streaming = {slot_name(n): flush for n, flush in self.streaming_replicas()}
        out: list[ObservedSlot] = []
        for name, slot in sorted(self.slots.items()):
            if slot.type == "physical" and name in streaming and not slot.lost:
                slot = replace(slot, active=True, position=streaming[name])
            out.append(slot)
        return tuple(out)

    def _sync_state(self) -> dict[str, Any]:
        if not self.writable:
            return {"sync_managed": self.sync_managed}
        seen = self.sync_seen
        return {"standbys": self.standbys(), "sync_standby_names": self.sync_names,
                "sync_names_since": seen[1] if seen and seen[0] == self.sync_names else None,
                "sync_managed": self.sync_managed}

    def streaming_replicas(self) -> list[tuple[str, int]]:
        """(name, flushed LSN) of the replicas connected to this running primary, in member
        order: running, node up, streaming from us, data not diverged from ours (a walreceiver
        would not stream diverged data). A stalled one stays connected."""
        if not self.writable:
            return []
        out: list[tuple[str, int]] = []
        for name in self.world.member_names():
            other = self.world.pg(name)
            if (other is None or other is self or not other.node_up or not other.running
                    or not self.reaches(other)
                    or other.role is not PgRole.REPLICA or other.upstream != self.name
                    or not consistent(other.segments, self.segments)):
                continue
            out.append((name, common_prefix(other.segments, self.segments)))
        return out

    def standbys(self) -> tuple[StandbyConn, ...]:
        """``pg_stat_replication`` of a running primary (see the module docstring)."""
        conns = self.streaming_replicas()
        states = sync_states(parse_sync_names(self.sync_names), [n for n, _ in conns])
        return tuple(StandbyConn(n, "streaming", states[n], flush) for n, flush in conns)

    def sync_ack_lsn(self) -> int | None:
        """Up to where a running primary has acknowledged commits under its
        ``synchronous_standby_names``: ``FIRST n``: the least flush of the first ``n``
        connected listed standbys in list order; ``ANY n``: the ``n``-th greatest flush of the
        connected listed ones; 0 when fewer than ``n`` are connected (commits wait). None when
        the value names no standby (commits are acknowledged at once, unprotected) or this is
        not a running primary."""
        names = parse_sync_names(self.sync_names)
        if not self.writable or names.empty:
            return None
        conns = self.streaming_replicas()
        ranked = sorted((_priority(names, n), n, flush) for n, flush in conns
                        if _priority(names, n) is not None)
        if len(ranked) < names.num:
            return 0
        if names.quorum:
            return sorted((flush for *_, flush in ranked), reverse=True)[names.num - 1]
        return min(flush for *_, flush in ranked[:names.num])

    def acknowledgers(self) -> list[str]:
        """The standbys whose flush a commit on this running primary waits for under its
        ``synchronous_standby_names``: the first ``n`` connected listed ones in list order
        (for ``ANY n`` any ``n`` would do: these are the ones the simulation lets answer
        first). Empty when the value names no standby or fewer than ``n`` are connected."""
        names = parse_sync_names(self.sync_names)
        if not self.writable or names.empty:
            return []
        ranked = sorted((p, n) for n, _ in self.streaming_replicas()
                        if (p := _priority(names, n)) is not None)
        return [n for _, n in ranked[:names.num]] if len(ranked) >= names.num else []

    def details(self) -> dict[str, Any]:
        """The ``xlog`` part of ``GET /patroni`` (what peers compare in a leader race)."""
        if not self.running:
            return {}
        if self.role is PgRole.PRIMARY:
            return {"xlog": {"location": self.wal}}
        return {"xlog": {"received_location": self.wal, "replayed_location": self.wal}}

    def write(self, nbytes: int) -> None:
        """A running primary accepts ``nbytes`` of writes."""
        if self.writable and nbytes > 0:
            self.segments = extend(self.segments, self.timeline, self.wal + nbytes)

    def receive(self, upstream: FakePostgres, lsn: int) -> bool:
        """Stream from ``upstream`` up to ``lsn``. False (nothing received) when our data
        diverged from the upstream's, as a walreceiver would refuse it."""
        self.learn(upstream)
        if not consistent(self.segments, upstream.segments):
            return False
        self.timeline = upstream.timeline
        target = min(lsn, upstream.wal)
        if target > self.wal:
            self.segments = truncate(upstream.segments, target)
        return True

    def learn(self, upstream: FakePostgres) -> None:
        """A walreceiver connected to ``upstream`` fetches the history files of its timelines
        (before it checks whether our data is on them)."""
        self.known_tli = max(self.known_tli, upstream.timeline)

    def crash(self) -> None:
        """The postmaster (or the node) dies."""
        self._halt(clean=False)

    def _halt(self, clean: bool) -> None:
        if not self.running:
            return
        if self.role is PgRole.PRIMARY:
            self.control = ControlState.SHUT_DOWN if clean else ControlState.IN_PRODUCTION
            if clean:
                self.ckpt_lsn = self.wal
                self.segments = extend(self.segments, self.timeline,
                                       self.wal + CHECKPOINT_RECORD)
                self._ship_to_streaming_replicas()
        else:
            self.control = (ControlState.SHUT_DOWN_IN_RECOVERY if clean
                            else ControlState.IN_ARCHIVE_RECOVERY)
        self.running = False
        self.role = None
        self.upstream = None
        self.down_since = self.world.now()

    def _ship_to_streaming_replicas(self) -> None:
        """A clean stop of a primary sends all its WAL to the replicas still streaming."""
        now = self.world.now()
        for name in self.world.member_names():
            other = self.world.pg(name)
            if (other is not None and other is not self and other.node_up and other.running
                    and self.reaches(other)
                    and other.role is PgRole.REPLICA and other.upstream == self.name
                    and other.stalled_until <= now):
                other.receive(self, self.wal)

    def reaches(self, other: FakePostgres) -> bool:
        """The network between our node and ``other``'s works (neither is isolated)."""
        return not (self.isolated or other.isolated)

    def _source(self, name: str) -> FakePostgres | None:
        src = self.world.pg(name)
        if src is None or not src.node_up or not src.running or not self.reaches(src):
            return None
        return src

    def _copy_from(self, src: FakePostgres) -> None:
        self.slots = {}
        self.data, self.sysid, self.timeline = DataState.VALID, src.sysid, src.timeline
        self.segments, self.history = src.segments, src.history
        self.known_tli = max(src.known_tli, src.timeline)
        self.control = ControlState.SHUT_DOWN_IN_RECOVERY
        self.ckpt_lsn = None

    # -- PgControl -------------------------------------------------------------------------
    @property
    def settings(self) -> PgSettings:
        if self._settings is None:
            self._settings = _settings(self.name)
        return self._settings

    def conn_url(self) -> str:
        return f"postgres://{self.name}"

    async def observe(self) -> PgState:
        """What the agent observes; a running primary's agent notes its WAL position the
        first time it sees the current ``synchronous_standby_names``."""
        if self.writable and (self.sync_seen is None or self.sync_seen[0] != self.sync_names):
            self.sync_seen = (self.sync_names, self.wal)
        return self.state()

    async def initdb(self) -> bool:
        if self.data is not DataState.EMPTY:
            return False
        self.data, self.sysid, self.timeline = DataState.VALID, SYSID, 1
        self.segments, self.history = ((1, INITDB_WAL),), ()
        self.control, self.ckpt_lsn, self.fresh_initdb = ControlState.SHUT_DOWN, None, True
        return True

    async def create_roles(self) -> None:
        return None

    async def clone(self, source: Upstream | None, *, basebackup_only: bool = False,
                    replace_data: bool = False) -> bool:
        """A copy of ``source``'s data (the fake has no backups: without a source, False);
        ``replace_data`` empties the directory first, as the replica methods do."""
        if replace_data and not self.running:
            await self.wipe()
        if source is None:
            return False
        src = self._source(source.name)
        if src is None or src.data is not DataState.VALID or self.running:
            return False
        self._copy_from(src)
        return True

    async def start(self, role: str, upstream: Upstream | None) -> bool:
        if self.data is not DataState.VALID:
            return False
        if self.running:
            return True
        if role == "primary":
            self.world.before_start_primary(self)
        self.running, self.down_since, self.ckpt_lsn = True, None, None
        self.role = PgRole.PRIMARY if role == "primary" else PgRole.REPLICA
        self.upstream = upstream.name if upstream is not None else None
        self.fresh_initdb = False
        return True

    async def stop(self, mode: StopMode, timeout: float | None = None) -> bool:
        self._halt(clean=mode is StopMode.FAST)
        return True

    async def promote(self) -> bool:
        if not self.running:
            return False
        self.world.before_promote(self)
        if self.role is PgRole.REPLICA:
            old = self.timeline
            self.history = (*self.history, (old, self.wal))
            # PostgreSQL picks one past the newest timeline whose history file it has
            self.timeline = max(old, self.known_tli) + 1
            self.known_tli = self.timeline
            self.role, self.upstream = PgRole.PRIMARY, None
            # the end-of-recovery record opens the new timeline
            self.segments = extend(self.segments, self.timeline, self.wal + CHECKPOINT_RECORD)
            self.world.after_promote(self, old)
        self.role, self.upstream = PgRole.PRIMARY, None
        return True

    async def follow(self, upstream: Upstream) -> bool:
        if not self.running:
            return False
        self.upstream = upstream.name
        return True

    async def rejoin(self, leader: Upstream, use_pg_rewind: bool) -> bool:
        src = self._source(leader.name)
        if src is None or self.data is not DataState.VALID:
            return False
        if self.running:
            self._halt(clean=True)
        if not consistent(self.segments, src.segments):
            if not use_pg_rewind:
                return False  # no consent to wipe: stays stopped (core/rejoin.py)
            self.rewind(src)
        self.timeline = src.timeline
        self.history = src.history
        self.learn(src)
        self.running, self.role, self.upstream = True, PgRole.REPLICA, src.name
        self.down_since, self.ckpt_lsn = None, None
        self.world.after_rejoin(self, src)
        return True

    def rewind(self, src: FakePostgres) -> None:
        """pg_rewind: our data back to where it diverged from ``src``'s."""
        self.segments = truncate(self.segments, common_prefix(self.segments, src.segments))
        self.slots = {}
        self.rewinds += 1

    async def wipe(self) -> None:
        self._halt(clean=False)
        self.data, self.sysid, self.segments, self.history = DataState.EMPTY, None, (), ()
        self.control, self.ckpt_lsn, self.timeline = ControlState.UNKNOWN, None, 1
        self.known_tli = 1
        self.slots = {}

    async def sync_slots(self, plan: SyncSlots) -> dict[str, str]:
        """See the module docstring; PgError when PostgreSQL does not run."""
        if not self.running or not self.node_up:
            raise PgError(f"{self.name}: PostgreSQL is not running")
        problems: dict[str, str] = {}
        active = {s.name for s in self.observed_slots() if s.active}
        for name in plan.drop:
            if name in active:
                problems[name] = "not dropped: it is in use"
            else:
                self.slots.pop(name, None)
        for spec in plan.create:
            have = self.slots.get(spec.name)
            if have is not None:
                if (have.type, have.database, have.plugin) != (spec.type, spec.database,
                                                               spec.plugin):
                    problems[spec.name] = "not created: a different slot of that name exists"
            elif spec.type == "logical" and self.role is not PgRole.PRIMARY:
                problems[spec.name] = "a logical slot cannot be created on a standby"
            else:
                self.slots[spec.name] = ObservedSlot(spec.name, spec.type, spec.database,
                                                     spec.plugin, position=self.wal)
        for name, lsn in plan.advance:
            slot = self.slots.get(name)
            if slot is None:
                problems[name] = "cannot be advanced: it does not exist"
            elif name in active:
                problems[name] = "cannot be advanced: it is in use"
            elif slot.lost and slot.type == "physical":
                self.slots[name] = ObservedSlot(name, position=self.wal)
                problems[name] = "recreated: its WAL was removed"
            elif slot.lost:
                del self.slots[name]
                problems[name] = "dropped: its WAL was removed"
            elif slot.position is None or slot.position < lsn:
                self.slots[name] = replace(slot, position=max(slot.position or 0,
                                                              min(lsn, self.wal)))
        return problems

    async def copy_logical_slots(self, source: Upstream, slots: tuple[SlotSpec, ...]) -> bool:
        """See the module docstring (the restart that loads the copies is instantaneous)."""
        src = self._source(source.name)
        if src is None or not src.writable or not self.running \
                or self.role is not PgRole.REPLICA:
            return False
        copied = False
        for spec in slots:
            theirs = src.slots.get(spec.name)
            if theirs is not None and not theirs.lost and (
                    theirs.type, theirs.database, theirs.plugin) == (
                    "logical", spec.database, spec.plugin):
                self.slots[spec.name] = replace(theirs, active=False)
                copied = True
        return copied

    async def set_sync_standby_names(self, value: str | None) -> bool:
        """Written into postgresql.conf (kept across restarts) and in effect at once on a
        running server; None gives it back to the user's value, ``''`` in the simulation."""
        self.sync_names = value if value is not None else ""
        self.sync_managed = value is not None
        return True

    def agent_restarted(self) -> None:
        """A new agent process: it has not observed the current value yet."""
        self.sync_seen = None

    async def checkpoint(self) -> None:
        return None

    async def timeline_history(self, source: Upstream) -> list[tuple[int, int]]:
        src = self.world.pg(source.name)
        if src is None or not src.node_up or not self.reaches(src):
            raise PgError(f"{source.name} unreachable")
        return list(src.history)

    def peer_received_position(self, conn_url: str) -> Any:
        return self._received(conn_url)

    @asynccontextmanager
    async def _received(self, conn_url: str,
                        ) -> AsyncIterator[Callable[[], Awaitable[int | None]]]:
        name = conn_url.removeprefix("postgres://")
        cand = self.world.pg(name)
        if cand is None or not cand.node_up or not cand.running or not self.reaches(cand):
            raise PgError(f"cannot connect to {name}")

        async def received() -> int | None:
            me = self.state().wal_position
            if (cand.node_up and cand.running and me is not None and cand.wal > me
                    and consistent(cand.segments, self.segments)):
                return cand.wal
            raise PgError(f"{name} did not confirm our final WAL (simulated timeout)")

        yield received
