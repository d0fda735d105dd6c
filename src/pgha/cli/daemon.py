"""``pgha run`` (the agent, in the foreground) and ``pgha validate-config``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from pgha.config import Config, ConfigError


def load_or_exit(path: Path | None) -> Config:
    """Load the configuration (PostgreSQL parameters judged against the catalogue of the server
    binary in ``postgresql.bin_dir``) or print every error with its key path and exit 2."""
    from pgha.cli.runagent import ExitCode, load

    try:
        return load(path)
    except ExitCode as exc:
        raise typer.Exit(exc.code) from None


def config_error_exit(exc: ConfigError, path: Path | None) -> NoReturn:
    """Print every error of ``exc`` on its own line with its key path, then exit 2."""
    from pgha.cli.runagent import config_errors

    raise typer.Exit(config_errors(exc, path).code)


def run(
    config_file: Annotated[Path, typer.Argument(help="configuration YAML file or directory")],
) -> None:
    """Run the agent for one PostgreSQL instance, in the foreground, until SIGTERM/SIGINT.
    Logging follows the ``log`` section (:mod:`pgha.agent.logsetup`); whatever is queued is
    written out before the process exits, whatever the exit."""
    from pgha.cli.runagent import run_agent

    code = run_agent(config_file)
    if code:
        raise typer.Exit(code)


def validate_config(
    config_file: Annotated[Path, typer.Argument(help="configuration YAML file or directory")],
) -> None:
    """Check a configuration file: exit 0 when valid (keys pgha does not implement are listed
    as warnings), 2 listing every error with its key path."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s",
                        handlers=[logging.StreamHandler(sys.stderr)], force=True)
    config = load_or_exit(config_file)
    for warning in config.bootstrap.dcs.timing_warnings():
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"{config_file}: configuration is valid (scope {config.scope}, "
               f"member {config.name}, DCS {config.dcs_kind()})")
