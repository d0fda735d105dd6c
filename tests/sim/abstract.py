"""The abstract state of a simulated cluster: what the exhaustive explorer
(:mod:`tests.sim.explore`) deduplicates states by.

:func:`fingerprint` keeps, per member: its PostgreSQL (node up, data, running, role, timeline,
upstream, control state, ``synchronous_standby_names``, stalled), its WAL as the *order* of the
positions the state holds (segments, checkpoint, timeline switch points, the acknowledged
commits, the DCS positions) rather than their bytes, whether it is past
``maximum_lag_on_failover`` behind the last known leader position, and its agent (alive, DCS
session and lease deadlines, next cycle and keep-alive, repeat guard, retry backoff, what it
last published, partition, broken keep-alives); and the DCS keys (positions, the ``status``
key's slot positions included, by order; addresses and timestamps left out), whose session the
leader key is bound to, the acknowledged commits. Instants are kept relative to now, in quanta,
clamped to :data:`HORIZON` quanta: two states a few loop_waits apart in a quiet cluster are
one. Left out: absolute times, byte counts, counters (revisions, generations, session ids), the
random generator's state, caches.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from tests.sim.cluster import Sim
from tests.support.fake_pg import Segments

HORIZON = 40  # relative instants are kept up to this many quanta either side of now


def fingerprint(sim: Sim, quantum: float = 0.5) -> tuple[Any, ...]:
    """The abstract state of ``sim`` (see the module docstring): equal for states the
    exploration treats as one. Reads only; changes nothing (no session expiry either)."""
    now = sim.now()

    def when(t: float | None) -> int | None:
        if t is None:
            return None
        return max(-HORIZON, min(HORIZON, round((t - now) / quantum)))

    keys = {k.rsplit("/sim/", 1)[1]: v for k, v in sim.backend.dump().items()}
    parsed = {k: _json(v) for k, v in keys.items() if k != "leader" and k != "initialize"}
    rank = _ranks(sim, parsed)
    limit = sim.settings.maximum_lag_on_failover
    status = parsed.get("status")
    optime = status.get("optime") if isinstance(status, dict) else None
    optime = optime if isinstance(optime, int) else None
    leader_name = keys["leader"].decode() if "leader" in keys else None
    lead_key = parsed.get(f"members/{leader_name}")
    lead_pos = lead_key.get("xlog_location") if isinstance(lead_key, dict) else None
    head = max([p for p in (optime, lead_pos) if isinstance(p, int)], default=None)

    def segs(s: Segments) -> tuple[tuple[int, int], ...]:
        return tuple((tl, rank[end]) for tl, end in s)

    members = []
    for name, m in sim.members.items():
        pg = m.pg
        seen = pg.sync_seen
        members.append((
            name, pg.node_up, pg.data.value, pg.running, pg.role, pg.timeline, pg.upstream,
            pg.control.value, rank.get(pg.ckpt_lsn), segs(pg.segments),
            tuple((tl, rank[lsn]) for tl, lsn in pg.history), pg.known_tli, pg.sync_names,
            pg.sync_managed, None if seen is None else (seen[0], rank[seen[1]]),
            pg.fresh_initdb, when(pg.down_since), pg.stalled_until > now, pg.isolated,
            None if optime is None else optime - pg.wal > limit,
            None if head is None else head - pg.wal > limit,
            _agent(sim, name, when),
            None if m.device is None else (when(m.device.fires_at), m.device.magic,
                                           m.watchdog is not None and m.watchdog.armed)))
    leader = None
    if leader_name is not None:
        entry = sim.backend._data.get("/service/sim/leader")  # no public accessor
        leader = (leader_name, _session_owner(sim, entry.session if entry else None))
    dcs = tuple(sorted((k, _abstract(v, rank)) for k, v in parsed.items()))
    return (tuple(members), leader, keys.get("initialize"), dcs, segs(sim.acked),
            sim._watched == sim._watch_signature(), sim.backend.fail,
            tuple(sorted(sim._unfenced_now)))


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


_POSITIONS = frozenset({"xlog_location", "receive_lsn", "replay_lsn", "optime", "lsn"})
_DROPPED = frozenset({"conn_url", "api_url", "version", "scheduled_at", "timestamp"})


def _abstract(value: Any, rank: dict[int | None, int]) -> Any:
    """A DCS value with WAL positions replaced by their rank and addresses or timestamps
    left out; hashable."""
    if isinstance(value, dict):
        return tuple(sorted((k, rank[v] if k in _POSITIONS and isinstance(v, int)
                             else _slot_ranks(v, rank) if k == "slots"
                             else _abstract(v, rank))
                            for k, v in value.items() if k not in _DROPPED))
    if isinstance(value, list):
        # history entries: [timeline, lsn, reason, timestamp, new_leader]
        if len(value) >= 2 and all(isinstance(v, int) for v in value[:2]) \
                and not isinstance(value[0], bool):
            return (value[0], rank[value[1]], *(_abstract(v, rank) for v in value[2:3]),
                    *(_abstract(v, rank) for v in value[4:]))
        return tuple(_abstract(v, rank) for v in value)
    return value


def _slot_ranks(value: Any, rank: dict[int | None, int]) -> Any:
    """The ``status`` key's ``slots`` (slot -> position), positions by rank."""
    if not isinstance(value, dict):
        return _abstract(value, rank)
    return tuple(sorted((k, rank[v] if isinstance(v, int) else _abstract(v, rank))
                        for k, v in value.items()))


