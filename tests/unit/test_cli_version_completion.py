"""``pgha --version`` and shell completion (``--show-completion``, ``--install-completion`` and
the completion protocol the generated script calls)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import pgha
from pgha.cli.main import app, package_version

ROOT = Path(__file__).resolve().parents[2]
# the console script's entry point, named as the installed script is
RUN_AS_PGHA = "from pgha.cli.main import app; app(prog_name='pgha')"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def source_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("_PGHA_COMPLETE")}
    env["PYTHONPATH"] = str(ROOT / "src")
    env.update(extra)
    return env


def test_version_option_prints_the_version_and_runs_no_command(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"pgha {pgha.__version__}\n"
    # eager: the command after it is not run (``list`` would need a configuration)
    result = runner.invoke(app, ["--version", "list"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"pgha {pgha.__version__}\n"


def test_version_of_a_source_tree_is_the_package_version() -> None:
    # pgha imported from src/ (the tests' path): whatever is installed, this tree's version
    assert Path(pgha.__file__ or "").resolve().is_relative_to(ROOT / "src")
    assert package_version() == pgha.__version__


def test_the_version_command_of_patronictl_stays(runner: CliRunner) -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"pgha version {pgha.__version__}\n"


def test_help_lists_the_completion_options(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for option in ("--version", "--install-completion", "--show-completion"):
        assert option in result.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_show_completion_for_a_named_shell(runner: CliRunner, shell: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # with shell detection off (Typer's switch for tests, read when the command is built)
    # the shell is the option's argument
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    result = runner.invoke(app, ["--show-completion", shell], prog_name="pgha")
    assert result.exit_code == 0, result.output
    assert "_PGHA_COMPLETE" in result.stdout
    if shell == "bash":
        assert "complete -o default -F _pgha_completion pgha" in result.stdout
        assert "_PGHA_COMPLETE=complete_bash" in result.stdout


def test_show_completion_detects_the_calling_bash() -> None:
    # run from bash (not exec'd by it: a second command follows), as a user types it
    script = f'"{sys.executable}" -c "{RUN_AS_PGHA}" --show-completion; exit $?'
    proc = subprocess.run(["bash", "-c", script], env=source_env(), capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "complete -o default -F _pgha_completion pgha" in proc.stdout


@pytest.mark.parametrize(("words", "cword", "expected"), [
    ("pgha swi", 1, "switchover"),
    ("pgha --vers", 1, "--version"),
    ("pgha list --form", 2, "--format"),
])
def test_the_completion_script_gets_completions(words: str, cword: int, expected: str) -> None:
    """What the generated bash function runs on <TAB>: the program with _PGHA_COMPLETE set."""
    env = source_env(_PGHA_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=str(cword))
    proc = subprocess.run([sys.executable, "-c", RUN_AS_PGHA], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert expected in proc.stdout.split(), proc.stdout
