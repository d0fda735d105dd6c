"""The ``pgha`` command: the daemon (``run``), config validation, and the operator commands."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from pgha import __version__
from pgha.cli import cluster, daemon, demo

app = typer.Typer(
    name="pgha",
    help="High-availability agent for PostgreSQL (Patroni-compatible).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    config_file: Annotated[
        Path | None,
        typer.Option("-c", "--config-file", help="configuration YAML (for operator commands)",
                     envvar=["PGHA_CONFIG_FILE", "PATRONICTL_CONFIG_FILE"]),
    ] = None,
) -> None:
    ctx.obj = {"config_file": config_file}


@app.command()
def version() -> None:
    """Print pgha's version."""
    typer.echo(f"pgha version {__version__}")


app.command("run")(daemon.run)
app.command("validate-config")(daemon.validate_config)
app.command("list")(cluster.list_members)
app.command("demo")(demo.demo)


def entry() -> None:  # pragma: no cover - console script shim
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
