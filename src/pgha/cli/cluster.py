"""``pgha list`` and ``pgha topology``: the cluster's members as seen in the DCS, laid out as
patronictl 4.1 does.

Columns: Member, Host, Role, State, TL, Receive LSN, Receive Lag, Replay LSN, Replay Lag (the
pretty table shows both lags as ``Lag``; the machine formats add ``Cluster`` first). The LSNs
are the ones a replica publishes in its member key (``receive_lsn``/``replay_lsn``, as text like
``0/5000060``); a lag is the whole number of MB (rounded) that position is behind the leader's
freshest known position (``status`` optime or the leader's ``xlog_location``), empty when
unknown and on the leader. A member that publishes only ``xlog_location`` shows it as its
receive position when streaming, else as its replay position (as patronictl does for old
members).

Role: ``Leader`` (``Standby Leader`` in a standby cluster) for the lock holder, ``Sync
Standby`` (``Quorum Standby`` with ``synchronous_mode: quorum``) for the members named in the
``sync`` key, ``Replica`` otherwise. State: a non-leader shows its replication state
(``streaming``, ``in archive recovery``) when it published one.

Optional columns, shown with ``-e`` or when any member has a value: ``Pending restart`` (``*``),
``Pending restart reason``, ``Scheduled restart`` (``<time>[ if version < V]``) and ``Tags``
(YAML: block style in the pretty table, where a rule then separates every row; flow style in
tsv; a mapping in json/yaml). Host is the host of ``conn_url``, with ``:port`` when a port is
not 5432 or two members share a host. In json and yaml a row has only its non-empty cells.
Pretty output ends with ``Maintenance mode: on`` when paused and ``Switchover scheduled at: ...
from: ... to: ...`` when the ``failover`` key holds a scheduled switchover.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

import typer
import yaml

from pgha.cli import common
from pgha.cli.output import format_rows, render_table
from pgha.core.model import ClusterView, Member

MB = 1024 * 1024
BASE_COLUMNS = ["Member", "Host", "Role", "State", "TL",
                "Receive LSN", "Receive Lag", "Replay LSN", "Replay Lag"]
OPTIONAL_COLUMNS = ["Pending restart", "Pending restart reason", "Scheduled restart", "Tags"]
RIGHT_ALIGNED = frozenset({"TL", "Receive LSN", "Receive Lag", "Replay LSN", "Replay Lag"})
PRETTY_HEADERS = {"Receive Lag": "Lag", "Replay Lag": "Lag"}

FormatOption = Annotated[str, typer.Option("-f", "--format",
                                           help="output format: pretty, tsv, json or yaml")]
WatchFlag = Annotated[bool, typer.Option("-W", help="refresh every 2 seconds until Ctrl-C")]
WatchEvery = Annotated[float | None, typer.Option("-w", "--watch",
                                                  help="refresh every N seconds until Ctrl-C")]


def _host_port(conn_url: str) -> tuple[str, int | None]:
    netloc = conn_url.partition("://")[2].partition("/")[0].rpartition("@")[2]
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        port_text = rest.lstrip(":")
    else:
        host, _, port_text = netloc.partition(":")
    return host, int(port_text) if port_text.isdigit() else None


def _hosts(members: list[Member]) -> dict[str, str]:
    parsed = {m.name: _host_port(m.conn_url) for m in members}
    hosts = [h for h, _ in parsed.values()]
    with_port = (any(p not in (None, 5432) for _, p in parsed.values())
                 or len(set(hosts)) < len(hosts))
    return {name: f"{h}:{p}" if with_port and p is not None else h
            for name, (h, p) in parsed.items()}


def role_of(view: ClusterView, member: Member) -> str:
    """The Role column of ``member``: members named in the ``sync`` key show as
    synchronous standbys whoever wrote it."""
    if member.name == common.leader_name(view):
        return "Standby Leader" if common.is_standby_cluster(view) else "Leader"
    if view.sync is not None and member.name in view.sync.sync_standby:
        mode = (view.config or {}).get("synchronous_mode")
        return "Quorum Standby" if mode == "quorum" else "Sync Standby"
    return "Replica"


def _scheduled_restart(scheduled: Mapping[str, Any] | None) -> str:
    if not scheduled:
        return ""
    text = str(scheduled.get("schedule", ""))
    if scheduled.get("postgres_version"):
        text += f" if version < {scheduled['postgres_version']}"
    return text


def _tags_text(tags: dict[str, Any], fmt: str) -> str:
    if not tags:
        return ""
    return yaml.safe_dump(tags, default_flow_style=fmt != "pretty", allow_unicode=True,
                          width=200).strip()


def lsn_text(value: int | None) -> str:
    """An LSN as PostgreSQL prints it (``16/B374D848``); ``""`` when None."""
    return "" if value is None else f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def _positions(view: ClusterView, m: Member) -> dict[str, Any]:
    receive, replay = m.receive_lsn, m.replay_lsn
    if receive is None and replay is None and m.xlog_location is not None:
        if (m.replication_state or m.state) == "streaming":
            receive = m.xlog_location
        else:
            replay = m.xlog_location

    def lag(position: int | None) -> int | str:
        behind = view.lag_of(position) if position is not None else None
        return "" if behind is None else round(behind / MB)

    return {"Receive LSN": lsn_text(receive), "Receive Lag": lag(receive),
            "Replay LSN": lsn_text(replay), "Replay Lag": lag(replay)}


def member_rows(view: ClusterView, fmt: str = "pretty") -> list[dict[str, Any]]:
    """One row per member, leader first, with every column (optional ones may be empty).
    Tags are a mapping in json/yaml and YAML text otherwise."""
    members = common.ordered(view)
    hosts = _hosts(members)
    rows: list[dict[str, Any]] = []
    for m in members:
        is_leader = m.name == common.leader_name(view)
        tags = m.tags.to_json()
        row: dict[str, Any] = {
            "Member": m.name,
            "Host": hosts[m.name],
            "Role": role_of(view, m),
            "State": m.state if is_leader else (m.replication_state or m.state),
            "TL": m.timeline if m.timeline is not None else "",
            "Receive LSN": "", "Receive Lag": "", "Replay LSN": "", "Replay Lag": "",
            "Pending restart": "*" if m.pending_restart else "",
            "Pending restart reason": "",
            "Scheduled restart": _scheduled_restart(m.scheduled_restart),
            "Tags": (tags or "") if fmt in ("json", "yaml") else _tags_text(tags, fmt),
        }
        if not is_leader:
            row.update(_positions(view, m))
        rows.append(row)
    return rows


def columns_for(rows: list[dict[str, Any]], extended: bool) -> list[str]:
    """The base columns plus each optional column that is asked for or has a value."""
    return BASE_COLUMNS + [c for c in OPTIONAL_COLUMNS
                           if extended or any(r.get(c) for r in rows)]


def title_of(scope: str, view: ClusterView) -> str:
    init = view.initialize
    sysid = init or ("initializing" if init == "" else "uninitialized")
    return f"Cluster: {scope} ({sysid})"


def footer(view: ClusterView) -> list[str]:
    """The lines under the pretty table: maintenance mode and a scheduled switchover."""
    lines = []
    if view.settings.pause:
        lines.append(" Maintenance mode: on")
    failover = view.failover or {}
    if failover.get("scheduled_at"):
        lines.append(f" Switchover scheduled at: {failover['scheduled_at']}")
        lines.append(f"                    from: {failover.get('leader') or ''}")
        if failover.get("member"):
            lines.append(f"                      to: {failover['member']}")
    return lines


def tree_order(view: ClusterView, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in ``replicatefrom`` tree order: the leader, then each member under the member it
    replicates from (under the leader when the tag is absent or names no known member), the
    Member cell indented with ``+ ``."""
    by_name = {r["Member"]: r for r in rows}
    members = view.members
    leader = common.leader_name(view)
    root = leader if leader in by_name else None
    children: dict[str | None, list[str]] = {}
    for name in by_name:
        if name == root:
            continue
        parent = members[name].tags.replicatefrom
        if parent not in by_name or parent == name:
            parent = root
        children.setdefault(parent, []).append(name)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()

    def visit(name: str, depth: int) -> None:
        if name in seen:
            return
        seen.add(name)
        prefix = "" if depth == 0 else "  " * (depth - 1) + "+ "
        out.append({**by_name[name], "Member": prefix + name})
        for child in sorted(children.get(name, [])):
            visit(child, depth + 1)

    if root is not None:
        visit(root, 0)
    for name in sorted(children.get(None, [])):
        visit(name, 0)
    for name in by_name:  # members in a replicatefrom cycle
        visit(name, 0)
    return out


