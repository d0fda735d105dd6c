"""``pgha why [MEMBER]``: why the cluster has the leader it has, or why nobody took over.

Every member listed in the DCS is asked for its ``GET /decisions`` (concurrently, each under
:data:`TIMEOUT`; TLS and credentials as for every operator command, :mod:`pgha.cli.rest`). A
member that does not answer with a JSON list is named ``unreachable``, never an error.

Without MEMBER: the leader, and since when and why it leads (its newest record that took the
lock or promoted, with the standings it weighed); with no leader, one line per member saying
what keeps it out, e.g. ``no candidate: pg1 unreachable; pg2 nofailover; pg3 lag 3 MB > 1 MB``.
A member only named in another's standings (the former leader, whose member key expired) is
described from those standings. With MEMBER: its newest ``--limit`` records, oldest first.
``-f json|yaml`` print the same content as data (``pretty`` is the default; ``tsv`` does not
apply).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer

from pgha.cli import common
from pgha.cli.output import dump_yaml
from pgha.cli.rest import Call
from pgha.config import ClusterAccess
from pgha.core.model import ClusterView

TIMEOUT = 5.0
FORMATS = ("pretty", "json", "yaml")
# actions of a decision that made its member the leader
_TOOK_LOCK = frozenset({"AcquireLeader", "Promote", "BootstrapCluster"})

Records = Sequence[Mapping[str, Any]]
# member name -> its records (oldest first), or None when it did not answer
Answers = Mapping[str, Records | None]


def fetch(ctx: typer.Context, config: ClusterAccess, view: ClusterView, names: Sequence[str],
          limit: int | None = None) -> Answers:
    """``GET /decisions`` of each named member of ``view`` (None: no usable answer)."""
    members = [view.members[n] for n in names if n in view.members]
    path = "/decisions" if limit is None else f"/decisions?limit={limit}"
    answers = common.api_all(ctx, config, [Call(m, "GET", path) for m in members],
                             timeout=TIMEOUT) if members else []
    out: dict[str, Records | None] = {n: None for n in names}
    for answer in answers:
        reply = answer.result
        data = None if isinstance(reply, Exception) or reply.status != 200 else reply.json()
        out[answer.member.name] = [r for r in data if isinstance(r, dict)] \
            if isinstance(data, list) else None
    return out


def _standings(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = record.get("standings")
    return [s for s in found if isinstance(s, dict)] if isinstance(found, list) else []


def _brief(record: Mapping[str, Any] | None) -> str:
    """What a member's newest record says about it, in a few words."""
    if record is None:
        return "no decision recorded"
    own = _standings(record)
    if own and own[0].get("summary"):
        return str(own[0]["summary"])
    return f"{record.get('reason', '?')}: {record.get('message', '')}"


def _took_lock(record: Mapping[str, Any]) -> bool:
    actions = record.get("actions")
    return isinstance(actions, list) and bool(_TOOK_LOCK & {str(a) for a in actions})


def _line(standings: Sequence[Mapping[str, Any]]) -> str:
    return "; ".join(f"{s.get('name')} {s.get('summary')}" for s in standings)


def explain_cluster(view: ClusterView, answers: Answers) -> dict[str, Any]:
    """The answer without MEMBER, as data (see the module docstring). Pure."""
    leader = view.leader.name if view.leader is not None else None
    members: dict[str, dict[str, Any]] = {}
    for name in sorted(answers):
        records = answers[name]
        if records is None:
            members[name] = {"reachable": False, "summary": "unreachable"}
            continue
        newest = records[-1] if records else None
        members[name] = {"reachable": True, "summary": _brief(newest), "latest": newest}
    # members only named in someone's standings (e.g. the last leader, its key expired)
    for name in sorted(answers):
        for record in reversed(answers[name] or []):
            for s in _standings(record)[1:]:
                other = str(s.get("name"))
                if other not in members:
                    members[other] = {"reachable": False, "summary": str(s.get("summary")),
                                      "seen_by": name}
    out: dict[str, Any] = {"leader": leader, "members": dict(sorted(members.items()))}
    if leader is not None:
        records = answers.get(leader)
        took = next((r for r in reversed(records or []) if _took_lock(r)), None)
        out["leader_record"] = took
        out["answer"] = _leader_text(leader, records, took)
        if view.history and view.history[-1].new_leader == leader:
            last = view.history[-1]
            out["history"] = {"timeline": last.timeline + 1, "timestamp": last.timestamp,
                              "reason": last.reason}
        return out
    parts = [f"{n} {m['summary']}" for n, m in out["members"].items()]
    taking = [n for n, m in out["members"].items() if m.get("latest") is not None
              and _took_lock(m["latest"])]
    head = f"no leader yet: {', '.join(taking)} taking the lock" if taking else "no candidate"
    out["answer"] = f"{head}: {'; '.join(parts)}" if parts else f"{head}: no member answered"
    return out


