"""Actions returned by the decision core, executed in order by the agent's executor.

Execution contract (``pgha.agent.executor`` implements it):

* Actions run in list order, one at a time, each under a timeout.
* The first action that fails (returns False or raises) aborts the rest of the list; the next
  decision cycle re-evaluates from fresh observations. So ``[AcquireLeader(), Promote()]`` never
  promotes without the lock.
* Actions that stop writes come before anything slower: a demotion is its own first action.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class StopMode(StrEnum):
    FAST = "fast"  # clients disconnected, shutdown checkpoint written, WAL shipped to replicas
    IMMEDIATE = "immediate"  # no checkpoint: stops writes at once (crash recovery on next start)


@dataclass(frozen=True)
class Upstream:
    """A member to stream from or clone from. The remote primary of a standby cluster
    (:mod:`pgha.core.standby`) also names the ``slot`` to use there (else the member's own
    slot name), ``recovery`` settings (``restore_command``, ...) to replay with and the
    ``methods`` a replica of it is created with; its ``conn_url`` is empty when it is reached
    through the archive only."""

    name: str
    conn_url: str
    slot: str | None = None
    recovery: tuple[tuple[str, str], ...] = ()
    methods: tuple[str, ...] = ()  # create_replica_methods to clone it with (else our own)


@dataclass(frozen=True)
class BootstrapCluster:
    """Claim ``initialize`` atomically (create-if-absent with an empty value); if won, run initdb,
    write the managed configuration, start as primary, create the roles, store the dynamic
    configuration, take the leader lock, then write the system identifier into ``initialize``.
    On any failure after the claim: stop PostgreSQL, wipe the data directory and delete the
    still-empty ``initialize`` key so another member may try."""


@dataclass(frozen=True)
class WriteInitialize:
    """Create ``initialize`` with an existing cluster's system identifier (adopt local data),
    and the ``config`` key from ``bootstrap.dcs`` when there is none."""

    sysid: str


@dataclass(frozen=True)
class CloneReplica:
    """Create the replica's data in the (empty) data directory with the configured replica
    methods (``create_replica_methods``, tried in order) from ``source``, then write the
    replica configuration (standby.signal, primary_conninfo, slot). ``source`` None: no
    leader runs, only the methods allowed to work without one (``no_leader``) are tried.
    Does not start PostgreSQL."""

    source: Upstream | None


@dataclass(frozen=True)
class StartPostgres:
    """Write the managed configuration for ``role`` and start PostgreSQL; return once it
    accepts connections (or fail). A replica streams from ``upstream`` (None: no upstream,
    read-only recovery of local WAL)."""

    role: str  # "primary" | "replica"
    upstream: Upstream | None = None


@dataclass(frozen=True)
class Follow:
    """Point a running replica at ``upstream`` (primary_conninfo + slot) and reload."""

    upstream: Upstream


@dataclass(frozen=True)
class Rejoin:
    """Bring a stopped former primary (or a replica that may have diverged) back as a replica of
    ``leader``: crash-recover in single-user mode if it was not shut down cleanly, compare the
    local timeline and position with the leader's timeline history, and if they diverged run
    pg_rewind (``use_pg_rewind``) or else wipe and re-clone where the operator consented
    (:func:`pgha.core.rejoin.rejoin_plan`); without consent it fails and PostgreSQL stays
    stopped. Never starts diverged data as is. Ends by starting PostgreSQL as a replica of
    ``leader``."""

    leader: Upstream
    use_pg_rewind: bool


@dataclass(frozen=True)
class AcquireLeader:
    """Create the leader key bound to our session (atomic create-if-absent). Fails if taken."""


@dataclass(frozen=True)
class PrePromote:
    """Run the user's ``postgresql.pre_promote`` fencing command (we hold the lock; nothing
    of the promotion has happened yet, not even the synchronous-mode take-over of the ``sync``
    key). It fails when the command does not exit 0 in time: the executor then deletes the
    leader key (compare-and-delete on our name) before reporting the failure, and the agent
    reports ``LocalState.pre_promote_failed`` for ``ttl`` seconds."""


@dataclass(frozen=True)
class Promote:
    """Promote the running replica, wait until it accepts writes, append a ``history`` entry for
    the timeline just ended, and run a CHECKPOINT so a rewinding former primary sees the new
    timeline in pg_control. ``planned``: an operator's switchover/failover request is in the
    DCS (the promotion is not counted as a failover)."""

    planned: bool = False


@dataclass(frozen=True)
class Demote:
    """Stop a primary that must not be writable. Stops PostgreSQL with ``mode`` first; then,
    if ``release_lock``, deletes the leader key (compare-and-delete on our name). The data is
    later brought back by ``Rejoin`` once a leader exists."""

    mode: StopMode = StopMode.IMMEDIATE
    release_lock: bool = False


@dataclass(frozen=True)
class ReleaseLeader:
    """Delete the leader key if it still names us and is bound to our session (a key that
    merely holds our name, bound to another session, is never deleted: DESIGN.md rule 7)."""


@dataclass(frozen=True)
class RebindLeader:
    """The leader key holds our name but is bound to another session (a previous process of
    ours, DESIGN.md safety rule 7): confirm our lease, then bind the key to our session by a
    compare-and-set on ``revision`` (the key's revision as seen). Fails when the key changed
    or vanished since (another member may have taken it): the lock is then not ours."""

    revision: int


@dataclass(frozen=True)
class StopPostgres:
    """Stop PostgreSQL with ``mode``; a FAST stop still running after ``timeout`` seconds
    (None: ``pg_ctl_timeout``) is finished with an immediate one (``primary_stop_timeout``:
    in synchronous mode commits waiting for a standby that is gone can hold a shutdown)."""

    mode: StopMode = StopMode.FAST
    timeout: float | None = None


@dataclass(frozen=True)
class HandOver:
    """Planned switchover, run by the leader: write ``failover`` naming ``candidate`` (so no
    other member races), stop PostgreSQL cleanly (FAST: the shutdown checkpoint is streamed
    to connected replicas), publish the stopped state, wait until the candidate's PostgreSQL
    has received WAL past our final checkpoint, then release the lock. When the candidate
    cannot be asked or does not catch up in time the action fails and leaves the request in
    place, and the agent reports it in ``LocalState.handover_failed``: the next decision is
    then to withdraw the request (``switchover_failed``: ClearFailover) as soon as the DCS
    answers, before any rule that starts, promotes or hands over (only a clean shutdown and
    the fail-closed demotion come first), so one request never leads to a second hand-over;
    after that the normal rules restart PostgreSQL as primary (the lock was never
    released)."""

    candidate: Upstream


@dataclass(frozen=True)
class ClearFailover:
    """Delete the ``failover`` key (request carried out, stale or impossible)."""


@dataclass(frozen=True)
class RestartPostgres:
    """Operator-requested restart: stop (FAST) and start again in ``role`` (a primary only
    while holding the lock with a confirmed lease; a replica from ``upstream``)."""

    role: str
    upstream: Upstream | None = None


@dataclass(frozen=True)
class Reinitialize:
    """Operator-requested re-clone of a replica: stop PostgreSQL (IMMEDIATE), re-create the
    data directory from ``source`` with the replica methods (as CloneReplica; a ``keep_data``
    method may reuse the old files, the others start from an emptied directory) and start as
    a replica of ``leader``. ``from_leader``: pg_basebackup (from the leader) alone."""

    source: Upstream
    leader: Upstream
    from_leader: bool = False


@dataclass(frozen=True)
class SlotSpec:
    """A replication slot pgha wants: ``type`` ``physical`` or ``logical`` (then with the
    ``database`` it was created in and its output ``plugin``)."""

    name: str
    type: str = "physical"
    database: str | None = None
    plugin: str | None = None


@dataclass(frozen=True)
class SyncSlots:
    """Bring this member's replication slots in line with the slot plan
    (:mod:`pgha.core.slots`), in this order: ``drop`` the named slots (each only while it is
    inactive: a slot that became active since it was observed is kept), ``create`` the missing
    ones (physical slots reserve WAL at once; logical ones only on a primary), then
    ``advance`` copies to at least the given LSN (``pg_replication_slot_advance``, which
    clamps to what this server has replayed; never backwards). One slot's failure does not
    stop the others; a copy that cannot be advanced because its WAL is gone is dropped and
    (physical) recreated, and logged."""

    create: tuple[SlotSpec, ...] = ()
    drop: tuple[str, ...] = ()
    advance: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class CopyLogicalSlots:
    """Replica only (PostgreSQL before 17 cannot create logical slots on a standby): read the
    state of ``slots`` from ``source`` (the running primary; ``pg_read_binary_file`` of each
    ``pg_replslot/<name>/state``, checked to be the same type, database and plugin), stop
    PostgreSQL, write them into our ``pg_replslot`` (fsynced) and start again as a replica of
    ``source``. Afterwards :class:`SyncSlots` advances them from the leader's ``status``."""

    source: Upstream
    slots: tuple[SlotSpec, ...]


@dataclass(frozen=True)
class WriteSyncKey:
    """Leader only: write the ``sync`` key as ours (``leader`` = our name) with ``voters`` as
    its ``sync_standby`` and ``quorum``. Ordering (DESIGN.md safety rule 8,
    :mod:`pgha.core.sync`): a voter leaves the key before PostgreSQL stops waiting for it and
    joins it only after PostgreSQL waited for it since a position it has flushed; a member
    about to promote writes it with no voter before promoting."""

    voters: tuple[str, ...] = ()
    quorum: int = 0


@dataclass(frozen=True)
class ClearSyncKey:
    """Leader only, synchronous mode off: delete the ``sync`` key (before PostgreSQL's
    ``synchronous_standby_names`` is given back to the user's configuration)."""


@dataclass(frozen=True)
class SetSyncStandbys:
    """Set ``synchronous_standby_names`` (``value``; None gives it back to the user's
    configuration) in the managed configuration, reload a running server and wait until it
    runs with it. Kept across restarts of PostgreSQL and of the agent."""

    value: str | None


@dataclass(frozen=True)
class PublishStatus:
    """Leader only: write the ``status`` key with ``optime`` (our WAL position when observed;
    None: not written), ``slots`` (the position of every permanent and member slot, so
    replicas advance their copies) and ``retain_slots``; and with ``failsafe`` set, the
    ``failsafe`` key (``{member: api_url}`` of every member)."""

    failsafe: Mapping[str, str] | None = None
    optime: int | None = None
    slots: Mapping[str, int] | None = None  # slot -> position published with ``optime``
    retain_slots: tuple[str, ...] = ()  # member slots kept for ``member_slots_ttl``


Action = (
    BootstrapCluster
    | WriteInitialize
    | CloneReplica
    | StartPostgres
    | Follow
    | Rejoin
    | AcquireLeader
    | PrePromote
    | Promote
    | Demote
    | ReleaseLeader
    | RebindLeader
    | StopPostgres
    | HandOver
    | ClearFailover
    | RestartPostgres
    | Reinitialize
    | SyncSlots
    | CopyLogicalSlots
    | PublishStatus
    | WriteSyncKey
    | ClearSyncKey
    | SetSyncStandbys
)


@functools.lru_cache(maxsize=1024)  # a pure function, called for every member every cycle
def slot_name(member: str) -> str:
    """Physical slot name for a member: lowercase, every non ``[a-z0-9_]`` char becomes ``_``."""
    out = "".join(c if (c.isascii() and (c.isalnum() or c == "_")) else "_"
                  for c in member.lower())
    return out[:63]
