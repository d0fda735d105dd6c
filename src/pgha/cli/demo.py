"""``pgha demo``: etcd on loopback and three members on this machine, until Ctrl-C."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from pgha.cli.localcluster import LocalCluster
from pgha.config import load_config


def cluster_ready(cluster: LocalCluster) -> str | None:
    """The ``list`` table once there is a leader and every member runs, else None."""
    from pgha.cli.cluster import format_list
    from pgha.cli.common import load_view

    config = load_config(next(iter(cluster.procs.values())).config_path)
    try:
        view = asyncio.run(load_view(config, timeout=3))
    except Exception:
        return None
    if view.leader is None or len(view.members) < len(cluster.procs):
        return None
    if any(m.state != "running" for m in view.members.values()):
        return None
    if any(m.replication_state != "streaming" for n, m in view.members.items()
           if n != view.leader.name):
        return None
    return format_list(config.scope, view)


def demo(
    members: Annotated[int, typer.Option(help="number of members")] = 3,
    directory: Annotated[Path | None, typer.Option(
        "--dir", help="working directory, recreated (default: $TMPDIR/pgha-demo)")] = None,
    ttl: Annotated[int, typer.Option(help="leader lease TTL in seconds")] = 20,
    loop_wait: Annotated[int, typer.Option(help="decision loop period in seconds")] = 2,
) -> None:
    """Start a local demo cluster (etcd + members), print `pgha list`, stop all on Ctrl-C."""
    directory = directory or Path(tempfile.gettempdir()) / "pgha-demo"
    stop = {"flag": False}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    dynamic = {"ttl": ttl, "loop_wait": loop_wait, "retry_timeout": max(1, (ttl - loop_wait) // 4)}
    cluster = LocalCluster(directory, members=members, dynamic=dynamic)
    with cluster:
        assert cluster.etcd is not None
        typer.echo(f"etcd on {cluster.etcd.endpoint}; data and logs in {directory}")
        cluster.start_all(stagger=0.5)
        for m in cluster.procs.values():
            typer.echo(f"  {m.name}: PostgreSQL 127.0.0.1:{m.pg_port}, REST API {m.api}, "
                       f"config {m.config_path}")
        typer.echo("waiting for the cluster to come up...")
        deadline = time.monotonic() + 300
        table = None
        while not stop["flag"] and time.monotonic() < deadline:
            table = cluster_ready(cluster)
            if table:
                break
            time.sleep(1)
        if table is None:
            if not stop["flag"]:
                typer.echo("the cluster did not come up in time; see the logs in "
                           f"{directory}", err=True)
            raise typer.Exit(1)
        first = next(iter(cluster.procs.values()))
        time.sleep(loop_wait + 0.5)  # let every member publish a fresh WAL position
        typer.echo(cluster_ready(cluster) or table)
        pgha = shutil.which("pgha") or str(Path(sys.executable).parent / "pgha")
        typer.echo(f"\nTry:  {pgha} -c {first.config_path} list\n"
                   f"      curl -s {first.api}/patroni\n"
                   "Press Ctrl-C to stop the cluster.")
        while not stop["flag"]:
            time.sleep(0.5)
        typer.echo("stopping members and etcd...")
    typer.echo("stopped")
