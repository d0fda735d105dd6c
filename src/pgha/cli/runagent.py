"""``pgha run`` without the command-line framework: the agent imports neither Typer nor the
operator commands. :mod:`pgha.cli.entry` dispatches ``pgha run CONFIG`` here before Typer;
:func:`pgha.cli.daemon.run` (``pgha run`` reached through Typer, e.g. with global options)
calls the same :func:`run_agent`."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from pgha.agent.logsetup import AgentLogging, LogSettingError
from pgha.config import Config, ConfigError, LogConfig, load_config
from pgha.pg.catalogue import load_catalogue

log = logging.getLogger("pgha")


class ExitCode(Exception):
    """Leave the command with ``code`` (its message, if any, already printed)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def config_errors(exc: ConfigError, path: Path | None) -> ExitCode:
    """Print every error of ``exc`` on its own line with its key path to stderr; the exit (2)
    to raise."""
    print(f"configuration error in {path}:", file=sys.stderr)
    for key, message in exc.errors:
        print(f"  {key or '<top>'}: {message}", file=sys.stderr)
    return ExitCode(2)


def load(path: Path | None) -> Config:
    """The configuration (PostgreSQL parameters judged against the catalogue of the server
    binary in ``postgresql.bin_dir``); on an error, printed with its key path, ExitCode(2)."""
    try:
        return load_config(path, catalogue=load_catalogue)
    except ConfigError as exc:
        raise config_errors(exc, path) from None
    except OSError as exc:
        print(f"cannot read configuration {path}: {exc}", file=sys.stderr)
        raise ExitCode(2) from None


def run_agent(config_file: Path) -> int:
    """Run the agent for one PostgreSQL instance, in the foreground, until SIGTERM/SIGINT; the
    process exit code. Logging follows the ``log`` section (:mod:`pgha.agent.logsetup`);
    whatever is queued is written out before returning, whatever the exit."""
    logging.captureWarnings(True)
    logs = AgentLogging.install(LogConfig())  # so warnings while loading the config are printed
    try:
        _run(config_file, logs)
    except ExitCode as exc:
        return exc.code
    finally:
        logs.stop()
    return 0


def _run(config_file: Path, logs: AgentLogging) -> None:
    config = load(config_file)
    try:
        logs.reconfigure(config.log)
    except LogSettingError as exc:
        raise config_errors(ConfigError([(exc.key, exc.message)]), config_file) from None
    for warning in config.bootstrap.dcs.timing_warnings():
        log.warning("%s; adjusting", warning)
    from pgha.agent.lifecycle import Agent, DuplicateMemberError
    from pgha.errors import AgentFatal

    try:
        agent = Agent(config, config_file)
    except ConfigError as exc:  # e.g. a DCS section its backend refuses
        raise config_errors(exc, config_file) from None
    try:
        asyncio.run(agent.run())
    except DuplicateMemberError as exc:
        log.critical("%s", exc)  # Patroni's words: Can't start; there is already a node ...
        raise ExitCode(1) from None
    except AgentFatal as exc:
        log.critical("%s", exc)
        raise ExitCode(1) from None
