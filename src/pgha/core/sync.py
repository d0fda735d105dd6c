"""Synchronous replication (pure): the leader's plan for ``synchronous_standby_names`` and the
``sync`` key, and who may take over after the leader is lost.

The promise (DESIGN.md safety rule 8): with ``synchronous_mode`` on or ``quorum``, a commit the
primary acknowledged while ``synchronous_standby_names`` named standbys is never lost by an
automatic failover. Two values carry it:

* PostgreSQL's rule, ``synchronous_standby_names`` (:class:`SyncNames`): a commit is
  acknowledged once ``num`` of ``names`` have flushed it (``ANY num (...)``; ``FIRST num
  (...)`` is judged as if it were ``ANY``: the standbys that acknowledge are the connected ones,
  so any ``num`` of the list may be the ones that did);
* the ``sync`` key (:class:`~pgha.core.model.SyncKey`): ``voters`` and ``quorum``. After the
  leader is lost, a member may take the lock only when it is the key's ``leader`` or when it
  has seen ``quorum + 1`` voters (itself included when it is one) none of which is ahead of it
  (:func:`failover_refusal`). ``synchronous_mode: on`` is the case ``quorum = 0``: every voter
  holds every acknowledged commit.

A pair of the two is *safe* (:func:`is_safe`) when every ``quorum + 1`` voters include one of
any ``num`` standbys that acknowledged: ``quorum >= |names| - num + |voters - names|``; with
no standby named, only when no voter can win. A voter that joins must also hold every commit
acknowledged before it joined: it is added only once PostgreSQL has named it since a WAL
position (``PgState.sync_names_since``) it has flushed (:func:`_confirmed`).

:func:`plan` moves from the observed pair towards the target one step at a time, and only
through safe pairs, whichever of the two writes PostgreSQL applies first (a reload reaches the
walsenders one by one): voters leave the key before PostgreSQL stops waiting for them, and join
it only after PostgreSQL waited for them since a position they have; the ``num`` of PostgreSQL
rises before the key's quorum falls, and the key's quorum rises before ``num`` falls.
``synchronous_mode_strict`` never lets the names become empty: with no eligible standby it keeps
the names PostgreSQL has (or the key's voters), else a placeholder no standby has, so commits
wait instead of being acknowledged unprotected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pgha.core.actions import Action, ClearSyncKey, SetSyncStandbys, WriteSyncKey
from pgha.core.model import ClusterView, LocalState, PeerStatus, SyncMode

PLACEHOLDER = "__patroni_strict_sync_replica_placeholder__"
"""A standby name no member has: named alone (strict mode, no eligible standby) it makes every
commit wait."""

_SIMPLE = re.compile(r"^[a-z_][a-z0-9_$]*$")
_NUM_LIST = re.compile(r"^(?:(FIRST|ANY)\s+)?(\d+)\s*\((.*)\)$", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class SyncNames:
    """A ``synchronous_standby_names`` value: PostgreSQL waits for ``num`` of ``names``
    (``quorum``: any ``num``; else the first ``num`` connected in list order). ``names`` keep
    their spelling; PostgreSQL compares them with application names case-insensitively, and so
    does :attr:`folded`."""

    names: tuple[str, ...] = ()
    num: int = 0
    quorum: bool = False

    @property
    def folded(self) -> frozenset[str]:
        return frozenset(n.casefold() for n in self.names)

    @property
    def empty(self) -> bool:
        return not self.names or self.num <= 0

    def render(self) -> str:
        """The value for postgresql.conf: ``''``, ``FIRST n (a,b)`` or ``ANY n (a,b)``."""
        if self.empty:
            return ""
        names = ",".join(_quote(n) for n in self.names)
        return f"{'ANY' if self.quorum else 'FIRST'} {self.num} ({names})"


def _quote(name: str) -> str:
    return name if _SIMPLE.match(name) else '"' + name.replace('"', '""') + '"'


def _split_names(text: str) -> tuple[str, ...]:
    """Standby names of a comma-separated list, double-quoted names unquoted."""
    names: list[str] = []
    current: list[str] = []
    quoted = in_quotes = False
    i = 0
    while i < len(text):
        c = text[i]
        if in_quotes:
            if c == '"' and text[i + 1:i + 2] == '"':
                current.append('"')
                i += 1
            elif c == '"':
                in_quotes = False
            else:
                current.append(c)
        elif c == '"':
            if not quoted and not "".join(current).strip():
                current = []  # spaces before the opening quote
            in_quotes = quoted = True
        elif c == ",":
            names.append("".join(current) if quoted else "".join(current).strip())
            current, quoted = [], False
        else:
            current.append(c)
        i += 1
    names.append("".join(current) if quoted else "".join(current).strip())
    return tuple(n for n in names if n)


def parse_sync_names(value: str | None) -> SyncNames:
    """Parse a ``synchronous_standby_names`` value as PostgreSQL does: ``a, b`` (``FIRST 1``),
    ``N (a, b)`` and ``FIRST N (...)``, ``ANY N (...)``; ``''`` or None: no standby. A value
    PostgreSQL would reject parses as :class:`SyncNames` with every name it can find and
    ``num`` 1 (judged conservatively)."""
    text = (value or "").strip()
    if not text:
        return SyncNames()
    match = _NUM_LIST.match(text)
    if match is None:
        return SyncNames(_split_names(text), 1, False)
    kind, num, names = match.group(1), int(match.group(2)), _split_names(match.group(3))
    return SyncNames(names, num, bool(kind) and kind.upper() == "ANY")


def is_safe(pg: SyncNames, voters: Iterable[str], quorum: int) -> bool:
    """Whether every set of ``quorum + 1`` of ``voters`` includes one of any ``pg.num`` of the
    standbys ``pg`` names (see the module docstring). A ``*`` in the names matches any standby:
    judged as if every voter were named."""
    folded = frozenset(v.casefold() for v in voters)
    if quorum + 1 > len(folded):
        return True  # no candidate can gather the votes
    if pg.empty:
        return False
    names = pg.folded | (folded if "*" in pg.folded else frozenset())
    return quorum >= len(names) - pg.num + len(folded - names)


@dataclass(frozen=True)
class SyncSettings:
    """The dynamic configuration keys of synchronous replication."""

    mode: SyncMode = SyncMode.OFF
    strict: bool = False
    node_count: int = 1
    maximum_lag_on_syncnode: int = -1


def settings_of(view: ClusterView) -> SyncSettings:
    s = view.settings
    return SyncSettings(s.synchronous_mode, s.synchronous_mode_strict,
                        max(1, s.synchronous_node_count), s.maximum_lag_on_syncnode)


# ----------------------------------------------------------------------- the leader's plan
def _by_folded(view: ClusterView) -> Mapping[str, str]:
    return {name.casefold(): name for name in view.members}


def _eligible(view: ClusterView, local: LocalState, sync: SyncSettings,
              current: frozenset[str]) -> list[str]:
    """Members streaming from us that may be synchronous, best first: higher
    ``sync_priority``, then a current voter (kept while it streams), then further ahead,
    then by name. ``nosync``, ``nostream``, ``sync_priority <= 0`` and (with
    ``maximum_lag_on_syncnode >= 0``) standbys lagging more than that are left out."""
    names = _by_folded(view)
    head = local.pg.wal_position
    ranked: list[tuple[int, bool, int, str]] = []
    for conn in local.pg.standbys:
        name = names.get(conn.name.casefold())
        if name is None or name == local.name or conn.state != "streaming":
            continue
        tags = view.members[name].tags
        if tags.nosync or tags.nostream or tags.sync_priority <= 0:
            continue
        flush = conn.flush_lsn
        if sync.maximum_lag_on_syncnode >= 0 and (
                flush is None or head is None or head - flush > sync.maximum_lag_on_syncnode):
            continue
        ranked.append((-tags.sync_priority, name not in current, -(flush or 0), name))
    return [name for *_, name in sorted(ranked)]


def _confirmed(local: LocalState, observed: SyncNames, names: Mapping[str, str]
               ) -> frozenset[str]:
    """Members PostgreSQL has waited for (named in ``observed``) since a position they have
    flushed, and still streaming: they hold every commit acknowledged so far."""
    since = local.pg.sync_names_since
    if since is None or observed.empty:
        return frozenset()
    out = set()
    for conn in local.pg.standbys:
        name = names.get(conn.name.casefold())
        if (name is not None and conn.name.casefold() in observed.folded
                and conn.state == "streaming" and conn.flush_lsn is not None
                and conn.flush_lsn >= since):
            out.add(name)
    return frozenset(out)


@dataclass(frozen=True)
class SyncPlan:
    """The leader's synchronous-replication actions for this cycle, in order, and a
    ``pending`` note when the target is not reached yet (the agent re-checks soon)."""

    actions: tuple[Action, ...] = ()
    pending: str | None = None


def _target(eligible: list[str], observed: SyncNames, voters: frozenset[str],
            sync: SyncSettings) -> SyncNames:
    quorum = sync.mode is SyncMode.QUORUM
    if quorum:
        picked = tuple(sorted(eligible))
        num = min(sync.node_count, len(picked))
    else:
        picked = tuple(sorted(eligible[:sync.node_count]))
        num = len(picked)
    if picked or not sync.strict:
        return SyncNames(picked, num, quorum)
    # strict and nobody eligible: keep whom PostgreSQL waits for, else the voters, else
    # the placeholder; commits wait
    if not observed.empty and PLACEHOLDER.casefold() not in observed.folded:
        return SyncNames(observed.names, observed.num, quorum)
    if voters:
        kept = tuple(sorted(voters))
        return SyncNames(kept, len(kept) if not quorum else 1, quorum)
    return SyncNames((PLACEHOLDER,), 1, quorum)


def plan(view: ClusterView, local: LocalState) -> SyncPlan:
    """The leader's next step (a running primary holding the lock; see the module docstring).

    1. Voters PostgreSQL is not to wait for any more leave the ``sync`` key (a key written by
       another leader, or none, is taken over with no voter).
    2. If PostgreSQL's names differ from the target: the target names, with the least ``num``
       that is safe with the key as step 1 leaves it (above the target's while the key's
       quorum is still low). The key write, if any, comes first.
    3. Otherwise: the voters PostgreSQL waited for since a position they have flushed join
       the key, and the quorum becomes the target's; written only when safe with what
       PostgreSQL observably waits for.
    Mode ``off``: the key is deleted, then ``synchronous_standby_names`` is given back to the
    user's configuration."""
    sync = settings_of(view)
    observed = parse_sync_names(local.pg.sync_standby_names)
    key = view.sync
    if sync.mode is SyncMode.OFF:
        off: list[Action] = [ClearSyncKey()] if key is not None else []
        if local.pg.sync_managed:
            off.append(SetSyncStandbys(None))
        return SyncPlan(tuple(off))
    ours = key is not None and key.leader == local.name
    key_voters = key.sync_standby if key is not None and ours else frozenset()
    key_quorum = key.quorum if key is not None and ours else 0
    target = _target(_eligible(view, local, sync, key_voters), observed, key_voters, sync)
    voters = frozenset(v for v in key_voters if v.casefold() in target.folded)
    quorum = key_quorum
    want = target
    if not target.empty:
        floor = len(target.folded) + len({v.casefold() for v in voters} - target.folded) \
            - quorum
        want = SyncNames(target.names, min(len(target.names), max(target.num, floor)),
                         target.quorum)
    if _differs(want, observed):
        if not is_safe(want, voters, quorum):
            voters = frozenset()  # cannot happen by construction; fail safe all the same
        actions: list[Action] = []
        if not ours or (voters, quorum) != (key_voters, key_quorum):
            actions.append(WriteSyncKey(tuple(sorted(voters)), quorum))
        actions.append(SetSyncStandbys(want.render()))
        return SyncPlan(tuple(actions), f"synchronous_standby_names set to {want.render()!r}")
    names = _by_folded(view)
    new_voters = voters | _confirmed(local, observed, names)
    new_quorum = 0 if observed.empty else max(0, len(observed.folded) - target.num)
    if not is_safe(observed, new_voters, new_quorum):
        new_voters, new_quorum = voters, quorum
    actions = []
    if not ours or (new_voters, new_quorum) != (key_voters, key_quorum):
        actions.append(WriteSyncKey(tuple(sorted(new_voters)), new_quorum))
    missing = sorted(n for n in target.names if n in view.members and n not in new_voters)
    pending = (f"waiting for {', '.join(missing)} to confirm synchronous replication"
               if missing else None)
    return SyncPlan(tuple(actions), pending)