def format_list(scope: str, view: ClusterView, fmt: str = "pretty", extended: bool = False,
                topology: bool = False) -> str:
    """The ``list`` (or ``topology``) output of cluster ``scope`` seen as ``view``, in format
    ``fmt``."""
    rows = member_rows(view, fmt)
    columns = columns_for(rows, extended)
    if topology:
        rows = tree_order(view, rows)
    if fmt == "pretty":
        text = render_table(title_of(scope, view), rows, columns, right=RIGHT_ALIGNED,
                            headers=[PRETTY_HEADERS.get(c, c) for c in columns])
        return "\n".join([text, *footer(view)])
    rows = [{"Cluster": scope, **r} for r in rows]
    if fmt in ("json", "yaml"):  # only the cells that hold something, as patronictl
        rows = [{c: v for c, v in r.items() if str(v)} for r in rows]
        columns = [c for c in columns if any(c in r for r in rows)]
    return format_rows(rows, ["Cluster", *columns], fmt, skip_missing=True)


def _show(ctx: typer.Context, clusters: list[str] | None, group: int | None, fmt: str,
          extended: bool, timestamp: bool, watch: bool, every: float | None,
          topology: bool) -> None:
    fmt = "yaml" if fmt == "yml" else fmt
    if fmt not in ("pretty", "tsv", "json", "yaml"):
        common.usage_error(f"unknown format {fmt!r}: use pretty, tsv, json or yaml")
    common.refuse_group(group)
    if not clusters and not common.load_access(ctx).scope:
        typer.echo("WARNING: Listing members: No cluster names were provided", err=True)
        return
    configs = ([common.get_config(ctx, c) for c in clusters] if clusters
               else [common.get_config(ctx)])

    def render() -> str:
        parts = []
        if timestamp:
            parts.append(datetime.now().strftime("%Y-%m-%d %H:%M:%S"))
        for config in configs:
            view = common.read_view(config)
            parts.append(format_list(config.scope, view, fmt, extended, topology))
        return "\n".join(parts)

    common.repeat(render, common.watch_interval(watch, every))


