"""The ``pgha`` command: the daemon (``run``), config validation, the demo, and the operator
commands (Patroni's ``patronictl``), one module per command group:

- :mod:`pgha.cli.cluster`: ``list``, ``topology``;
- :mod:`pgha.cli.switchover`: ``switchover``, ``failover``, ``flush``;
- :mod:`pgha.cli.members`: ``restart``, ``reload``, ``reinit``;
- :mod:`pgha.cli.dynamic`: ``show-config``, ``edit-config``, ``pause``, ``resume``;
- :mod:`pgha.cli.standby`: ``demote-cluster``, ``promote-cluster``;
- :mod:`pgha.cli.query`: ``query``, ``dsn``;
- :mod:`pgha.cli.history`: ``history``;
- :mod:`pgha.cli.why`: ``why``;
- :mod:`pgha.cli.maintenance`: ``remove``, ``version``.

Shared helpers: :mod:`pgha.cli.common` (configuration, the DCS through ``ClusterStore``,
member selection, prompts, watching), :mod:`pgha.cli.rest` (the REST client) and
:mod:`pgha.cli.output` (tables and machine formats).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Annotated

import typer

import pgha
from pgha.cli import (
    cluster,
    daemon,
    demo,
    dynamic,
    history,
    maintenance,
    members,
    query,
    standby,
    switchover,
    why,
)

app = typer.Typer(
    name="pgha",
    help="High-availability agent for PostgreSQL (Patroni-compatible).",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (shell detected)
    pretty_exceptions_enable=False,
)


def package_version() -> str:
    """The installed distribution's version when the imported ``pgha`` is the installed one,
    else (run from a source tree, an editable install, not installed) ``pgha.__version__``."""
    try:
        dist = importlib.metadata.distribution("pgha")
    except importlib.metadata.PackageNotFoundError:
        return pgha.__version__
    installed = Path(str(dist.locate_file("pgha/__init__.py")))
    if not pgha.__file__ or installed.resolve() != Path(pgha.__file__).resolve():
        return pgha.__version__
    return dist.version


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"pgha {package_version()}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    config_file: Annotated[
        Path | None,
        typer.Option("-c", "--config-file",
                     help="configuration YAML for the operator commands: a DCS section is enough "
                          "(default: ~/.config/patroni/patronictl.yaml when it exists)",
                     envvar=["PGHA_CONFIG_FILE", "PATRONICTL_CONFIG_FILE"]),
    ] = None,
    dcs_url: Annotated[str | None, typer.Option(
        "-d", "--dcs-url", "--dcs", envvar="DCS_URL",
        help="use this DCS instead of the configured one: SCHEME://HOST:PORT or "
             "SCHEME://HOST:PORT/NAMESPACE, "
             "SCHEME one of etcd3, etcd, consul, zookeeper")] = None,
    insecure: Annotated[bool, typer.Option(
        "-k", "--insecure", help="do not verify the members' REST API certificates")] = False,
    show_version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, expose_value=False,
        help="print pgha's version and exit")] = False,
) -> None:
    ctx.obj = {"config_file": config_file, "dcs_url": dcs_url, "insecure": insecure}


app.command("run")(daemon.run)
app.command("validate-config")(daemon.validate_config)
app.command("demo")(demo.demo)
app.command("list")(cluster.list_members)
app.command("topology")(cluster.topology)
app.command("switchover")(switchover.switchover)
app.command("failover")(switchover.failover)
app.command("flush")(switchover.flush)
app.command("restart")(members.restart)
app.command("reload")(members.reload)
app.command("reinit")(members.reinit)
app.command("show-config")(dynamic.show_config)
app.command("edit-config")(dynamic.edit_config)
app.command("pause")(dynamic.pause)
app.command("resume")(dynamic.resume)
app.command("demote-cluster")(standby.demote_cluster)
app.command("promote-cluster")(standby.promote_cluster)
app.command("query")(query.query)
app.command("dsn")(query.dsn)
app.command("history")(history.history)
app.command("why")(why.why)
app.command("remove")(maintenance.remove)
app.command("version")(maintenance.version)


if __name__ == "__main__":  # pragma: no cover
    app()
