"""Immutable inputs of the decision core.

Everything here is a frozen dataclass built by the IO layers (``pgha.dcs``, ``pgha.pg``,
``pgha.agent``) and handed to :func:`pgha.core.decide.decide`. Nothing in this module reads a
clock, a file or the network; time is passed in as ``now`` (seconds on a monotonic clock).

LSNs are plain integers (bytes since the start of WAL), as in Patroni's DCS values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from pgha.core.tags import Tags as Tags  # re-exported: Member and LocalState hold Tags
from pgha.core.units import parse_duration


class DataState(StrEnum):
    """What the local data directory holds, as far as the agent could tell."""

    EMPTY = "empty"  # missing or empty directory: needs bootstrap or a clone
    VALID = "valid"  # a PostgreSQL cluster whose pg_control could be read
    INVALID = "invalid"  # non-empty but not a readable cluster; needs an operator


class SyncMode(StrEnum):
    """``synchronous_mode`` of the dynamic configuration."""

    OFF = "off"
    ON = "on"
    QUORUM = "quorum"

    @staticmethod
    def parse(value: Any) -> SyncMode | None:
        """True/"on"/"true"/"yes" -> ON, False/"off"/... -> OFF, "quorum" -> QUORUM; None for
        anything else."""
        if isinstance(value, bool):
            return SyncMode.ON if value else SyncMode.OFF
        if not isinstance(value, str):
            return None
        return {"on": SyncMode.ON, "true": SyncMode.ON, "yes": SyncMode.ON,
                "off": SyncMode.OFF, "false": SyncMode.OFF, "no": SyncMode.OFF,
                "quorum": SyncMode.QUORUM}.get(value.strip().lower())


class PgRole(StrEnum):
    PRIMARY = "primary"
    REPLICA = "replica"


class ControlState(StrEnum):
    """``Database cluster state`` from pg_controldata, for a stopped cluster."""

    SHUT_DOWN = "shut down"  # clean stop of a primary
    SHUT_DOWN_IN_RECOVERY = "shut down in recovery"  # clean stop of a replica
    IN_PRODUCTION = "in production"  # a primary that crashed (or is running)
    IN_ARCHIVE_RECOVERY = "in archive recovery"  # a replica that crashed (or is running)
    IN_CRASH_RECOVERY = "in crash recovery"
    STARTING_UP = "starting up"
    SHUTTING_DOWN = "shutting down"
    UNKNOWN = "unknown"

    @property
    def was_primary(self) -> bool:
        """True when the data was last used read-write (a former primary)."""
        return self in (ControlState.SHUT_DOWN, ControlState.IN_PRODUCTION)


@dataclass(frozen=True)
class Member:
    """One ``members/<name>`` key as published by that member's agent."""

    name: str
    conn_url: str = ""
    api_url: str = ""
    role: str = "uninitialized"  # primary | replica | demoted | uninitialized
    state: str = "stopped"  # running | starting | stopped | crashed | ...
    xlog_location: int | None = None
    receive_lsn: int | None = None  # replicas: WAL received / replayed (Patroni 4.1 keys)
    replay_lsn: int | None = None
    timeline: int | None = None
    replication_state: str | None = None
    version: str = ""
    pending_restart: bool = False
    tags: Tags = field(default_factory=Tags)
    scheduled_restart: Mapping[str, Any] | None = None  # {schedule: ISO 8601, conditions...}

    @property
    def is_running_primary(self) -> bool:
        return self.role == "primary" and self.state == "running"

    @property
    def is_running_leader(self) -> bool:
        """A running primary, or a running standby leader (of a standby cluster)."""
        return self.state == "running" and self.role in ("primary", "standby_leader")


@dataclass(frozen=True)
class Leader:
    """The ``leader`` key: the member name it holds, the store's revision of that key (the
    ``if_revision`` of a compare-and-set), and ``session``: the session the key is bound to
    (etcd lease, ZooKeeper ephemeral owner, Consul session, as the backend's ``session_id``
    spells it; None when the key is bound to none). The lock is held by the member it names
    only when it is bound to that member's current session (DESIGN.md safety rule 7): see
    :func:`pgha.core.lock.holds_lock`."""

    name: str
    revision: int = 0
    session: str | None = None


@dataclass(frozen=True)
class HistoryEntry:
    """One element of the ``history`` key: timeline ``timeline`` ended at ``lsn``."""

    timeline: int
    lsn: int
    reason: str = ""
    timestamp: str = ""
    new_leader: str | None = None