ClustersArg = Annotated[list[str] | None, typer.Argument(
    metavar="[CLUSTER]...", help="cluster names (default: the configured scope)")]
ExtendedFlag = Annotated[bool, typer.Option(
    "-e", "--extended",
    help="always show Pending restart, Pending restart reason, Scheduled restart, Tags")]
TimestampFlag = Annotated[bool, typer.Option("-t", "--timestamp", help="print the time first")]


def list_members(
    ctx: typer.Context, clusters: ClustersArg = None, group: common.GroupOption = None,
    fmt: FormatOption = "pretty",
    extended: ExtendedFlag = False, timestamp: TimestampFlag = False,
    watch: WatchFlag = False, every: WatchEvery = None,
) -> None:
    """Show the cluster's members: Member, Host, Role, State, TL, Receive LSN, Lag, Replay LSN,
    Lag."""
    _show(ctx, clusters, group, fmt, extended, timestamp, watch, every, topology=False)


def topology(
    ctx: typer.Context, clusters: ClustersArg = None, group: common.GroupOption = None,
    fmt: FormatOption = "pretty",
    extended: ExtendedFlag = False, timestamp: TimestampFlag = False,
    watch: WatchFlag = False, every: WatchEvery = None,
) -> None:
    """The members as a tree: each replica under the member it replicates from
    (replicatefrom tag), the leader at the root."""
    _show(ctx, clusters, group, fmt, extended, timestamp, watch, every, topology=True)
