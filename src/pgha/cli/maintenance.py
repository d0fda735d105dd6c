"""``pgha remove`` (wipe a cluster from the DCS) and ``pgha version``."""

from __future__ import annotations

from typing import Annotated

import typer

from pgha import __version__
from pgha.cli import common
from pgha.cli.common import fail
from pgha.cli.rest import Call, RestError

AWARE = "Yes I am aware"


#: Seconds ``remove`` may take to delete every key (one request per key).
REMOVE_BUDGET = 60.0


def remove(
    ctx: typer.Context,
    cluster: Annotated[str, typer.Argument(help="the cluster (scope) to remove")],
    group: common.GroupOption = None,
) -> None:
    """Delete every DCS key of a cluster. Always interactive: type the cluster name, then
    "Yes I am aware", then the leader's name if the cluster has a running leader."""
    config = common.get_config(ctx, cluster, group)
    view = common.read_view(config)
    if not view.key_revisions:
        fail(f"cluster {cluster} has no keys in the DCS (namespace {config.namespace})")
    typer.echo(f"Removing cluster {cluster}: {len(view.members)} member(s), leader "
               f"{common.leader_name(view) or 'none'}")
    if typer.prompt("Please confirm the cluster name to remove", default="",
                    show_default=False) != cluster:
        fail("Cluster names specified do not match")
    answer = typer.prompt(f'You are about to remove all information in DCS for {cluster}, '
                          f'please type: "{AWARE}"', default="", show_default=False)
    if answer != AWARE:
        fail(f'You did not exactly type "{AWARE}"')
    leader = view.leader_member
    if leader is not None and leader.state == "running":
        name = typer.prompt("This cluster currently is healthy. Please specify the leader name "
                            "to continue", default="", show_default=False)
        if name != leader.name:
            fail("You did not specify the current leader of the cluster")
    deleted = common.on_store(config, lambda store: store.remove_cluster(), REMOVE_BUDGET)
    typer.echo(f"Success: removed {deleted} key(s) of cluster {cluster} from the DCS")


def pg_version_text(server_version: object) -> str:
    """``150004`` -> ``15.4``; ``90624`` -> ``9.6.24``; anything else as text."""
    if isinstance(server_version, bool) or not isinstance(server_version, int):
        return str(server_version or "unknown")
    if server_version >= 100000:
        return f"{server_version // 10000}.{server_version % 10000}"
    return (f"{server_version // 10000}.{server_version // 100 % 100}."
            f"{server_version % 100}")


def version(
    ctx: typer.Context,
    args: Annotated[list[str] | None, typer.Argument(
        metavar="[CLUSTER [MEMBER]...]",
        help="cluster (default: the configured scope) and members (default: all)")] = None,
    group: common.GroupOption = None,
) -> None:
    """Print pgha's version, then (with a configuration) each member's pgha and PostgreSQL
    versions from its GET /patroni. Exits 1 when a member does not answer."""
    typer.echo(f"pgha version {__version__}")
    obj = ctx.find_root().obj or {}
    if not args and obj.get("config_file") is None and obj.get("dcs_url") is None:
        return
    cluster = args[0] if args else None
    names = args[1:] if args else []
    config = common.get_config(ctx, cluster, group)
    members = common.select_members(config.scope, common.read_view(config), names, "any")
    ok = True
    for answer in common.api_all(ctx, config, [Call(m, "GET", "/patroni") for m in members]):
        name = answer.member.name
        result = answer.result
        data = None if isinstance(result, RestError) else result.json()
        if not isinstance(data, dict):
            detail = result if isinstance(result, RestError) else f"status {result.status}"
            typer.echo(f"{name}: failed to get version: {detail}")
            ok = False
            continue
        agent = (data.get("patroni") or {}).get("version", "unknown")
        typer.echo(f"{name}: pgha {agent} PostgreSQL "
                   f"{pg_version_text(data.get('server_version'))}")
    if not ok:
        raise typer.Exit(1)