HA_MINIMUMS: Mapping[str, float] = {"ttl": 5.0, "loop_wait": 1.0, "retry_timeout": 1.0}
"""The least usable value of each timing setting (seconds); others need only be >= 0. Below
them every DCS call would time out (``retry_timeout: 0``) or the lease expire at once."""


@dataclass(frozen=True)
class HaSettings:
    """The dynamic configuration values the core needs (DCS ``config``, with defaults)."""

    ttl: float = 30.0
    loop_wait: float = 10.0
    retry_timeout: float = 10.0
    maximum_lag_on_failover: int = 1048576
    primary_start_timeout: float = 300.0
    primary_stop_timeout: float = 0.0
    use_pg_rewind: bool = False
    use_slots: bool = True
    member_slots_ttl: float = 1800.0
    check_timeline: bool = False
    pause: bool = False
    failsafe_mode: bool = False
    synchronous_mode: SyncMode = SyncMode.OFF
    synchronous_mode_strict: bool = False
    synchronous_node_count: int = 1
    maximum_lag_on_syncnode: int = -1
    max_timelines_history: int = 0

    @staticmethod
    def from_config(raw: Mapping[str, Any]) -> HaSettings:
        """Lenient parse of the DCS ``config`` JSON: a missing or ill-typed value, or one below
        its :data:`HA_MINIMUMS` (else 0), keeps its default (the observer logs such values;
        the core never fails on them)."""
        default = HaSettings()
        pg = raw.get("postgresql")
        pg = pg if isinstance(pg, Mapping) else {}

        def num(key: str, src: Mapping[str, Any] = raw, alias: str | None = None) -> float:
            value = src.get(key)
            if alias and value is None:
                value = src.get(alias)
            try:
                out = parse_duration(value)  # numbers, and strings such as "20" or "30min"
            except (ValueError, OverflowError):
                return float(getattr(default, key))
            usable = math.isfinite(out) and out >= HA_MINIMUMS.get(key, 0.0)
            return out if usable else float(getattr(default, key))

        def flag(key: str, src: Mapping[str, Any] = raw) -> bool:
            value = src.get(key)
            return value if isinstance(value, bool) else bool(getattr(default, key))

        def integer(key: str, least: int) -> int:
            value = raw.get(key)
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                value = int(value.strip())
            if isinstance(value, int) and not isinstance(value, bool) and value >= least:
                return value
            return int(getattr(default, key))

        return HaSettings(
            ttl=num("ttl"),
            loop_wait=num("loop_wait"),
            retry_timeout=num("retry_timeout"),
            maximum_lag_on_failover=int(num("maximum_lag_on_failover")),
            primary_start_timeout=num("primary_start_timeout", alias="master_start_timeout"),
            primary_stop_timeout=num("primary_stop_timeout"),
            use_pg_rewind=flag("use_pg_rewind", pg),
            use_slots=flag("use_slots", pg),
            member_slots_ttl=num("member_slots_ttl"),
            check_timeline=flag("check_timeline"),
            pause=flag("pause"),
            failsafe_mode=flag("failsafe_mode"),
            synchronous_mode=SyncMode.parse(raw.get("synchronous_mode", False)) or SyncMode.OFF,
            synchronous_mode_strict=flag("synchronous_mode_strict"),
            synchronous_node_count=integer("synchronous_node_count", 1),
            maximum_lag_on_syncnode=integer("maximum_lag_on_syncnode", -1),
            max_timelines_history=integer("max_timelines_history", 0))

    def adjusted(self) -> HaSettings:
        """A copy obeying ``loop_wait + 2 * retry_timeout <= ttl`` (``ttl`` never changes): the
        same rule as ``pgha.config.DynamicConfig.adjusted``, applied to values read from the
        DCS."""
        if self.loop_wait + 2 * self.retry_timeout <= self.ttl:
            return self
        loop_wait, retry = self.loop_wait, (self.ttl - self.loop_wait) / 2
        if retry < 1:
            loop_wait = retry = self.ttl / 3
        return replace(self, loop_wait=loop_wait, retry_timeout=retry)

    @property
    def safety_margin(self) -> float:
        """Seconds before lease expiry at which an unconfirmed primary demotes itself."""
        return safety_margin_for(self.ttl)


def safety_margin_for(ttl: float) -> float:
    """A quarter of the lease TTL, between 0.5 s and 5 s: enough for an immediate stop of
    PostgreSQL to finish before the store can let another member take the lock."""
    return max(0.5, min(5.0, ttl / 4))