def _positions(value: Any) -> Iterator[int]:
    if isinstance(value, dict):
        for k, v in value.items():
            if k in _POSITIONS and isinstance(v, int):
                yield v
            elif k == "slots" and isinstance(v, dict):
                yield from (p for p in v.values() if isinstance(p, int))
            else:
                yield from _positions(v)
    elif isinstance(value, list):
        if len(value) >= 2 and all(isinstance(v, int) for v in value[:2]) \
                and not isinstance(value[0], bool):
            yield value[1]
        for v in value:
            yield from _positions(v)


def _ranks(sim: Sim, parsed: dict[str, Any]) -> dict[int | None, int]:
    """Every WAL position the state holds -> its rank among them (their order is what the
    abstraction keeps)."""
    points: set[int] = set(_positions(list(parsed.values())))
    points.update(end for _, end in sim.acked)
    for m in sim.members.values():
        pg = m.pg
        points.update(end for _, end in pg.segments)
        points.update(lsn for _, lsn in pg.history)
        if pg.ckpt_lsn is not None:
            points.add(pg.ckpt_lsn)
        if pg.sync_seen is not None:
            points.add(pg.sync_seen[1])
    return {p: i for i, p in enumerate(sorted(points))}


def _session_owner(sim: Sim, session: int | None) -> str | None:
    """Whose session ``session`` is: ``m0`` (current), ``m0~`` (retired), ``?`` (another)."""
    if session is None:
        return None
    for name, m in sim.members.items():
        kv = m.kv
        if kv is None:
            continue
        if kv.session_id == str(session):
            return name
        if kv.retired_session_id == str(session):
            return name + "~"
    return "?"


def _agent(sim: Sim, name: str, when: Callable[[float | None], int | None]) -> tuple[Any, ...]:
    """The agent-side state of member ``name``: its loop, lease, session, DCS client."""
    m = sim.members[name]
    kv = m.kv
    sessions = sim.backend._sessions  # no public accessor with the ttl
    session = None
    if kv is not None:
        own = sessions.get(int(kv.session_id)) if kv.session_id else None
        retired = sessions.get(int(kv.retired_session_id)) if kv.retired_session_id else None
        session = (kv.session_id is not None, when(own.expires) if own else None,
                   when(retired.expires) if retired else None, kv._closed,
                   kv.keepalive_broken_until > sim.now(), kv.partitioned)
    if not m.agent_alive:
        return (False, session)
    assert m.executor is not None and m.publisher is not None
    retry = m.executor.retry
    records = tuple(sorted((k, min(r.failures, 4), when(r.retry_at))
                           for k, r in retry._records.items())) if retry is not None else ()
    written = m.publisher._member_json
    published = None if written is None else tuple(sorted(
        (k, str(v)) for k, v in written.items() if k not in _POSITIONS))
    keepalive = min((t for t, _, who, kind in sim.events
                     if kind == "keepalive" and who == f"{name}#{m.generation}"), default=None)
    view = m.last_view
    last_view = None if view is None else (
        view.revision == sim.backend.revision, view.leader.name if view.leader else None)
    failed = m.executor.failed_handover
    return (True, session, when(m.lease_deadline), when(m.next_cycle), when(keepalive),
            when(m.guard_until) if m.guard_until > sim.now() else None, min(m.repeats, 4),
            m.handover_failed, m.restart_requested, m.reinit_requested,
            failed.name if failed is not None else None, records, published,
            when(m.publisher._member_written), last_view,
            m.last_leader.name if m.last_leader is not None else None,
            tuple(sorted(m.known_members)))