def _leader_text(leader: str, records: Records | None,
                 took: Mapping[str, Any] | None) -> str:
    if records is None:
        return f"leader {leader} (unreachable: its decisions are unknown)"
    if took is None:
        return f"leader {leader} (its promotion is not among its recorded decisions)"
    text = (f"leader {leader} since {took.get('time')}: {took.get('reason')}: "
            f"{took.get('message')}")
    standings = _standings(took)
    return text + (f" (compared: {_line(standings[1:])})" if standings[1:] else "")


def render_cluster(data: Mapping[str, Any]) -> str:
    lines = [str(data["answer"])]
    history = data.get("history")
    if history:
        lines.append(f"  timeline {history['timeline']} since {history['timestamp']} "
                     f"({history['reason']})")
    if data.get("leader") is not None:
        for name, m in data["members"].items():
            if name != data["leader"]:
                lines.append(f"  {name}: {m['summary']}")
    return "\n".join(lines)


def render_member(name: str, records: Records) -> str:
    if not records:
        return f"{name}: no decision recorded"
    lines = [f"{name}: {len(records)} recent decision(s), oldest first"]
    for r in records:
        count = r.get("count", 1)
        repeat = f" (x{count}, last {r.get('last_seen')})" if count != 1 else ""
        actions = ", ".join(str(a) for a in r.get("actions") or []) or "none"
        lines.append(f"{r.get('time')} {r.get('reason')}: {r.get('message')} "
                     f"[actions: {actions}; role {r.get('role')}, timeline {r.get('timeline')},"
                     f" lag {r.get('lag')}, leader {r.get('leader')}]{repeat}")
        standings = _standings(r)
        if standings:
            lines.append(f"    {_line(standings)}")
    return "\n".join(lines)


def _dump(data: Any, fmt: str) -> str:
    return json.dumps(data, indent=2) if fmt == "json" else dump_yaml(data)


def why(
    ctx: typer.Context,
    member: Annotated[str | None, typer.Argument(
        metavar="[MEMBER]", help="show this member's recent decisions")] = None,
    fmt: Annotated[str, typer.Option("-f", "--format",
                                     help="output format: pretty, json or yaml")] = "pretty",
    limit: Annotated[int, typer.Option("-n", "--limit", min=1,
                                       help="with MEMBER: how many records")] = 10,
) -> None:
    """Explain the current leader, or why no member took over (asks every member's REST API
    for its recent decisions)."""
    if fmt not in FORMATS:
        common.usage_error(f"--format: {fmt!r} does not apply here: use one of "
                           f"{', '.join(FORMATS)}")
    config = common.get_config(ctx)
    view = common.read_view(config)
    if member is not None:
        if member not in view.members:
            common.fail(f"{member}: not a member of cluster {config.scope}")
        records = fetch(ctx, config, view, [member], limit)[member]
        if records is None:
            common.fail(f"{member}: unreachable (no answer to GET /decisions)")
        data: Any = {"member": member, "records": list(records)}
        typer.echo(render_member(member, records) if fmt == "pretty" else _dump(data, fmt))
        return
    result = explain_cluster(view, fetch(ctx, config, view, sorted(view.members)))
    typer.echo(render_cluster(result) if fmt == "pretty" else _dump(result, fmt))