@dataclass(frozen=True)
class SyncKey:
    """The ``sync`` key: the leader that wrote it, the members it names as synchronous (or
    quorum) standbys - the voters - and ``quorum``. Field names follow the key's JSON
    (``leader``, ``sync_standby``, ``quorum``). What it promises: :mod:`pgha.core.sync`.
    Whether it is current (written by the present leader, synchronous mode on) is for the
    reader to judge (see :func:`pgha.core.status.sync_state`)."""

    leader: str | None = None
    sync_standby: frozenset[str] = frozenset()
    quorum: int = 0  # votes a candidate needs from the other voters (0: any voter may lead)


@dataclass(frozen=True)
class ClusterView:
    """An immutable snapshot of the cluster's DCS keys.

    ``initialize`` is None when the key is absent, ``""`` while a member bootstraps, and the
    database system identifier afterwards. Keys whose value could not be parsed are absent here
    (the store logged them).

    ``key_revisions`` maps every key read, relative to the cluster prefix (``config``,
    ``failover``, ``members/pg1``, ...), parsed or not, to the store's revision of it: the
    ``if_revision`` of a later compare-and-set. ``revision`` is the store revision of the read.
    """

    initialize: str | None = None
    settings: HaSettings = field(default_factory=HaSettings)
    config: Mapping[str, Any] | None = None  # raw ``config`` JSON; None when absent
    leader: Leader | None = None
    members: Mapping[str, Member] = field(default_factory=dict)
    optime: int | None = None  # leader's last published WAL position (``status``)
    status_leader: tuple[str, str] | None = None  # (name, conn_url) of who wrote ``status``
    status_slots: Mapping[str, int] = field(default_factory=dict)  # ``status`` slots: LSNs
    retain_slots: tuple[str, ...] = ()  # ``status`` retain_slots: member slots to keep
    history: tuple[HistoryEntry, ...] = ()
    failover: Mapping[str, Any] | None = None
    failsafe: Mapping[str, str] | None = None  # member name -> api_url, kept by the leader
    revision: int = 0
    sync: SyncKey | None = None  # the ``sync`` key; None when absent
    key_revisions: Mapping[str, int] = field(default_factory=dict)

    @property
    def leader_member(self) -> Member | None:
        if self.leader is None:
            return None
        return self.members.get(self.leader.name)

    @property
    def leader_position(self) -> int | None:
        """The freshest known leader WAL position: the later of ``status`` optime and the
        leader's published ``xlog_location``. Replica lag is measured against it."""
        leader = self.leader_member
        known = [p for p in (self.optime, leader.xlog_location if leader else None)
                 if p is not None]
        return max(known) if known else None

    def lag_of(self, position: int | None) -> int | None:
        """Bytes ``position`` is behind :attr:`leader_position` (never negative)."""
        head = self.leader_position
        if head is None or position is None:
            return None
        return max(0, head - position)


@dataclass(frozen=True)
class StandbyConn:
    """One row of the primary's ``pg_stat_replication``: ``name`` is the application name
    (pgha's replicas use their member name), ``state`` e.g. ``streaming``/``catchup``,
    ``sync_state`` ``async``/``potential``/``sync``/``quorum``, ``flush_lsn`` what the standby
    reported flushed."""

    name: str
    state: str = "streaming"
    sync_state: str = "async"
    flush_lsn: int | None = None


@dataclass(frozen=True)
class ObservedSlot:
    """One row of ``pg_replication_slots`` on this member's server. ``position``: a physical
    slot's ``restart_lsn``, a logical slot's ``confirmed_flush_lsn`` (None when unset).
    ``lost``: ``wal_status = 'lost'`` (the WAL it needed is gone; it can never be used again)."""

    name: str
    type: str = "physical"
    database: str | None = None
    plugin: str | None = None
    active: bool = False
    position: int | None = None
    lost: bool = False


@dataclass(frozen=True)
class PgState:
    """What the agent observed about its own PostgreSQL.

    ``wal_position``: on a running primary the current flush LSN; on a running replica the
    larger of received and replayed LSN; on a stopped cluster the end of the latest checkpoint
    record from pg_controldata (None when unknown).
    ``down_since`` is the monotonic time the postmaster was seen to die or stop, None while it
    runs. ``upstream`` names the member a running replica streams from (its primary_conninfo).
    """

    data: DataState = DataState.EMPTY
    running: bool = False
    accepting: bool = False  # running and answering queries
    role: PgRole | None = None
    sysid: str | None = None
    timeline: int | None = None
    wal_position: int | None = None
    control_state: ControlState = ControlState.UNKNOWN
    upstream: str | None = None
    down_since: float | None = None
    stopped_by_agent: bool = False
    busy: str | None = None  # a long action is in flight (e.g. "creating replica")
    # synchronous replication (see pgha.core.sync):
    standbys: tuple[StandbyConn, ...] = ()  # a running primary's pg_stat_replication
    sync_standby_names: str | None = None  # the value the running server runs with
    sync_names_since: int | None = None  # our WAL position when that value was first seen
    sync_managed: bool = False  # pgha owns synchronous_standby_names (not the user's value)
    # replication slots on this server; None when not observed (not accepting, or the read
    # failed): nothing is created or dropped from a missing observation
    slots: tuple[ObservedSlot, ...] | None = None


