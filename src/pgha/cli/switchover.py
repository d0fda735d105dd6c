"""``pgha switchover``, ``pgha failover`` and ``pgha flush``.

Switchover and failover are asked of the leader's REST API (``POST /switchover`` /
``POST /failover``; a failover in a cluster without a leader goes to the candidate). The
answer decides the exit code: 200 (done) and 202 (scheduled) exit 0 and print the member's
message with a timestamp; any other answer (412 not possible, 503 failed, 400 refused, ...)
prints ``Switchover failed, details: <code>, <body>`` and exits 1. When the member asked
cannot be reached, the other members are asked in turn (any agent carries the request out).
The request waits up to ``2 * max(10, loop_wait) + 15`` seconds: the member itself
waits up to ``2 * max(10, loop_wait)`` seconds for the new leader.

``flush ... switchover`` asks the leader (then the other members) to ``DELETE /switchover``;
when no member answers it deletes the ``failover`` key in the DCS directly, compare-and-set on
the revision it read. ``flush ... restart`` sends ``DELETE /restart`` to each chosen member.
"""

from __future__ import annotations

from typing import Annotated

import typer

from pgha.cli import common
from pgha.cli.cluster import format_list
from pgha.cli.common import fail, usage_error
from pgha.cli.rest import Call, RestError
from pgha.config import Config
from pgha.core.model import ClusterView, Member

Cluster = Annotated[str | None, typer.Argument(
    metavar="[CLUSTER]", help="cluster name (default: the configured scope)")]
Force = Annotated[bool, typer.Option("--force", help="do not ask for confirmation")]


def _wait_budget(view: ClusterView) -> float:
    return 2 * max(10.0, view.settings.loop_wait) + 15


def _candidates(view: ClusterView, leader: str | None) -> list[str]:
    return [m.name for m in common.ordered(view) if m.name != leader and m.tags.can_be_leader]


def _check_candidate(scope: str, candidate: str, candidates: list[str],
                     leader: str | None, what: str) -> None:
    if candidate == leader:
        fail(f"{what} target and source are the same.")
    if candidate not in candidates:
        fail(f"Member {candidate} does not exist in cluster {scope} or is tagged as "
             "nofailover")


def _send(ctx: typer.Context, config: Config, view: ClusterView, target: Member, path: str,
          body: dict[str, str], what: str) -> None:
    """Ask ``target``; when its REST API cannot be reached, ask the other members in turn
    (every agent carries out a switchover or failover request the same way: it writes the
    request to the DCS and waits for the outcome)."""
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
            typer.echo(f"{common.now_stamp()} {reply.reason()}")
            if reply.status == 200:
                typer.echo(format_list(config.scope, common.read_view(config)))
            return
        fail(f"{what} failed, details: {reply.status}, {reply.reason()}")
    fail(f"{what} failed: no member could be reached ({'; '.join(errors)})")


def switchover(
    ctx: typer.Context,
    cluster: Cluster = None,
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
    config = common.get_config(ctx, cluster)
    scope, view = config.scope, common.read_view(config)
    current = common.leader_name(view)
    if current is None or current not in view.members:
        fail(f"cluster {scope} has no leader: use failover --candidate")
    if leader is None:
        leader = current if force else typer.prompt("Primary", default=current)
    if leader != current:
        fail(f"Member {leader} is not the leader of cluster {scope}")
    candidates = _candidates(view, leader)
    if not candidates:
        fail("No candidates found to switchover to")
    if candidate is None and not force:
        candidate = typer.prompt(f"Candidate {candidates}", default="", show_default=True)
    if candidate:
        _check_candidate(scope, candidate, candidates, leader, "Switchover")
    if scheduled is None and not force:
        scheduled = typer.prompt(
            "When should the switchover take place (e.g. 2030-01-31T12:00+00:00)",
            default="now")
    when = common.parse_when(scheduled, "switchover time")
    if when is not None and view.settings.pause:
        fail("Can't schedule switchover in the paused state")
    if not force:
        typer.echo(format_list(scope, view))
        target_text = f" to {candidate}" if candidate else ""
        at_text = f" at {when.isoformat()}" if when else ""
        common.confirm(f"Are you sure you want to switchover cluster {scope}, demoting "
                       f"current leader {leader}{target_text}{at_text}?", force)
    body = {"leader": leader}
    if candidate:
        body["candidate"] = candidate
    if when is not None:
        body["scheduled_at"] = when.isoformat()
    _send(ctx, config, view, view.members[leader], "/switchover", body, "Switchover")


def failover(
    ctx: typer.Context,
    cluster: Cluster = None,
    candidate: Annotated[str | None, typer.Option(
        "--candidate", help="member to promote (required; asked for when missing)")] = None,
    force: Force = False,
) -> None:
    """Manual failover to a named member; works without a leader. Not schedulable."""
    config = common.get_config(ctx, cluster)
    view = common.read_view(config)
    lock = common.leader_name(view)
    leader = lock if lock in view.members else None
    candidates = _candidates(view, leader)
    if candidate is None:
        if force:
            usage_error("--candidate is required: a failover goes to a specific member")
        if not candidates:
            fail("No candidates found to failover to")
        candidate = typer.prompt(f"Candidate {candidates}", default="", show_default=False)
        if not candidate:
            usage_error("Failover could be performed only to a specific candidate")
    _check_candidate(config.scope, candidate, candidates, leader, "Failover")
    if not force:
        typer.echo(format_list(config.scope, view))
        demoting = f", demoting current leader {leader}" if leader else ""
        common.confirm(f"Are you sure you want to failover cluster {config.scope}{demoting} "
                       f"to {candidate}?", force)
    target = view.members[leader or candidate]
    _send(ctx, config, view, target, "/failover", {"candidate": candidate}, "Failover")


def _flush_switchover(ctx: typer.Context, config: Config, view: ClusterView) -> None:
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
    role: Annotated[str, typer.Option("-r", "--role", help="only members of this role")] = "any",
    force: Force = False,
) -> None:
    """Cancel scheduled restarts (per member) or the scheduled switchover."""
    target = args[-1]
    if target not in ("restart", "switchover"):
        usage_error(f"flush what? the last argument must be restart or switchover, not "
                    f"{target!r}")
    config = common.get_config(ctx)
    names = common.strip_cluster(config, args[:-1])
    view = common.read_view(config)
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
