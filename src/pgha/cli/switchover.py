"""``pgha switchover``, ``pgha failover`` and ``pgha flush``.

Switchover and failover follow patronictl 4.1 step by step, with its prompts and messages: the
current topology is printed first (``Current cluster topology`` and the table), then the checks
refuse with ``Error: ...`` and exit 1: ``This cluster has no leader`` (switchover),
``Member X is not the leader of cluster C``, ``No candidates found to switchover to``,
``Failover could be performed only to a specific candidate``, ``Member X is already the
leader of cluster C``, ``Member X does not exist in cluster C or is tagged as nofailover``,
``Can't schedule switchover in the paused state``; a "no" to the confirmation prints
``Aborting switchover`` (``Aborting scheduled switchover``) and exits 1.

The request goes to the leader's REST API (``POST /switchover`` / ``POST /failover``; a
failover in a cluster without a leader goes to the candidate). An answer 200 (done) or 202
(scheduled) prints the member's message after a timestamp; any other answer prints
``Switchover failed, details: <code>, <body>`` on stdout. Either way the table follows and the
exit code is 0, as with patronictl (scripts read the message). When the member asked cannot be
reached, the other members are asked in turn (any agent carries the request out); when none
answers it exits 1. The request waits up to ``2 * max(10, loop_wait) + 15`` seconds.

``flush ... switchover`` asks the leader (then the other members) to ``DELETE /switchover``;
when no member answers it deletes the ``failover`` key in the DCS directly, compare-and-set on
the revision it read. ``flush ... restart`` sends ``DELETE /restart`` to each chosen member.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

import typer

from pgha.cli import common
from pgha.cli.cluster import format_list
from pgha.cli.common import fail, usage_error
from pgha.cli.rest import Call, RestError
from pgha.config import ClusterAccess
from pgha.core.model import ClusterView, Member

Cluster = Annotated[str | None, typer.Argument(
    metavar="[CLUSTER]", help="cluster name (default: the configured scope)")]
Force = Annotated[bool, typer.Option("--force", help="do not ask for confirmation")]


def _wait_budget(view: ClusterView) -> float:
    return 2 * max(10.0, view.settings.loop_wait) + 15


def _candidates(view: ClusterView, leader: str | None) -> list[str]:
    return sorted(m.name for m in view.members.values()
                  if m.name != leader and m.tags.can_be_leader)


def _send(ctx: typer.Context, config: ClusterAccess, view: ClusterView, target: Member,
          path: str, body: dict[str, str], what: str) -> None:
    """Ask ``target``; when its REST API cannot be reached, ask the other members in turn
    (every agent carries out a switchover or failover request the same way: it writes the
    request to the DCS and waits for the outcome). Exits 1 when nobody answers."""
    others = [m for m in common.ordered(view) if m.name != target.name and m.api_url]
    errors: list[str] = []
    for member in [target, *others]:
        try:
            reply = common.api(ctx, config, member, "POST", path, body, _wait_budget(view))
        except RestError as exc:
            errors.append(f"{member.name}: {exc}")
            typer.echo(f"cannot reach {member.name} ({exc}); asking another member", err=True)
            continue
        if reply.status in (200, 202):
            typer.echo(f"{common.now_stamp()} {reply.text}")
        else:
            typer.echo(f"{what} failed, details: {reply.status}, {reply.text}")
        typer.echo(format_list(config.scope, common.read_view(config)))
        return
    fail(f"{what} failed: no member could be reached ({'; '.join(errors)})")


def _next_hour() -> str:
    return (datetime.now() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")


def _failover_or_switchover(ctx: typer.Context, action: str, cluster: str | None,
                            group: int | None, candidate: str | None, force: bool,
                            leader: str | None = None, scheduled: str | None = None) -> None:
    """patronictl's sequence of checks, prompts and messages (see the module docstring)."""
    config = common.get_config(ctx, cluster, group)
    scope, view = config.scope, common.read_view(config)
    typer.echo("Current cluster topology")
    typer.echo(format_list(scope, view))
    lock = common.leader_name(view)
    current = lock if lock in view.members else None
    if action == "switchover":
        if current is None:
            fail("This cluster has no leader")
        if leader is None:
            prompt = "Standby Leader" if common.is_standby_cluster(view) else "Primary"
            leader = current if force else typer.prompt(prompt, default=current)
        if leader != current:
            fail(f"Member {leader} is not the leader of cluster {scope}")
    candidates = _candidates(view, current)
    if not candidates:
        fail(f"No candidates found to {action} to")
    if candidate is None and not force:
        candidate = typer.prompt(f"Candidate {candidates}", default="", show_default=True)
    if action == "failover" and not candidate:
        fail("Failover could be performed only to a specific candidate")
    if candidate and candidate not in candidates:
        if candidate == current:
            fail(f"Member {candidate} is already the leader of cluster {scope}")
        fail(f"Member {candidate} does not exist in cluster {scope} or is tagged as nofailover")
    sync_mode = (view.config or {}).get("synchronous_mode")
    if (not force and action == "failover" and sync_mode and view.sync is not None
            and view.sync.sync_standby and candidate not in view.sync.sync_standby
            and not typer.confirm("Are you sure you want to failover to the asynchronous "
                                  f"node {candidate}?")):
        fail(f"Aborting {action}")
    when = None
    if action == "switchover":
        if scheduled is None and not force:
            scheduled = typer.prompt(
                f"When should the switchover take place (e.g. {_next_hour()} ) ", default="now")
        when = common.parse_when(scheduled, "switchover time")
        if when is not None and view.settings.pause:
            fail("Can't schedule switchover in the paused state")
    if not force:
        demoting = f", demoting current leader {current}" if current else ""
        if when is not None:
            if not typer.confirm(f"Are you sure you want to schedule switchover of cluster "
                                 f"{scope} at {when.isoformat()}{demoting}?"):
                fail(f"Aborting scheduled {action}")
        elif not typer.confirm(f"Are you sure you want to {action} cluster {scope}{demoting}?"):
            fail(f"Aborting {action}")
    body: dict[str, str] = {}
    if leader and action == "switchover":
        body["leader"] = leader
    if candidate:
        body["candidate"] = candidate
    if when is not None:
        body["scheduled_at"] = when.isoformat()
    target = view.members[current] if current else view.members[str(candidate)]
    _send(ctx, config, view, target, f"/{action}", body, action.title())