@dataclass(frozen=True)
class PeerStatus:
    """A peer's ``GET /patroni`` answer, reduced to what the leader race needs.

    ``agent_silent``: the peer's agent did not answer, but its PostgreSQL did, accepting writes
    (the agent died or hangs while its primary runs on): a running primary all the same."""

    name: str
    role: str
    state: str
    wal_position: int | None
    timeline: int | None
    tags: Tags = field(default_factory=Tags)
    agent_silent: bool = False

    @property
    def is_running_primary(self) -> bool:
        return self.role == "primary" and self.state == "running"


@dataclass(frozen=True)
class LocalState:
    """This member's own observations, assembled by the agent each cycle.

    ``lease_deadline`` is the monotonic instant until which this agent may act as leader: the
    send time of the last successful keep-alive plus ``ttl - safety_margin``. None when the agent
    holds no confirmed lease. ``dcs_ok`` is False when the last DCS read failed; the ``view`` is
    then the last one that succeeded (or None). ``peers`` maps member name to its status, or None
    when the peer did not answer; it is only filled when a leader race is possible.
    ``member_seen`` maps member name to the monotonic time it was last seen in the DCS.
    ``failsafe_deadline`` (primary, ``failsafe_mode``): until when every member listed in the
    ``failsafe`` key has confirmed over the REST API that it will not take over, counted like
    ``lease_deadline`` from when the confirmation round was sent. ``failsafe_primary`` (replica):
    the member that sent us such a request within the last ``ttl``; we stay out of any race;
    ``failsafe_slots``: the slot positions it sent (copies are advanced to them).
    ``bootstrap_config``: the local ``bootstrap.dcs`` (what this member would seed the DCS
    ``config`` with), for decisions taken before the DCS has a configuration. ``wall_time``:
    epoch time of this cycle (scheduled switchovers are wall-clock).
    ``restart_requested``: an operator restart whose conditions the agent already checked.
    ``reinit_requested``: an operator re-clone; ``reinit_from_leader`` clones from the leader
    (with pg_basebackup) even when a ``clonefrom`` member exists.
    ``replica_without_leader``: the local configuration has a replica method that may create
    this replica while no leader runs (``no_leader``); an empty member then creates its data
    with those methods instead of waiting for a leader. ``session_id``: the identifier of our
    current DCS session (None: none), compared with :attr:`Leader.session`.
    ``handover_failed``: a HandOver of ours failed because its candidate could not be asked or
    did not confirm our final WAL, and the agent has not yet seen the DCS without a request
    this member acts on as leader (see :func:`pgha.core.operator.withdraw_failed_switchover`).
    ``watchdog_ok``: False when ``watchdog.mode`` is ``required`` and the device cannot be
    armed (:mod:`pgha.agent.watchdog`): the member stays out of any race for the lock.
    ``pre_promote_hook``: ``postgresql.pre_promote`` is set; ``pre_promote_failed``: it failed
    less than ``ttl`` ago (no race, no candidacy, a held lock is released).
    """

    name: str
    tags: Tags = field(default_factory=Tags)
    pg: PgState = field(default_factory=PgState)
    dcs_ok: bool = True
    lease_deadline: float | None = None
    peers: Mapping[str, PeerStatus | None] = field(default_factory=dict)
    member_seen: Mapping[str, float] = field(default_factory=dict)
    shutting_down: bool = False
    failsafe_deadline: float | None = None
    failsafe_primary: str | None = None
    failsafe_slots: Mapping[str, int] = field(default_factory=dict)
    bootstrap_config: Mapping[str, Any] | None = None
    wall_time: float = 0.0
    restart_requested: bool = False
    reinit_requested: bool = False
    reinit_from_leader: bool = False
    replica_without_leader: bool = False
    handover_failed: bool = False
    session_id: str | None = None
    watchdog_ok: bool = True
    pre_promote_hook: bool = False
    pre_promote_failed: bool = False
