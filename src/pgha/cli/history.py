"""``pgha history``: the timeline history kept in the DCS ``history`` key.

Columns TL, LSN (the switch position as an integer, as stored), Reason, Timestamp and New
Leader, oldest timeline first, in any ``-f`` format; ``-W``/``-w`` repeat it.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pgha.cli import common
from pgha.cli.cluster import FormatOption, WatchEvery, WatchFlag
from pgha.cli.output import FORMATS, format_rows
from pgha.core.model import ClusterView

COLUMNS = ["TL", "LSN", "Reason", "Timestamp", "New Leader"]


def history_rows(view: ClusterView) -> list[dict[str, Any]]:
    """One row per history entry, by timeline."""
    return [{"TL": e.timeline, "LSN": e.lsn, "Reason": e.reason, "Timestamp": e.timestamp,
             "New Leader": e.new_leader or ""}
            for e in sorted(view.history, key=lambda e: e.timeline)]


def history(
    ctx: typer.Context,
    cluster: Annotated[str | None, typer.Argument(
        metavar="[CLUSTER]", help="cluster name (default: the configured scope)")] = None,
    group: common.GroupOption = None,
    fmt: FormatOption = "pretty",
    watch: WatchFlag = False,
    every: WatchEvery = None,
) -> None:
    """Show the cluster's timeline history (failovers and switchovers)."""
    if fmt not in FORMATS:
        common.usage_error(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    config = common.get_config(ctx, cluster, group)

    def render() -> str:
        return format_rows(history_rows(common.read_view(config)), COLUMNS, fmt)

    common.repeat(render, common.watch_interval(watch, every))
