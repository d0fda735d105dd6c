"""Domain operations on the DCS, written once on top of :class:`~pgha.dcs.base.KVStore`.

Key layout (Patroni-compatible) under ``<namespace>/<scope>/``: ``initialize``, ``config``,
``leader``, ``members/<name>``, ``status``, ``history``, ``failover``, ``sync``, ``failsafe``
(DESIGN.md section 1). The operator CLI reads and writes through this module as the agent does.

Failure behaviour: every method lets :class:`~pgha.dcs.base.DCSError` (and its subclass
``SessionExpired``) propagate; a lost compare-and-set or create race returns False. Values
written by someone else that cannot be parsed never raise: :func:`parse_snapshot` logs them at
WARNING on the ``pgha.dcs`` logger, naming the key, and leaves them out of the view.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from pgha.core.model import ClusterView, HistoryEntry, SyncKey
from pgha.core.timeline import trim_history
from pgha.dcs.base import KeyValue, KVStore, WatchEvent, scope_prefix
from pgha.dcs.cache import PrefixCache, WrittenMemo
from pgha.dcs.codec import StatusKey, dumps, history_entry_to_json, status_to_json, sync_to_json
from pgha.dcs.view import history_entries, json_object, parse_snapshot

__all__ = ["ClusterStore", "SessionSwitch", "parse_snapshot"]

log = logging.getLogger("pgha.dcs")

T = TypeVar("T")
P = ParamSpec("P")

_CAS_ATTEMPTS = 5


def _changes_view(method: Callable[Concatenate[ClusterStore, P], Coroutine[Any, Any, T]]
                  ) -> Callable[Concatenate[ClusterStore, P], Coroutine[Any, Any, T]]:
    """A write whose outcome the next cluster view must show: the watch-fed cache is
    told before it is sent (:meth:`PrefixCache.wrote`), so the next view is read."""

    async def write(self: ClusterStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        self.cache.wrote()
        return await method(self, *args, **kwargs)

    functools.update_wrapper(write, method)  # name and docstring
    return write


@dataclass(frozen=True)
class SessionSwitch:
    """What :meth:`ClusterStore.switch_session` did: ``old`` is the session our keys were
    moved from (None: we held none), ``new`` the session we hold now. ``leader``: True when
    the leader key (ours, bound to ``old``) was moved to ``new``; False when its
    compare-and-set was lost - the key changed or vanished since it was read, so it was not
    our lock any more; None when there was no leader key of ours to move."""

    old: str | None
    new: str | None
    leader: bool | None


class ClusterStore:
    """The cluster's DCS state, as seen and changed by member ``name``.

    The leader lock and the member key are ephemeral: bound to the KVStore session, renewed by
    :meth:`keepalive`, gone when it expires or the KVStore is closed.
    """

    def __init__(self, kv: KVStore, namespace: str, scope: str, name: str) -> None:
        self.kv = kv
        self.namespace = namespace
        self.scope = scope
        self.name = name
        self.prefix = scope_prefix(namespace, scope)
        self._rebound_to: str | None = None  # the session our last rebind_leader bound it to
        self._written = WrittenMemo()  # the leader-only keys (status, failsafe) we wrote
        self.cache = PrefixCache(kv, self.prefix)  # fed by the agent's watch
        self._parsed: tuple[int, ClusterView] | None = None  # (cache version, its view)

    def key(self, name: str) -> str:
        """Absolute key of ``name`` (e.g. ``leader``, ``members/pg1``)."""
        return self.prefix + name

    async def _get(self, name: str) -> KeyValue | None:
        key = self.key(name)
        snapshot = await self.kv.get_prefix(key)
        return snapshot.items.get(key)

    async def load(self) -> ClusterView:
        """One consistent read of every key of the cluster (it refills :attr:`cache`)."""
        snapshot = await self.cache.reload()
        view = parse_snapshot(self.prefix, snapshot)
        if self.cache.current and self.cache.revision == snapshot.revision:
            self._parsed = (self.cache.version, view)  # what the cache now holds
        return view

    def cached_view(self) -> ClusterView | None:
        """The cluster as the watch-fed :attr:`cache` holds it, with no request; None when
        the cache is not usable (:attr:`PrefixCache.usable`: call :meth:`load`). Parsed once
        per change of the cache.

        Every write of this store shows in the next view except our own member key and the
        leader-only ``status`` and ``failsafe`` keys, which reach the view through the
        watch (within its delivery delay, as every other member sees them): they are
        rewritten often and nothing this member decides reads them back."""
        if not self.cache.usable:
            return None
        version = self.cache.version
        if self._parsed is None or self._parsed[0] != version:
            snapshot = self.cache.snapshot()
            assert snapshot is not None
            self._parsed = (version, parse_snapshot(self.prefix, snapshot))
        return self._parsed[1]

    async def keepalive(self) -> None:
        """Renew the session holding our leader and member keys (SessionExpired if it is gone:
        those keys are gone too)."""
        await self.kv.keepalive()

    def watch(self, start_revision: int) -> AsyncIterator[WatchEvent]:
        """Changes to the cluster's keys after ``start_revision`` (see KVStore.watch)."""
        return self.kv.watch(self.prefix, start_revision)

    # -- leader and members -------------------------------------------------------------------

    @_changes_view
    async def acquire_leader(self) -> bool:
        """Atomically create the leader key holding our name, bound to our session. False when
        the key exists (held by anyone, including us)."""
        self._written.clear()
        return await self.kv.create(self.key("leader"), self.name.encode(), ephemeral=True)

    @_changes_view
    async def release_leader(self) -> bool:
        """Delete the leader key only if it holds our name AND is bound to our current session
        (compare-and-delete on the revision read). A key that merely holds our name, bound to
        another session (a previous process of ours, or another agent started with our name),
        is left alone and logged (DESIGN.md safety rule 7). True if deleted."""
        self._written.clear()
        key = self.key("leader")
        kv = await self._get("leader")
        if kv is None or kv.value != self.name.encode():
            return False
        session = self.kv.session_id
        if session is None or kv.session != session:
            log.warning("not releasing the leader key %s: it holds our name but is bound to "
                        "session %s, not ours (%s)", key, kv.session or "none",
                        session or "none")
            return False
        return await self.kv.delete(key, if_revision=kv.revision)

    @_changes_view
    async def rebind_leader(self, revision: int) -> bool:
        """Bind the leader key, seen holding our name at ``revision`` but bound to another
        session, to our session (opened on demand): one compare-and-set on ``revision``
        (etcd: a transaction on the key's mod_revision putting it with our lease; ZooKeeper:
        an ephemeral owner cannot change, so delete at the seen version and create it
        ephemeral in ONE multi - a delete followed by a separate create would leave a gap in
        which another member could take the lock; Consul: one transaction check-index,
        delete, lock with our session - a release by the old session and an acquire by ours
        would leave the same gap). No backend leaves the key absent at any moment. False
        when the key changed or vanished since: it is then not ours.
        Having to rebind again while our session is the one we bound it to means another
        agent runs under our name: logged CRITICAL."""
        self._written.clear()
        session = self.kv.session_id
        if session is not None and session == self._rebound_to:
            log.critical("the leader key was bound to our session %s and was moved to another "
                         "one under our name: another agent named %r is running", session,
                         self.name)
        rebound = await self.kv.put(self.key("leader"), self.name.encode(), ephemeral=True,
                                    if_revision=revision)
        if rebound:
            self._rebound_to = self.kv.session_id
            log.warning("leader key %s rebound to our session %s (it held our name, bound to "
                        "another session)", self.key("leader"), self._rebound_to)
        else:
            log.error("could not rebind the leader key %s: it changed or vanished since it "
                      "was read; it is not our lock", self.key("leader"))
        return rebound

    @_changes_view
    async def switch_session(self, ttl: float,
                             opened: Callable[[], None] | None = None) -> SessionSwitch:
        """Move our keys to a new session granted for ``ttl`` (a ``ttl`` change), never leaving
        the leader key absent or bound to a session nobody renews (DESIGN.md rules 2 and 7):

        1. ``kv.open_session(ttl)``: the new session S2 becomes current, the old S1 is
           retired; both are renewed by every keep-alive and counted with the smaller TTL;
           ``opened()`` is called then, before any key moves to S2 (the lease keeper caps its
           deadline there);
        2. the leader key, when it holds our name and is bound to S1, is moved to S2 with one
           compare-and-set on the revision read (the primitive :meth:`rebind_leader` uses:
           etcd transaction, ZooKeeper multi delete+create, Consul transaction), so it is
           bound to S1 or to S2 at every instant and never absent;
        3. our member key, when bound to S1, is moved the same way;
        4. ``kv.close_retired()`` ends S1, to which no key of ours is bound any more.

        DCSError at any step propagates and leaves a consistent state: nothing changed (step
        1), or S1 still retired and renewed with our keys bound to S1 or S2 (the core sees a
        leader key on S1 as not bound to our session and rebinds it, rule 7). Calling again
        then resumes at step 2 without opening another session."""
        kv = self.kv
        if kv.retired_session_id is None:
            await kv.open_session(ttl)
            if opened is not None:
                opened()
        old = kv.retired_session_id
        leader: bool | None = None
        if old is not None:
            lkv = await self._get("leader")
            if lkv is not None and lkv.value == self.name.encode() and lkv.session == old:
                leader = await kv.put(self.key("leader"), lkv.value, ephemeral=True,
                                      if_revision=lkv.revision)
                if not leader:
                    log.error("could not move the leader key %s to our new session %s: it "
                              "changed or vanished since it was read; it is not our lock",
                              self.key("leader"), kv.session_id)
            mkv = await self._get(f"members/{self.name}")
            if mkv is not None and mkv.session == old:
                await kv.put(mkv.key, mkv.value, ephemeral=True, if_revision=mkv.revision)
            await kv.close_retired()
        return SessionSwitch(old, kv.session_id, leader)

    async def touch_member(self, data: Mapping[str, Any]) -> None:
        """Write our ``members/<name>`` JSON, bound to our session."""
        await self.kv.put(self.key(f"members/{self.name}"), dumps(dict(data)), ephemeral=True)

    @_changes_view
    async def delete_member(self, name: str) -> bool:
        return await self.kv.delete(self.key(f"members/{name}"))

    # -- initialize ---------------------------------------------------------------------------

    @_changes_view
    async def claim_initialize(self) -> bool:
        """Create ``initialize`` = "" (persistent). True: we won the right to bootstrap."""
        return await self.kv.create(self.key("initialize"), b"")

    @_changes_view
    async def set_initialize(self, sysid: str) -> bool:
        """Record the system identifier: allowed when the key is absent or holds "" (CAS on its
        revision); True as well when it already holds ``sysid``; False when it holds another
        one (or the races were lost every time)."""
        value = sysid.encode()
        for _ in range(_CAS_ATTEMPTS):
            kv = await self._get("initialize")
            if kv is None:
                if await self.kv.create(self.key("initialize"), value):
                    return True
                continue
            if kv.value == value:
                return True
            if kv.value != b"":
                return False
            if await self.kv.put(self.key("initialize"), value, if_revision=kv.revision):
                return True
        return False

    @_changes_view
    async def cancel_initialize(self) -> bool:
        """Delete ``initialize`` only while it holds "" (a bootstrap that failed)."""
        return await self.kv.delete(self.key("initialize"), if_value=b"")

    # -- config, status, failover ---------------------------------------------------------------

    @_changes_view
    async def write_config(
        self, config: Mapping[str, Any], if_revision: int | None = None
    ) -> bool:
        """Write the dynamic configuration; with ``if_revision`` only if unchanged since."""
        return await self.kv.put(self.key("config"), dumps(dict(config)), if_revision=if_revision)

    async def read_config(self) -> tuple[dict[str, Any] | None, int | None]:
        """The ``config`` JSON object and its revision; ``(None, None)`` when absent or not
        an object (logged)."""
        kv = await self._get("config")
        if kv is None:
            return None, None
        return json_object(kv), kv.revision

    @_changes_view
    async def create_config(self, config: Mapping[str, Any]) -> bool:
        """Write the configuration only if there is none."""
        return await self.kv.create(self.key("config"), dumps(dict(config)))

    async def compare_and_set_config(self, config: Mapping[str, Any],
                                     revision: int | None) -> bool:
        """Write the configuration only if the key is still at ``revision`` (as read, e.g.
        ``ClusterView.key_revisions["config"]``); with None only if there is no key. False
        when someone else changed (or created) it first: nothing is written."""
        if revision is None:
            return await self.create_config(config)
        return await self.write_config(config, if_revision=revision)

    async def _put_if_changed(self, name: str, value: bytes) -> None:
        """Write a leader-only key unless unchanged (:class:`~pgha.dcs.cache.WrittenMemo`)."""
        if self._written.due(key := self.key(name), value):
            await self.kv.put(key, value)
            self._written.record(key, value)

    async def write_status(self, optime: int, slots: Mapping[str, int] | None = None,
                           retain_slots: Iterable[str] = (),
                           conn_url: str | None = None) -> None:
        """Publish the leader's WAL position, its slots' positions and the member slots it
        retains (:class:`~pgha.dcs.codec.StatusKey`), with ``(our name, conn_url)`` as the
        writer when ``conn_url`` is given (the key outlives the leader's session: whoever
        races after the leader's keys expired can still find its server)."""
        key = StatusKey(optime, dict(slots or {}), tuple(retain_slots),
                        (self.name, conn_url) if conn_url else None)
        await self._put_if_changed("status", dumps(status_to_json(key)))

    @_changes_view
    async def write_sync(self, voters: Iterable[str], quorum: int) -> None:
        """Write the ``sync`` key as ours: ``leader`` = our name, ``voters`` as its
        ``sync_standby``, ``quorum``. Only the leader writes it (the lock makes it the only
        writer); what it promises: :mod:`pgha.core.sync`."""
        key = SyncKey(leader=self.name, sync_standby=frozenset(voters), quorum=quorum)
        await self.kv.put(self.key("sync"), dumps(sync_to_json(key)))

    @_changes_view
    async def delete_sync(self) -> bool:
        """Delete the ``sync`` key (synchronous mode switched off). False when absent."""
        return await self.kv.delete(self.key("sync"))

    async def write_failsafe(self, members: Mapping[str, str]) -> None:
        """The leader's list of members that must confirm it while the DCS is unreachable
        (``failsafe_mode``): ``{name: api_url}``."""
        await self._put_if_changed("failsafe", dumps(dict(members)))

    @_changes_view
    async def write_failover(self, request: Mapping[str, Any]) -> None:
        """Store a switchover/failover request (``{leader?, member?, scheduled_at?}``)."""
        await self.kv.put(self.key("failover"), dumps(dict(request)))

    @_changes_view
    async def delete_failover(self, if_revision: int | None = None) -> bool:
        """Delete the switchover/failover request; with ``if_revision`` only if the key is
        still at that revision. False when there was none (or it changed meanwhile)."""
        return await self.kv.delete(self.key("failover"), if_revision=if_revision)

    # -- history ------------------------------------------------------------------------------

    async def read_history(self) -> tuple[HistoryEntry, ...]:
        kv = await self._get("history")
        return () if kv is None else history_entries(kv)

    @_changes_view
    async def append_history(self, entry: HistoryEntry, max_entries: int = 0) -> bool:
        """Append ``entry`` to the history list (read, modify, compare-and-set; retried on a
        lost race). Idempotent per timeline: if an entry for ``entry.timeline`` exists nothing
        is written and True returned. Entries are kept in timeline order; unparseable ones are
        dropped. With ``max_entries > 0`` only the ``max_entries`` highest timelines are kept
        (:func:`pgha.core.timeline.trim_history`).
        False when every attempt lost its race."""
        for _ in range(_CAS_ATTEMPTS):
            kv = await self._get("history")
            entries = list(history_entries(kv)) if kv is not None else []
            if any(e.timeline == entry.timeline for e in entries):
                return True
            entries.append(entry)
            entries.sort(key=lambda e: e.timeline)
            entries = trim_history(entries, max_entries)
            value = dumps([history_entry_to_json(e) for e in entries])
            if kv is None:
                ok = await self.kv.create(self.key("history"), value)
            else:
                ok = await self.kv.put(self.key("history"), value, if_revision=kv.revision)
            if ok:
                return True
        return False

    # -- maintenance --------------------------------------------------------------------------

    @_changes_view
    async def remove_cluster(self) -> int:
        """Delete every key under the cluster prefix, one by one in key order (not atomic: a
        member still running may write its keys again). Returns how many were deleted (a key
        someone else deleted meanwhile does not count)."""
        self._written.clear()
        snapshot = await self.kv.get_prefix(self.prefix)
        deleted = 0
        for key in sorted(snapshot.items):
            deleted += bool(await self.kv.delete(key))
        return deleted
