"""``pgha restart``, ``pgha reload`` and ``pgha reinit``: per-member actions through each
member's REST API.

Members are the names given (all when none; a leading cluster name is ignored as in
patronictl), filtered by ``-r`` role. Each command asks for confirmation naming the members
unless ``--force``, prints one ``Success: ...`` / ``Failed: ...`` line per member and exits 1
when any member failed or did not answer.
"""

from __future__ import annotations

import random
import re
import time
from typing import Annotated, Any

import typer

from pgha.cli import common
from pgha.cli.common import fail, usage_error
from pgha.cli.rest import Call, RestError
from pgha.config import Config
from pgha.core.model import ClusterView, Member

Members = Annotated[list[str] | None, typer.Argument(
    metavar="[CLUSTER] [MEMBER]...", help="members (default: all)")]
Role = Annotated[str, typer.Option(
    "-r", "--role", help="leader, primary, standby-leader, replica, standby or any")]
Force = Annotated[bool, typer.Option("--force", help="do not ask for confirmation")]

#: Seconds between two status polls of ``reinit --wait`` (tests shorten it).
POLL_INTERVAL = 1.0
FAILED_STATES = frozenset({"start failed", "crashed", "restart failed", "stop failed"})


def _choose(ctx: typer.Context, names: list[str] | None, role: str) -> tuple[
        Config, ClusterView, list[Member]]:
    config = common.get_config(ctx)
    view = common.read_view(config)
    members = common.select_members(config.scope, view, common.strip_cluster(config, names or []),
                                    common.normalize_role(role))
    if not members:
        fail(f"no member of cluster {config.scope} matches")
    return config, view, members


def reload(ctx: typer.Context, members: Members = None, role: Role = "any",
           force: Force = False) -> None:
    """Re-read the configuration and reload PostgreSQL on the members (POST /reload)."""
    config, view, chosen = _choose(ctx, members, role)
    common.confirm(f"Are you sure you want to reload members {common.member_list(chosen)}?",
                   force)
    wait = int(view.settings.loop_wait)
    answers = common.api_all(ctx, config, [Call(m, "POST", "/reload") for m in chosen])
    ok = [common.report(a, "reload", {
        200: "No changes to apply on member {name}",
        202: "Reload request received for member {name} and will be processed within "
             f"{wait} seconds",
    }) for a in answers]
    if not all(ok):
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
    config, view, chosen = _choose(ctx, members, role)
    if any_member:
        chosen = [random.choice(chosen)]
    if scheduled is None and not force:
        scheduled = typer.prompt(
            "When should the restart take place (e.g. 2030-01-31T12:00+00:00)", default="now")
    if pg_version is None and not force:
        pg_version = typer.prompt(
            "Restart if the PostgreSQL version is less than provided (e.g. 15.4)",
            default="", show_default=False)
    if pg_version and not re.fullmatch(r"\d+(\.\d+){0,2}", pg_version):
        usage_error(f"--pg-version {pg_version!r} is not a PostgreSQL version like 15.4")
    if timeout is not None and timeout <= 0:
        usage_error("--timeout must be a positive number of seconds")
    when = common.parse_when(scheduled, "restart time")
    if when is not None and view.settings.pause:
        fail("Can't schedule restart in the paused state")
    common.confirm(f"Are you sure you want to restart members {common.member_list(chosen)}?",
                   force)
    body = _restart_body(norm_role, pending, pg_version, timeout,
                         when.isoformat() if when else None)
    budget = (timeout if timeout is not None else view.settings.primary_start_timeout) + 30
    failed = False
    for member in chosen:
        answer = common.api_all(ctx, config, [Call(member, "POST", "/restart", body)],
                                timeout=budget)[0]
        failed |= not common.report(answer, "restart", {
            200: "Success: restart on member {name}",
            202: "Success: restart scheduled on member {name}",
        })
    if failed:
        raise typer.Exit(1)


def _wait_reinit(ctx: typer.Context, config: Config, members: list[Member],
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
    force: Annotated[bool, typer.Option(
        "--force", help="no confirmation; cancel an action already running")] = False,
    from_leader: Annotated[bool, typer.Option(
        "--from-leader", help="clone from the leader even if a clonefrom member exists")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="wait until it completes")] = False,
) -> None:
    """Wipe the members' data and clone them again (POST /reinitialize)."""
    config = common.get_config(ctx)
    view = common.read_view(config)
    names = common.strip_cluster(config, members or [])
    if not names:
        replicas = [m.name for m in common.ordered(view) if m.name != common.leader_name(view)]
        if force or not replicas:
            usage_error("name the members to reinitialize")
        names = [typer.prompt(f"Which member do you want to reinitialize {replicas}")]
    chosen = common.select_members(config.scope, view, names, "any")
    common.confirm("Are you sure you want to reinitialize members "
                   f"{common.member_list(chosen)}?", force)
    before: dict[str, Any] = {}
    if wait:
        for answer in common.api_all(ctx, config, [Call(m, "GET", "/patroni") for m in chosen]):
            if not isinstance(answer.result, RestError):
                before[answer.member.name] = (answer.result.json() or {}).get(
                    "postmaster_start_time")
    started: list[Member] = []
    for member in chosen:
        body = {"force": force, "from_leader": from_leader}
        while True:
            answer = common.api_all(ctx, config, [Call(member, "POST", "/reinitialize", body)])[0]
            ok = common.report(answer, "reinitialize", {
                200: "Success: reinitialize for member {name}"})
            result = answer.result
            if (not ok and not isinstance(result, RestError) and not body["force"]
                    and result.reason().endswith("already in progress")
                    and typer.confirm("Do you want to cancel it and reinitialize anyway?")):
                body["force"] = True
                continue
            break
        if ok:
            started.append(member)
    all_ok = len(started) == len(chosen)
    if wait and started:
        all_ok = _wait_reinit(ctx, config, started, before) and all_ok
    if not all_ok:
        raise typer.Exit(1)
