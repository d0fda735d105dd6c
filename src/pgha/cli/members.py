"""``pgha restart``, ``pgha reload`` and ``pgha reinit``: per-member actions through each
member's REST API, with patronictl 4.1's arguments, prompts and messages.

Arguments: ``CLUSTER [MEMBER]...`` (see :func:`pgha.cli.common.cluster_and_members`; the
members default to all, for reinit they must be named), filtered by ``-r`` role (reinit: replicas
only). The table of the cluster is printed first. Each command asks for confirmation naming the
members unless ``--force`` (a "no" prints ``Aborted <action>`` and exits 1) and prints one line
per member: ``Success: restart on member X``, ``Success: restart scheduled on member X``,
``Failed: another restart is already scheduled on member X`` (409), ``Success: reinitialize for
member X``, ``No changes to apply on member X`` / ``Reload request received for member X and
will be processed within N seconds``, else ``Failed: <action> for member X, status code=N,
(body)``. As with patronictl a member's refusal is reported on that line and the exit code stays
0; a member whose REST API cannot be reached exits 1.
"""

from __future__ import annotations

import random
import re
import time
from datetime import datetime, timedelta
from typing import Annotated, Any

import typer

from pgha.cli import common
from pgha.cli.cluster import format_list
from pgha.cli.common import fail, usage_error
from pgha.cli.rest import Call, RestError
from pgha.config import ClusterAccess
from pgha.core.model import ClusterView, Member

Members = Annotated[list[str] | None, typer.Argument(
    metavar="CLUSTER [MEMBER]...",
    help="the cluster (may be left out when the configuration has a scope) and members "
         "(default: all)")]
Role = Annotated[str, typer.Option(
    "-r", "--role", help="leader, primary, standby-leader, replica, standby or any")]
Force = Annotated[bool, typer.Option("--force", help="do not ask for confirmation")]

#: Seconds between two status polls of ``reinit --wait`` (tests shorten it).
POLL_INTERVAL = 1.0
FAILED_STATES = frozenset({"start failed", "crashed", "restart failed", "stop failed"})


def _choose(ctx: typer.Context, names: list[str] | None, role: str, group: int | None,
            ) -> tuple[ClusterAccess, ClusterView, list[Member]]:
    config, view, wanted = common.cluster_and_members(ctx, names or [], group)
    typer.echo(format_list(config.scope, view))
    members = common.select_members(config.scope, view, wanted, common.normalize_role(role))
    if not members:
        fail(f"No {role} among the members of cluster {config.scope}")
    return config, view, members


def _confirm(action: str, members: list[Member], force: bool) -> None:
    if not force and not typer.confirm(
            f"Are you sure you want to {action} members {common.member_list(members)}?"):
        fail(f"Aborted {action}")


def _unreachable(answer: common.Answer, action: str) -> bool:
    """Print ``Failed: ...`` for a member that did not answer; True when it did not."""
    if isinstance(answer.result, RestError):
        typer.echo(f"Failed: {action} for member {answer.member.name}, {answer.result}")
        return True
    return False


def reload(ctx: typer.Context, members: Members = None, group: common.GroupOption = None,
           role: Role = "any", force: Force = False) -> None:
    """Re-read the configuration and reload PostgreSQL on the members (POST /reload)."""
    config, view, chosen = _choose(ctx, members, role, group)
    _confirm("reload", chosen, force)
    wait = int(view.settings.loop_wait)
    unreachable = False
    for answer in common.api_all(ctx, config, [Call(m, "POST", "/reload") for m in chosen]):
        if _unreachable(answer, "reload"):
            unreachable = True
            continue
        name, reply = answer.member.name, answer.unwrap()
        if reply.status == 200:
            typer.echo(f"No changes to apply on member {name}")
        elif reply.status == 202:
            typer.echo(f"Reload request received for member {name} and will be processed "
                       f"within {wait} seconds")
        else:
            typer.echo(f"Failed: reload for member {name}, status code={reply.status}, "
                       f"({reply.text})")
    if unreachable:
        raise typer.Exit(1)


