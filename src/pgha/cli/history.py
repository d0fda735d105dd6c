"""``pgha history``: the timeline history kept in the DCS ``history`` key.

Columns TL, LSN (the switch position as an integer, as stored), Reason, Timestamp and New
Leader, oldest timeline first, in any ``-f`` format; ``-W``/``-w`` repeat it.

``-e``/``--extended`` adds ``Discarded``: per timeline switch, what each member threw away
when it was rewound or re-cloned off that timeline (member, LSN range, bytes, committed
transactions; see :mod:`pgha.pg.waldump`). Members keep these reports themselves, so every
member in the DCS is asked for its ``GET /history`` (concurrently, each under
:data:`EXTENDED_TIMEOUT`); a member that does not answer is shown as ``<name>: unknown`` on
every row (it may have discarded something), never as an error. In the pretty table a cell
holds one line per member; in tsv the lines are joined with ``; ``; in json and yaml the cell
is a list of ``{member, from_lsn, to_lsn, bytes, transactions, complete}`` (``{member,
unknown: true}`` for a member that did not answer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer

from pgha.cli import common
from pgha.cli.cluster import FormatOption, WatchEvery, WatchFlag
from pgha.cli.output import FORMATS, format_rows
from pgha.cli.rest import Call
from pgha.config import ClusterAccess
from pgha.core.model import ClusterView
from pgha.pg.waldump import reports_in_history, summary

COLUMNS = ["TL", "LSN", "Reason", "Timestamp", "New Leader"]
DISCARDED = "Discarded"
EXTENDED_TIMEOUT = 5.0

# member name -> its reports, or None when it did not answer
Reports = Mapping[str, Sequence[Mapping[str, Any]] | None]


def history_rows(view: ClusterView) -> list[dict[str, Any]]:
    """One row per history entry, by timeline."""
    return [{"TL": e.timeline, "LSN": e.lsn, "Reason": e.reason, "Timestamp": e.timestamp,
             "New Leader": e.new_leader or ""}
            for e in sorted(view.history, key=lambda e: e.timeline)]


def _brief(member: str, report: Mapping[str, Any]) -> dict[str, Any]:
    counts = report.get("counts") or {}
    return {"member": member, "from_lsn": report.get("from_lsn"),
            "to_lsn": report.get("to_lsn"), "bytes": report.get("bytes"),
            "transactions": counts.get("committed", 0),
            "complete": bool(report.get("complete"))}


def discarded_cells(rows: list[dict[str, Any]], reports: Reports,
                    fmt: str) -> list[dict[str, Any]]:
    """``rows`` with the ``Discarded`` cell filled from ``reports`` (see the module
    docstring for its shape per format). Pure."""
    out = []
    for row in rows:
        items: list[dict[str, Any]] = []
        lines: list[str] = []
        for member in sorted(reports):
            found = reports[member]
            if found is None:
                items.append({"member": member, "unknown": True})
                lines.append(f"{member}: unknown")
                continue
            for report in found:
                if report.get("timeline") == row["TL"]:
                    items.append(_brief(member, report))
                    lines.append(f"{member}: {summary(report)}")
        cell: Any = items if fmt in ("json", "yaml") else \
            ("\n" if fmt == "pretty" else "; ").join(lines)
        out.append({**row, DISCARDED: cell})
    return out


def fetch_reports(ctx: typer.Context, config: ClusterAccess, view: ClusterView) -> Reports:
    """Every member's discarded-WAL reports from its ``GET /history``; None for a member
    that did not answer with a JSON list (no api_url, unreachable, error status)."""
    members = [view.members[n] for n in sorted(view.members)]
    answers = common.api_all(ctx, config, [Call(m, "GET", "/history") for m in members],
                             timeout=EXTENDED_TIMEOUT) if members else []
    out: dict[str, Sequence[Mapping[str, Any]] | None] = {}
    for answer in answers:
        name = answer.member.name
        reply = answer.result
        data = None if isinstance(reply, Exception) or reply.status != 200 else reply.json()
        if not isinstance(data, list):
            out[name] = None
            continue
        out[name] = [r for r in reports_in_history(data) if r.get("member", name) == name]
    return out


def history(
    ctx: typer.Context,
    cluster: Annotated[str | None, typer.Argument(
        metavar="[CLUSTER]", help="cluster name (default: the configured scope)")] = None,
    group: common.GroupOption = None,
    fmt: FormatOption = "pretty",
    extended: Annotated[bool, typer.Option(
        "-e", "--extended",
        help="add what each member discarded (rewind/re-clone) per timeline switch, "
             "asked from the members' REST APIs")] = False,
    watch: WatchFlag = False,
    every: WatchEvery = None,
) -> None:
    """Show the cluster's timeline history (failovers and switchovers)."""
    if fmt not in FORMATS:
        common.usage_error(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    config = common.get_config(ctx, cluster, group)

    def render() -> str:
        view = common.read_view(config)
        rows = history_rows(view)
        if not extended:
            return format_rows(rows, COLUMNS, fmt)
        rows = discarded_cells(rows, fetch_reports(ctx, config, view), fmt)
        return format_rows(rows, [*COLUMNS, DISCARDED], fmt)

    common.repeat(render, common.watch_interval(watch, every))
