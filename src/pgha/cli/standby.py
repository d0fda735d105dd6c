"""``pgha demote-cluster`` and ``pgha promote-cluster`` (patronictl 4.1): turn a primary
cluster into a standby cluster of a remote primary, and back.

``demote-cluster`` needs ``--host`` or ``--restore-command``; it refuses a cluster that is
already a standby cluster (exit 1), asks for confirmation (``--force`` skips it), patches the
``standby_cluster`` section into the dynamic configuration (``PATCH /config`` on the leader,
the DCS directly when no member answers) and waits until the lock holder reports
``standby_leader``. ``promote-cluster`` removes the section from a standby cluster and waits
for a primary. A wait that runs out (``--timeout``) exits 1 saying so; the change stays
written: the members carry it out when they can.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from pgha.cli import common
from pgha.cli.common import fail, usage_error
from pgha.cli.dynamic import Cluster, patch_config
from pgha.config import ClusterAccess
from pgha.core.model import ClusterView
from pgha.core.standby import parse_standby_cluster, standby_cluster

POLL_INTERVAL = 1.0  # seconds between two reads of the cluster while waiting (tests shorten)


def _leader_role(config: ClusterAccess) -> str | None:
    view = common.read_view(config)
    leader = view.leader_member
    if leader is None or leader.state != "running":
        return None
    return leader.role


def _wait_for(config: ClusterAccess, role: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _leader_role(config) == role:
            return
        time.sleep(POLL_INTERVAL)
    fail(f"no {role.replace('_', ' ')} after {timeout:g}s; the configuration is changed, the "
         "members carry it out when they can")


def _change(ctx: typer.Context, config: ClusterAccess, view: ClusterView,
            section: dict[str, Any] | None, force: bool, timeout: float) -> None:
    """Confirm (unless ``force``), write ``standby_cluster`` (None removes it) and wait for
    the lock holder's new role."""
    verb, role = ("demote", "standby_leader") if section is not None else ("promote", "primary")
    if not force and not typer.confirm(
            f"Are you sure you want to {verb} the cluster {config.scope}?"):
        fail("Aborted")
    patch_config(ctx, config, view, {"standby_cluster": section}, f"{verb}-cluster")
    done = "configured, waiting for the standby leader" if section is not None \
        else "removed, waiting for the primary"
    typer.echo(f"standby_cluster {done}")
    _wait_for(config, role, timeout)
    kind = "a standby" if section is not None else "a primary"
    typer.echo(f"Success: cluster {config.scope} is {kind} cluster")


def demote_cluster(
    ctx: typer.Context,
    cluster: Cluster = None,
    host: Annotated[str | None, typer.Option("--host", help="the remote primary")] = None,
    port: Annotated[int | None, typer.Option("--port", help="its port (5432)")] = None,
    restore_command: Annotated[str | None, typer.Option(
        "--restore-command", help="replay the remote's WAL archive with this command")] = None,
    primary_slot_name: Annotated[str | None, typer.Option(
        "--primary-slot-name", help="slot to use on the remote")] = None,
    force: Annotated[bool, typer.Option("--force", help="do not ask for confirmation")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds to wait")] = 120.0,
    group: common.GroupOption = None,
) -> None:
    """Make this cluster a standby cluster replicating from a remote primary."""
    if not host and not restore_command:
        usage_error("--host or --restore-command is needed")
    section: dict[str, Any] = {k: v for k, v in (
        ("host", host), ("port", port), ("primary_slot_name", primary_slot_name),
        ("restore_command", restore_command)) if v is not None}
    if isinstance(problem := parse_standby_cluster(section), str):
        usage_error(f"standby_cluster: {problem}")
    config = common.get_config(ctx, cluster, group)
    view = common.read_view(config)
    if standby_cluster(view) is not None:
        fail("Cluster is already a standby cluster")
    _change(ctx, config, view, section, force, timeout)


def promote_cluster(
    ctx: typer.Context,
    cluster: Cluster = None,
    force: Annotated[bool, typer.Option("--force", help="do not ask for confirmation")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds to wait")] = 120.0,
    group: common.GroupOption = None,
) -> None:
    """Make a standby cluster a primary cluster: its standby leader promotes."""
    config = common.get_config(ctx, cluster, group)
    view = common.read_view(config)
    if not (view.config or {}).get("standby_cluster"):
        fail("Cluster is not a standby cluster")
    _change(ctx, config, view, None, force, timeout)
