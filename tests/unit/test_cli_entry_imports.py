"""The console script's dispatch and what each kind of command line imports: the agent
(``pgha run CONFIG``) holds no command-line framework, the operator commands no PostgreSQL
driver, HTTP client or agent (checked in a fresh interpreter; module sets, not timings)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pgha
from pgha.cli.entry import agent_config

SRC = str(Path(pgha.__file__).resolve().parents[1])


def imported_after(code: str, modules: list[str]) -> list[str]:
    probe = (f"import sys\n{code}\n"
             f"print(','.join(m for m in {modules!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], env={"PYTHONPATH": SRC},
                         capture_output=True, text=True, check=True).stdout.strip()
    return [m for m in out.split(",") if m]


def test_only_run_config_bypasses_typer() -> None:
    assert agent_config(["run", "/etc/pgha.yml"]) == "/etc/pgha.yml"
    assert agent_config(["run", "--help"]) is None
    assert agent_config(["run"]) is None
    assert agent_config(["-c", "x.yml", "run", "y.yml"]) is None
    assert agent_config(["list"]) is None
    assert agent_config([]) is None


def test_agent_imports_no_cli_framework() -> None:
    code = "import pgha.cli.entry, pgha.cli.runagent, pgha.agent.lifecycle, pgha.api.server"
    assert imported_after(code, ["typer", "click", "rich", "pgha.cli.main", "pgha.cli.common",
                                 "pgha.api.openapi"]) == []


def test_operator_commands_import_no_driver_or_agent() -> None:
    assert imported_after("import pgha.cli.main", [
        "asyncpg", "aiohttp", "pgha.agent.lifecycle", "pgha.pg.postgres",
        "pgha.cli.runagent"]) == []