def _restart_body(role: str, pending: bool, pg_version: str | None, timeout: float | None,
                  when: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if pending:
        body["restart_pending"] = True
    server_role = {"leader": "primary", "primary": "primary", "replica": "replica",
                   "standby": "replica"}.get(role)
    if server_role:
        body["role"] = server_role
    if pg_version:
        body["postgres_version"] = pg_version
    if timeout is not None:
        body["timeout"] = timeout
    if when:
        body["schedule"] = when
    return body


def restart(
    ctx: typer.Context,
    members: Members = None,
    group: common.GroupOption = None,
    role: Role = "any",
    any_member: Annotated[bool, typer.Option("--any", help="restart one random member")] = False,
    pg_version: Annotated[str | None, typer.Option(
        "--pg-version", help="only members running an older PostgreSQL (e.g. 15.4)")] = None,
    pending: Annotated[bool, typer.Option(
        "--pending", help="only members with a pending restart")] = False,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", help="seconds the member waits for PostgreSQL to come back")] = None,
    scheduled: Annotated[str | None, typer.Option(
        "--scheduled", help="when: ISO 8601 timestamp or 'now'")] = None,
    force: Force = False,
) -> None:
    """Restart PostgreSQL on the members (POST /restart), one after the other."""
    norm_role = common.normalize_role(role)
    config, view, chosen = _choose(ctx, members, role, group)
    if scheduled is None and not force:
        next_hour = (datetime.now() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
        scheduled = typer.prompt(f"When should the restart take place (e.g. {next_hour}) ",
                                 default="now")
    if timeout is not None and timeout <= 0:
        usage_error("--timeout must be a positive number of seconds")
    when = common.parse_when(scheduled, "restart time")
    if pending and when is None:
        chosen = [m for m in chosen if m.pending_restart]
    if any_member and chosen:
        chosen = [random.choice(chosen)]
    if not force:
        if when is None:
            _confirm("restart", chosen, force)
        elif not typer.confirm(
                "The nodes needing a restart will be identified at the scheduled time, and "
                "might be different from the ones showing pending restart right now. Is this "
                "fine?" if pending else
                f"Are you sure you want to schedule restart of members "
                f"{common.member_list(chosen)} at {when.isoformat()}?"):
            fail("Aborted scheduled restart")
    if pg_version is None and not force:
        pg_version = typer.prompt(
            "Restart if the PostgreSQL version is less than provided (e.g. 9.5.2) ",
            default="", show_default=False)
    if pg_version and not re.fullmatch(r"\d+(\.\d+){0,2}", pg_version):
        usage_error(f"--pg-version {pg_version!r} is not a PostgreSQL version like 15.4")
    if when is not None and view.settings.pause:
        fail("Can't schedule restart in the paused state")
    body = _restart_body(norm_role, pending, pg_version, timeout,
                         when.isoformat() if when else None)
    budget = (timeout if timeout is not None else view.settings.primary_start_timeout) + 30
    unreachable = False
    for member in chosen:
        if when is not None and force and member.scheduled_restart:
            flushed = common.api_all(ctx, config, [Call(member, "DELETE", "/restart")])[0]
            if not isinstance(flushed.result, RestError) and flushed.result.status >= 400:
                typer.echo(f"Failed: flush scheduled restart for member {member.name}, "
                           f"status code={flushed.result.status}, ({flushed.result.text})")
        answer = common.api_all(ctx, config, [Call(member, "POST", "/restart", body)],
                                timeout=budget)[0]
        if _unreachable(answer, "restart"):
            unreachable = True
            continue
        reply = answer.unwrap()
        if reply.status == 200:
            typer.echo(f"Success: restart on member {member.name}")
        elif reply.status == 202:
            typer.echo(f"Success: restart scheduled on member {member.name}")
        elif reply.status == 409:
            typer.echo(f"Failed: another restart is already scheduled on member {member.name}")
        else:
            typer.echo(f"Failed: restart for member {member.name}, status code={reply.status}, "
                       f"({reply.text})")
    if unreachable:
        raise typer.Exit(1)


def _wait_reinit(ctx: typer.Context, config: ClusterAccess, members: list[Member],
                 before: dict[str, Any]) -> bool:
    """Poll ``GET /patroni`` until each member runs again on a new postmaster (or reports a
    failed state). True when every member completed. Ctrl-C stops waiting (exit 1)."""
    typer.echo(f"Waiting for reinitialize to complete on: {common.member_list(members)}")
    pending = {m.name: m for m in members}
    seen_down: set[str] = set()
    all_ok = True
    try:
        while pending:
            time.sleep(POLL_INTERVAL)
            answers = common.api_all(ctx, config, [Call(m, "GET", "/patroni")
                                                   for m in pending.values()])
            for answer in answers:
                name = answer.member.name
                if isinstance(answer.result, RestError):
                    continue  # the agent may be busy; keep asking
                data = answer.result.json() or {}
                state = data.get("state")
                if state in FAILED_STATES:
                    typer.echo(f"Reinitialize failed on: {name} (state {state})")
                    del pending[name]
                    all_ok = False
                elif state != "running":
                    seen_down.add(name)
                elif name in seen_down or data.get("postmaster_start_time") != before.get(name):
                    typer.echo(f"Reinitialize is completed on: {name}")
                    del pending[name]
    except KeyboardInterrupt:
        typer.echo(f"stopped waiting for: {', '.join(pending)}", err=True)
        return False
    return all_ok


def reinit(
    ctx: typer.Context,
    members: Members = None,
    group: common.GroupOption = None,
    force: Annotated[bool, typer.Option(
        "--force", help="no confirmation; cancel an action already running")] = False,
    from_leader: Annotated[bool, typer.Option(
        "--from-leader", help="clone from the leader even if a clonefrom member exists")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="wait until it completes")] = False,
) -> None:
    """Wipe the members' data and clone them again (POST /reinitialize); replicas only."""
    config, view, names = common.cluster_and_members(ctx, members or [], group)
    typer.echo(format_list(config.scope, view))
    if not names:
        replicas = [m.name for m in common.ordered(view) if m.name != common.leader_name(view)]
        if force or not replicas:
            usage_error("name the members to reinitialize")
        names = [typer.prompt(f"Which member do you want to reinitialize [{', '.join(replicas)}]?",
                              default="", show_default=False)]
    chosen = common.select_members(config.scope, view, names, "replica")
    _confirm("reinitialize", chosen, force)
    before: dict[str, Any] = {}
    if wait:
        for answer in common.api_all(ctx, config, [Call(m, "GET", "/patroni") for m in chosen]):
            if not isinstance(answer.result, RestError):
                before[answer.member.name] = (answer.result.json() or {}).get(
                    "postmaster_start_time")
    started: list[Member] = []
    unreachable = False
    for member in chosen:
        body = {"force": force, "from_leader": from_leader}
        while True:
            answer = common.api_all(ctx, config, [Call(member, "POST", "/reinitialize", body)])[0]
            if _unreachable(answer, "reinitialize"):
                unreachable = True
                break
            reply = answer.unwrap()
            if reply.status < 400:
                typer.echo(f"Success: reinitialize for member {member.name}")
                started.append(member)
                break
            typer.echo(f"Failed: reinitialize for member {member.name}, "
                       f"status code={reply.status}, ({reply.text})")
            if (not body["force"] and reply.text.endswith(" already in progress")
                    and typer.confirm("Do you want to cancel it and reinitialize anyway?")):
                body["force"] = True
                continue
            break
    all_ok = True
    if wait and started:
        all_ok = _wait_reinit(ctx, config, started, before)
    if unreachable or not all_ok:
        raise typer.Exit(1)
