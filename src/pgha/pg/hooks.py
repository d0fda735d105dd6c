"""The synchronous PostgreSQL hooks of the local YAML: ``postgresql.pre_promote`` and
``postgresql.before_stop``.

Contract of :class:`PgHooks`:

* a hook's command string is split with :func:`shlex.split` and run with no extra
  arguments, in its own session (process group), with the agent's environment and stdin
  from ``/dev/null``; its output is logged (``hook pre_promote: <line>``) once it ends;
* it runs under ``timeout()`` seconds (the agent passes the ``ttl`` in force); on timeout
  its whole process group is killed and reaped before :meth:`PgHooks.run` returns. The
  caller's cancellation kills it the same way and is re-raised;
* :meth:`PgHooks.run` never raises otherwise: a command that cannot be parsed or started,
  a non-zero exit and a timeout are all a failed :class:`HookResult`, which the caller logs
  as one line (:meth:`HookResult.describe` names the key and the exit status);
* the commands are read from ``commands()`` at every run, so a reloaded YAML takes effect
  at the next run; an empty or missing command means no hook (:meth:`PgHooks.configured`).
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from pgha.pg.cmd import run

log = logging.getLogger("pgha.hooks")

HOOKS = ("pre_promote", "before_stop")
_OUTPUT_LINES = 20  # lines of a hook's stdout and of its stderr kept in the log


@dataclass(frozen=True)
class HookResult:
    """Outcome of one hook run. ``returncode`` is None when the command could not be parsed
    or started, or was killed after its timeout (``timed_out``)."""

    hook: str
    returncode: int | None
    timed_out: bool = False
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        """``postgresql.<hook> exited with status 1`` / ``... timed out after 30s: killed`` /
        ``... could not be started: <why>``."""
        key = f"postgresql.{self.hook}"
        if self.timed_out:
            return f"{key} {self.error}"
        if self.returncode is None:
            return f"{key} could not be started: {self.error}"
        return f"{key} exited with status {self.returncode}"


class PgHooks:
    """Runs the hooks (see the module docstring). ``commands`` maps a hook name to its
    command string (None or blank: not configured); ``timeout`` gives the limit of one run
    in seconds."""

    def __init__(self, commands: Callable[[str], str | None],
                 timeout: Callable[[], float]) -> None:
        self._commands = commands
        self._timeout = timeout

    def command(self, hook: str) -> str | None:
        """The command configured for ``hook`` now, or None."""
        value = self._commands(hook)
        return value if value is not None and value.strip() else None

    def configured(self, hook: str) -> bool:
        return self.command(hook) is not None

    def timeout(self) -> float:
        """The limit of one run now, in seconds (at least 1)."""
        return max(1.0, float(self._timeout()))

    async def run(self, hook: str) -> HookResult | None:
        """Run ``hook`` to completion (see the module docstring); None when it is not
        configured."""
        if hook not in HOOKS:
            raise ValueError(f"unknown hook {hook!r}")
        command = self.command(hook)
        if command is None:
            return None
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            argv, error = [], f"a shell cannot split {command!r}: {exc}"
        else:
            error = "empty command"
        if not argv:
            return HookResult(hook, None, error=error)
        timeout = self.timeout()
        log.info("running postgresql.%s: %s (timeout %gs)", hook, shlex.join(argv), timeout)
        done = await run(argv, timeout=timeout, env=dict(os.environ))
        _log_output(hook, done.stdout, logging.INFO)
        if done.timed_out:
            result = HookResult(hook, None, timed_out=True,
                                error=f"timed out after {timeout:g}s: killed")
        elif done.returncode is None:
            result = HookResult(hook, None, error=done.stderr.strip() or "?")
        else:
            _log_output(hook, done.stderr, logging.WARNING)
            result = HookResult(hook, done.returncode)
        if result.ok:
            log.info("postgresql.%s finished (exit 0)", hook)
        return result


def _log_output(hook: str, text: str, level: int) -> None:
    lines = text.splitlines()
    if len(lines) > _OUTPUT_LINES:
        log.log(level, "hook %s: (%d earlier lines not logged)", hook,
                len(lines) - _OUTPUT_LINES)
    for line in lines[-_OUTPUT_LINES:]:
        log.log(level, "hook %s: %s", hook, line.rstrip())