def _differs(want: SyncNames, observed: SyncNames) -> bool:
    if want.empty and observed.empty:
        return False
    return (want.folded, want.num, want.quorum) != (observed.folded, observed.num,
                                                     observed.quorum)


def before_promote(view: ClusterView, local: LocalState) -> tuple[Action, ...]:
    """What a member about to promote (it holds the lock) does first in synchronous mode:
    take the ``sync`` key over with no voter (from now on only it may be promoted), and set
    ``synchronous_standby_names`` for its first commits: empty (until standbys join) or, in
    strict mode, the former leader and voters other than itself (or the placeholder) so that
    no commit is acknowledged unprotected. Mode off: a managed value is given back to the
    user's configuration."""
    sync = settings_of(view)
    if sync.mode is SyncMode.OFF:
        # a value left from when this member last led must not make its commits wait
        return (SetSyncStandbys(None),) if local.pg.sync_managed else ()
    names: SyncNames = SyncNames()
    if sync.strict:
        previous = set(view.sync.sync_standby) if view.sync is not None else set()
        if view.sync is not None and view.sync.leader:
            previous.add(view.sync.leader)
        previous.discard(local.name)
        kept = tuple(sorted(n for n in previous if n in view.members)) or (PLACEHOLDER,)
        names = SyncNames(kept, 1, sync.mode is SyncMode.QUORUM)
    value = names.render()
    if local.pg.sync_standby_names == value:
        return (WriteSyncKey((), 0),)  # already in force: promote without a reload
    return (WriteSyncKey((), 0), SetSyncStandbys(value))


