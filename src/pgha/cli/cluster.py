"""``pgha list``: the cluster's members as seen in the DCS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from pgha.config import Config
from pgha.core.model import ClusterView
from pgha.dcs.base import DCSError
from pgha.dcs.factory import open_kv
from pgha.dcs.store import ClusterStore

MB = 1024 * 1024


async def read_view(config: Config, timeout: float = 5.0) -> ClusterView:
    """One consistent read of the cluster's keys (no session is opened)."""
    kv = open_kv(config, ttl=30, timeout=timeout)
    async with kv:
        return await ClusterStore(kv, config.namespace, config.scope, config.name).load()


def member_rows(view: ClusterView) -> list[dict[str, Any]]:
    """One row per member, leader first: Member, Host, Role, State, TL, Lag in MB."""
    leader = view.leader.name if view.leader else None
    rows: list[dict[str, Any]] = []
    for name in sorted(view.members, key=lambda n: (n != leader, n)):
        m = view.members[name]
        host = m.conn_url.partition("://")[2].partition("/")[0]
        is_leader = name == leader
        lag: int | str = ""
        if not is_leader:
            behind = view.lag_of(m.xlog_location)
            lag = "unknown" if behind is None else behind // MB
        state = m.state
        if not is_leader and m.state == "running" and m.replication_state:
            state = m.replication_state
        rows.append({
            "Member": name,
            "Host": host,
            "Role": "Leader" if is_leader else "Replica",
            "State": state,
            "TL": m.timeline if m.timeline is not None else "",
            "Lag in MB": lag,
        })
    return rows


def render_table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A bordered text table; numbers right-aligned, the title set into the top border."""
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    sep = "+" + "+".join("-" * (widths[c] + 2) for c in columns) + "+"
    head = f"+ {title} "
    top = head + sep[len(head):] if len(head) < len(sep) else head + "+"

    def cell(c: str, v: Any) -> str:
        text = str(v)
        return text.rjust(widths[c]) if isinstance(v, int) else text.ljust(widths[c])

    lines = [top, "| " + " | ".join(c.ljust(widths[c]) for c in columns) + " |", sep]
    lines += ["| " + " | ".join(cell(c, r.get(c, "")) for c in columns) + " |" for r in rows]
    lines.append(sep)
    return "\n".join(lines)


def format_list(config: Config, view: ClusterView) -> str:
    sysid = view.initialize or ("initializing" if view.initialize == "" else "uninitialized")
    rows = member_rows(view)
    text = render_table(f"Cluster: {config.scope} ({sysid})", rows,
                        ["Member", "Host", "Role", "State", "TL", "Lag in MB"])
    if view.settings.pause:
        text += "\n Maintenance mode: on"
    return text


def list_members(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option("-f", "--format", help="pretty or json")] = "pretty",
) -> None:
    """Show the cluster's members: Member, Host, Role, State, TL, Lag in MB."""
    from pgha.cli.daemon import load_or_exit

    path: Path | None = ctx.obj.get("config_file") if ctx.obj else None
    if path is None:
        typer.echo("no configuration: pass -c CONFIG (or set PGHA_CONFIG_FILE)", err=True)
        raise typer.Exit(2)
    config = load_or_exit(path)
    try:
        view = asyncio.run(read_view(config))
    except (DCSError, TimeoutError, OSError) as exc:
        typer.echo(f"cannot read the DCS: {exc}", err=True)
        raise typer.Exit(1) from None
    if fmt == "json":
        typer.echo(json.dumps([{"Cluster": config.scope, **r} for r in member_rows(view)]))
    elif fmt == "pretty":
        typer.echo(format_list(config, view))
    else:
        typer.echo(f"unknown format {fmt!r}: use pretty or json", err=True)
        raise typer.Exit(2)
