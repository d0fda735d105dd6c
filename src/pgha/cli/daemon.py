"""``pgha run`` (the agent, in the foreground) and ``pgha validate-config``."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from pgha.agent.logsetup import AgentLogging, LogSettingError
from pgha.config import Config, ConfigError, LogConfig, load_config
from pgha.pg.catalogue import load_catalogue

log = logging.getLogger("pgha")


def load_or_exit(path: Path | None) -> Config:
    """Load the configuration (PostgreSQL parameters judged against the catalogue of the
    server binary in ``postgresql.bin_dir``) or print every error with its key path and exit 2."""
    try:
        return load_config(path, catalogue=load_catalogue)
    except ConfigError as exc:
        config_error_exit(exc, path)
    except OSError as exc:
        typer.echo(f"cannot read configuration {path}: {exc}", err=True)
        raise typer.Exit(2) from None


def config_error_exit(exc: ConfigError, path: Path | None) -> NoReturn:
    """Print every error of ``exc`` on its own line with its key path, then exit 2."""
    typer.echo(f"configuration error in {path}:", err=True)
    for key, message in exc.errors:
        typer.echo(f"  {key or '<top>'}: {message}", err=True)
    raise typer.Exit(2)


def run(
    config_file: Annotated[Path, typer.Argument(help="configuration YAML file or directory")],
) -> None:
    """Run the agent for one PostgreSQL instance, in the foreground, until SIGTERM/SIGINT.
    Logging follows the ``log`` section (:mod:`pgha.agent.logsetup`); whatever is queued is
    written out before the process exits, whatever the exit."""
    logging.captureWarnings(True)
    logs = AgentLogging.install(LogConfig())  # so warnings while loading the config are printed
    try:
        _run(config_file, logs)
    finally:
        logs.stop()


def _run(config_file: Path, logs: AgentLogging) -> None:
    config = load_or_exit(config_file)
    try:
        logs.reconfigure(config.log)
    except LogSettingError as exc:
        config_error_exit(ConfigError([(exc.key, exc.message)]), config_file)
    for warning in config.bootstrap.dcs.timing_warnings():
        log.warning("%s; adjusting", warning)
    from pgha.agent.lifecycle import Agent, DuplicateMemberError
    from pgha.errors import AgentFatal

    try:
        agent = Agent(config, config_file)
    except ConfigError as exc:  # e.g. a DCS section its backend refuses
        config_error_exit(exc, config_file)
    try:
        asyncio.run(agent.run())
    except DuplicateMemberError as exc:
        log.critical("%s", exc)  # Patroni's words: Can't start; there is already a node ...
        raise typer.Exit(1) from None
    except AgentFatal as exc:
        log.critical("%s", exc)
        raise typer.Exit(1) from None


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