# ----------------------------------------------------------------------- who may take over
def failover_refusal(view: ClusterView, local: LocalState) -> str | None:
    """Why this member must not take the free lock in synchronous mode (None: it may, as far
    as synchronous replication is concerned). The key's former leader always may. Without a
    ``sync`` key naming a leader (synchronous mode just switched on) the usual rules apply.
    Mode ``on``: only a voter. Quorum: ``quorum + 1`` voters that answered (itself included
    when it is one) and none of them ahead of it; ``local.peers`` must have been fetched."""
    sync = settings_of(view)
    key = view.sync
    if sync.mode is SyncMode.OFF or key is None or not key.leader:
        return None
    if key.leader == local.name:
        return None
    me = local.name in key.sync_standby
    if sync.mode is SyncMode.ON and key.quorum == 0:
        return None if me else (f"not a synchronous standby (the sync key names "
                                f"{', '.join(sorted(key.sync_standby)) or 'none'})")
    mine = local.pg.wal_position
    votes = 1 if me else 0
    for name in sorted(key.sync_standby - {local.name}):
        peer: PeerStatus | None = local.peers.get(name)
        if peer is None or peer.wal_position is None or mine is None:
            continue
        if peer.wal_position <= mine:
            votes += 1
    needed = key.quorum + 1
    if votes >= needed:
        return None
    return (f"only {votes} of the {needed} voters a quorum needs confirmed this member "
            "holds every acknowledged commit")


def switchover_refusal(view: ClusterView, candidate: str) -> str | None:
    """Why ``candidate`` cannot be the target of a switchover in synchronous mode: it must be
    listed in the current leader's ``sync`` key (Patroni's rule and message)."""
    sync = settings_of(view)
    key = view.sync
    if sync.mode is SyncMode.OFF or key is None or view.leader is None \
            or key.leader != view.leader.name:
        return None
    if candidate in key.sync_standby:
        return None
    return "candidate name does not match with sync_standby"


def sync_candidates(view: ClusterView) -> frozenset[str] | None:
    """The members a switchover may pick from in synchronous mode (None: any)."""
    sync = settings_of(view)
    key = view.sync
    if sync.mode is SyncMode.OFF or key is None or view.leader is None \
            or key.leader != view.leader.name:
        return None
    return key.sync_standby


__all__ = ["PLACEHOLDER", "SyncNames", "SyncPlan", "SyncSettings",
           "before_promote", "failover_refusal", "is_safe", "parse_sync_names", "plan",
           "switchover_refusal", "sync_candidates"]
