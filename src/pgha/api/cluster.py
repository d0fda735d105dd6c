"""Bodies of ``GET /cluster`` and ``GET /history``, as pure functions of a DCS snapshot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pgha.core.actions import slot_name
from pgha.core.model import ClusterView, Member
from pgha.core.slots import permanent_slots
from pgha.core.status import AgentStatus, sync_state


def lsn_text(value: int | None) -> str:
    """An LSN as PostgreSQL prints it (``16/B374D848``), ``unknown`` when None."""
    if value is None:
        return "unknown"
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def _host_port(member: Member) -> tuple[str | None, int | None]:
    host, _, port = member.conn_url.partition("://")[2].partition("/")[0].rpartition(":")
    host = host.rpartition("@")[2].strip("[]")
    return host or None, int(port) if port.isdigit() else None


def _scheduled_restart(member: Member, own: AgentStatus | None) -> Mapping[str, Any] | None:
    if own is not None and member.name == own.name:
        return own.scheduled_restart
    return member.scheduled_restart


def scheduled_switchover(view: ClusterView) -> dict[str, Any] | None:
    """``{at, from, to}`` of a switchover scheduled in the DCS ``failover`` key (``to`` only when
    a candidate is named), None when nothing is scheduled."""
    failover = view.failover or {}
    at = failover.get("scheduled_at")
    if not at:
        return None
    out: dict[str, Any] = {"at": at, "from": failover.get("leader")}
    if failover.get("member"):
        out["to"] = failover["member"]
    return out


def cluster_slots(view: ClusterView) -> dict[str, dict[str, Any]]:
    """The cluster's replication slots, by name: every streaming member's slot (``member``),
    those kept for members gone (``retained``) and the permanent ones (``permanent``, with
    ``database``/``plugin`` for logical slots), each with its ``type`` and the ``lsn`` the
    leader last published for it (``unknown`` when none)."""
    out: dict[str, dict[str, Any]] = {}
    for name, member in sorted(view.members.items()):
        if not member.tags.nostream:
            out[slot_name(name)] = {"type": "physical", "member": name}
    archive_only = {slot_name(n) for n, m in view.members.items() if m.tags.nostream}
    for name in set(view.retain_slots) - archive_only:
        out.setdefault(name, {"type": "physical", "retained": True})
    for name, spec in permanent_slots(view.config).items():
        entry = out.setdefault(name, {"type": spec.type})
        entry["permanent"] = True
        if spec.type == "logical":
            entry.update(database=spec.database, plugin=spec.plugin)
    for name, entry in out.items():
        entry["lsn"] = lsn_text(view.status_slots.get(name))
    return dict(sorted(out.items()))


def cluster_json(view: ClusterView, scope: str, own: AgentStatus | None = None) -> dict[str, Any]:
    """The ``GET /cluster`` body: members sorted by name. Roles: ``leader``, ``sync_standby``,
    ``quorum_standby`` (from the ``sync`` key) or ``replica``. Non-leaders also get ``lsn``/``lag``,
    ``receive_lsn``/``receive_lag`` and ``replay_lsn``/``replay_lag`` (LSN text, bytes behind the
    leader, ``unknown`` when not known). ``own`` (this agent's status)
    supplies its own ``scheduled_restart``."""
    leader_name = view.leader.name if view.leader else None
    sync = sync_state(view)
    members: list[dict[str, Any]] = []
    for name in sorted(view.members):
        m = view.members[name]
        host, port = _host_port(m)
        role = "replica"
        if name == leader_name:
            role = "leader"
        elif sync is not None and name in sync.standbys:
            role = "quorum_standby" if sync.quorum else "sync_standby"
        item: dict[str, Any] = {
            "name": name,
            "role": role,
            "state": m.state if name == leader_name else (m.replication_state or m.state),
            "api_url": m.api_url,
            "host": host,
            "port": port,
            "timeline": m.timeline,
            "pending_restart": m.pending_restart,
            "tags": m.tags.to_json(),
        }
        restart = _scheduled_restart(m, own)
        if restart:
            item["scheduled_restart"] = dict(restart)
        if name != leader_name:
            for prefix, position in (("receive_", m.receive_lsn), ("replay_", m.replay_lsn),
                                     ("", m.xlog_location)):
                lag = view.lag_of(position)
                item[f"{prefix}lsn"] = lsn_text(position)
                item[f"{prefix}lag"] = "unknown" if lag is None else lag
        members.append(item)
    out: dict[str, Any] = {"members": members, "scope": scope}
    if view.settings.use_slots:
        out["slots"] = cluster_slots(view)
    if view.settings.pause:
        out["pause"] = True
    switchover = scheduled_switchover(view)
    if switchover is not None:
        out["scheduled_switchover"] = switchover
    return out


def history_json(view: ClusterView | None,
                 discarded: Sequence[Mapping[str, Any]] = ()) -> list[list[Any]]:
    """The ``GET /history`` body: ``[timeline, lsn, reason, timestamp, new_leader]`` per
    timeline switch, oldest first; empty without a DCS view.

    A row for a timeline this member discarded WAL of (``discarded``: its reports, see
    :mod:`pgha.pg.waldump`) gets a sixth element ``{"discarded": [report, ...]}``; every
    other row keeps Patroni's five. Why a trailing element: Patroni's own rows grew the same
    way (three, then four, then five elements; older rows stay short in the DCS), so its
    clients index the fields they know and tolerate rows of other lengths (patronictl pads
    short rows); a separate key or a changed row would break them. Reports for a timeline
    that has no row (history trimmed by ``max_timelines_history``) are not shown here."""
    if view is None:
        return []
    by_timeline: dict[Any, list[dict[str, Any]]] = {}
    for report in discarded:
        by_timeline.setdefault(report.get("timeline"), []).append(dict(report))
    rows: list[list[Any]] = []
    for h in view.history:
        row: list[Any] = [h.timeline, h.lsn, h.reason, h.timestamp, h.new_leader]
        if h.timeline in by_timeline:
            row.append({"discarded": by_timeline[h.timeline]})
        rows.append(row)
    return rows
