"""The ``pgha`` console script. ``pgha run CONFIG`` (the agent) is dispatched before the
command-line framework is imported, so the agent's process holds neither Typer nor the operator
commands; every other command line goes to :data:`pgha.cli.main.app` unchanged."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def agent_config(argv: Sequence[str]) -> str | None:
    """The configuration path when ``argv`` (without the program name) is exactly
    ``run CONFIG`` with CONFIG not an option; else None (Typer handles it)."""
    if len(argv) == 2 and argv[0] == "run" and not argv[1].startswith("-"):
        return argv[1]
    return None


def main() -> None:
    """Run ``pgha`` with ``sys.argv``."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    config = agent_config(sys.argv[1:])
    if config is not None:
        from pathlib import Path

        from pgha.cli.runagent import run_agent

        sys.exit(run_agent(Path(config)))
    from pgha.cli.main import app

    app(prog_name="pgha")


if __name__ == "__main__":  # pragma: no cover
    main()
