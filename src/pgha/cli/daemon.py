"""``pgha run`` (the agent, in the foreground) and ``pgha validate-config``."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from pgha.config import Config, ConfigError, load_config

log = logging.getLogger("pgha")


def setup_logging(config: Config | None, level: str | None = None) -> None:
    """Log to stderr (and to ``log.dir``/pgha.log when set), one line per record."""
    lvl = level or (config.log.level if config else "INFO")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if config is not None and config.log.dir:
        Path(config.log.dir).mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(Path(config.log.dir) / "pgha.log"))
    logging.basicConfig(
        level=lvl,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def load_or_exit(path: Path | None) -> Config:
    """Load the configuration or print every error with its key path and exit 2."""
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.echo(f"configuration error in {path}:", err=True)
        for key, message in exc.errors:
            typer.echo(f"  {key or '<top>'}: {message}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(f"cannot read configuration {path}: {exc}", err=True)
        raise typer.Exit(2) from None


def run(
    config_file: Annotated[Path, typer.Argument(help="configuration YAML file or directory")],
) -> None:
    """Run the agent for one PostgreSQL instance, in the foreground, until SIGTERM/SIGINT."""
    logging.captureWarnings(True)
    setup_logging(None)  # so warnings while loading the config are printed
    config = load_or_exit(config_file)
    setup_logging(config)
    for warning in config.bootstrap.dcs.timing_warnings():
        log.warning("%s; adjusting", warning)
    from pgha.agent.lifecycle import Agent, DuplicateMemberError

    try:
        asyncio.run(Agent(config, config_file).run())
    except DuplicateMemberError as exc:
        log.critical("%s", exc)  # Patroni's words: Can't start; there is already a node ...
        raise typer.Exit(1) from None


def validate_config(
    config_file: Annotated[Path, typer.Argument(help="configuration YAML file or directory")],
) -> None:
    """Check a configuration file: exit 0 when valid, 2 listing every error with its key path."""
    setup_logging(None, "WARNING")
    config = load_or_exit(config_file)
    for warning in config.bootstrap.dcs.timing_warnings():
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"{config_file}: configuration is valid (scope {config.scope}, "
               f"member {config.name}, DCS {config.dcs_kind()})")
