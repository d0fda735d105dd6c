"""Running PostgreSQL programs as asyncio subprocesses, always under a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("pgha.pg")

# Client environment variables that would silently change what a program connects to.
_DROP_ENV_PREFIX = "PG"


@dataclass(frozen=True)
class CmdResult:
    """Outcome of one program run. ``returncode`` is None when it could not be started or was
    killed after its timeout."""

    argv: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        """One-line summary for logs: program, exit status and the last stderr/stdout lines."""
        prog = Path(self.argv[0]).name if self.argv else "?"
        status = "timed out" if self.timed_out else f"exit {self.returncode}"
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()[-5:]
        return f"{prog}: {status}" + (": " + " | ".join(text) if text else "")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The agent's environment without ``PG*`` variables, in the C locale, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP_ENV_PREFIX)}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    if extra:
        env.update(extra)
    return env


async def run(argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None,
              stdin_data: bytes | None = None, progress: Progress | None = None) -> CmdResult:
    """Run ``argv`` to completion, capturing its output.

    Never raises for the program's own failure: a missing program or a non-zero exit is reported
    in the result. After ``timeout`` seconds (or when the calling task is cancelled) the program is
    killed with its whole process group (a script's children too) and reaped before returning (or
    re-raising the cancellation). With ``progress`` the program is also killed when it stops
    making progress (see :class:`Progress`). The program runs in its own session, so signals sent
    to the agent's process group do not reach it (a postmaster ``pg_ctl start`` launches leaves
    that session: it is never killed with ``pg_ctl``).
    """
    args = tuple(argv)
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE if stdin_data is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env) if env is not None else clean_env(),
            start_new_session=True,
        )
    except OSError as exc:
        return CmdResult(args, None, "", str(exc))
    talk = asyncio.ensure_future(proc.communicate(stdin_data))
    try:
        async with asyncio.timeout(timeout):
            if progress is not None:
                stalled = await progress.watch(talk)
                if stalled is not None:
                    await _kill(proc)
                    talk.cancel()
                    return CmdResult(args, None, "", stalled, timed_out=True)
            out, err = await talk
    except TimeoutError:
        await _kill(proc)
        talk.cancel()
        return CmdResult(args, None, "", f"killed after {timeout:g}s", timed_out=True)
    except asyncio.CancelledError:
        await asyncio.shield(_kill(proc))
        talk.cancel()
        raise
    return CmdResult(args, proc.returncode, out.decode(errors="replace"),
                     err.decode(errors="replace"))


class Progress:
    """Watches a long program by a number that grows while it works (bytes written into the
    data directory by pg_basebackup). ``measure`` is blocking (run in a thread) and is sampled
    every ``interval`` seconds; when it has not grown for ``stall_timeout`` seconds the program
    is stopped. ``report`` (if given) is called with each new value, for the log and for
    whatever must know the action is alive; it must not raise."""

    def __init__(self, measure: Callable[[], int], *, stall_timeout: float,
                 interval: float = 10.0, report: Callable[[int], None] | None = None) -> None:
        self.measure = measure
        self.stall_timeout = stall_timeout
        self.interval = interval
        self.report = report

    async def watch(self, task: asyncio.Future[Any]) -> str | None:
        """Wait for ``task``; None when it finished, else why the program must be stopped."""
        loop = asyncio.get_running_loop()
        best, since = -1, loop.time()
        while True:
            done, _ = await asyncio.wait({task}, timeout=self.interval)
            if done:
                return None
            try:
                value = await asyncio.to_thread(self.measure)
            except OSError:
                value = best
            if value > best:
                best, since = value, loop.time()
                if self.report is not None:
                    self.report(value)
            elif loop.time() - since >= self.stall_timeout:
                return f"no progress for {self.stall_timeout:g}s: stopped"


def tree_size(path: Path) -> int:
    """Bytes in the files under ``path`` (symlinked directories such as pg_wal followed once);
    blocking. Files that vanish while it runs are skipped."""
    total = 0
    for root, _dirs, files in os.walk(path, followlinks=True):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


async def kill_group(proc: asyncio.subprocess.Process, wait: float = 5.0) -> None:
    """SIGKILL the process group ``proc`` leads (it was started in its own session) and reap
    ``proc`` within ``wait`` seconds. Never raises for a process that is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(TimeoutError, ProcessLookupError):
        async with asyncio.timeout(wait):
            await proc.wait()


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the process group ``proc`` leads (started in its own session), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(Exception):
        await proc.wait()


def tail_file(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a (log) file, or "" when unreadable. Blocking: run it in a
    thread from async code."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 8192))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