def switchover(
    ctx: typer.Context,
    cluster: Cluster = None,
    group: common.GroupOption = None,
    leader: Annotated[str | None, typer.Option(
        "--leader", "--primary", "--master", help="the current leader (checked)")] = None,
    candidate: Annotated[str | None, typer.Option(
        "--candidate", help="member to promote (default: the healthiest one)")] = None,
    scheduled: Annotated[str | None, typer.Option(
        "--scheduled", help="when: ISO 8601 timestamp or 'now'")] = None,
    force: Force = False,
) -> None:
    """Planned switchover: demote the leader and promote a replica (now or at a given time).
    Asks for missing values and a confirmation unless --force."""
    _failover_or_switchover(ctx, "switchover", cluster, group, candidate, force, leader,
                            scheduled)


def failover(
    ctx: typer.Context,
    cluster: Cluster = None,
    group: common.GroupOption = None,
    candidate: Annotated[str | None, typer.Option(
        "--candidate", help="member to promote (required; asked for when missing)")] = None,
    force: Force = False,
) -> None:
    """Manual failover to a named member; works without a leader. Not schedulable."""
    _failover_or_switchover(ctx, "failover", cluster, group, candidate, force)


def _flush_switchover(ctx: typer.Context, config: ClusterAccess, view: ClusterView) -> None:
    failover_key = view.failover or {}
    revision = view.key_revisions.get("failover")
    if not failover_key.get("scheduled_at") or revision is None:
        typer.echo("No pending scheduled switchover found")
        return
    errors: list[str] = []
    for member in common.ordered(view):  # the leader first
        try:
            reply = common.api(ctx, config, member, "DELETE", "/switchover")
        except RestError as exc:
            errors.append(str(exc))
            continue
        if reply.status == 200:
            typer.echo("Success: scheduled switchover deleted")
            return
        if reply.status == 404:
            typer.echo("No pending scheduled switchover found")
            return
        fail(f"flush scheduled switchover on {member.name}: status code={reply.status}, "
             f"({reply.reason()})")
    for error in errors:
        typer.echo(f"warning: {error}", err=True)
    if not common.on_store(config, lambda store: store.delete_failover(if_revision=revision)):
        fail("the failover key changed while flushing it; nothing was deleted, run flush again")
    typer.echo("Success: scheduled switchover deleted (in the DCS: no member's REST API "
               "answered)")


def flush(
    ctx: typer.Context,
    args: Annotated[list[str], typer.Argument(
        metavar="[CLUSTER] [MEMBER]... restart|switchover",
        help="members (default: all) and what to flush")],
    group: common.GroupOption = None,
    role: Annotated[str, typer.Option("-r", "--role", help="only members of this role")] = "any",
    force: Force = False,
) -> None:
    """Cancel scheduled restarts (per member) or the scheduled switchover."""
    target = args[-1]
    if target not in ("restart", "switchover"):
        usage_error(f"flush what? the last argument must be restart or switchover, not "
                    f"{target!r}")
    config, view, names = common.cluster_and_members(ctx, args[:-1], group)
    if target == "switchover":
        if names:
            usage_error("flush switchover takes no member names")
        _flush_switchover(ctx, config, view)
        return
    members = common.select_members(config.scope, view, names, common.normalize_role(role))
    if not members:
        fail("no member matches")
    common.confirm("Are you sure you want to flush scheduled restarts of members "
                   f"{common.member_list(members)}?", force)
    answers = common.api_all(ctx, config, [Call(m, "DELETE", "/restart") for m in members])
    ok = [common.report(a, "flush scheduled restart", {
        200: "Success: flush scheduled restart for member {name}",
        404: "No scheduled restart for member {name}",
    }) for a in answers]
    if not all(ok):
        raise typer.Exit(1)
