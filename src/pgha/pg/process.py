"""The postmaster process: postmaster.pid, liveness, death watch (pidfd) and pg_ctl.

``pg_ctl start`` daemonizes the postmaster in its own session, so it is never a child of the
agent and survives the agent's death; a restarted agent adopts it through ``postmaster.pid``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from pgha.core.actions import StopMode
from pgha.pg.cmd import CmdResult, clean_env, run
from pgha.pg.settings import PgSettings

log = logging.getLogger("pgha.pg")

PIDFILE = "postmaster.pid"
POLL_INTERVAL = 0.2  # only when pidfd_open is unavailable
_PG_CTL_GRACE = 10.0  # extra seconds past pg_ctl's own -t before the agent kills pg_ctl
_START_POLL = 0.01


@dataclass(frozen=True)
class PidFile:
    """Parsed ``postmaster.pid``. ``status`` is ``starting``, ``stopping``, ``ready`` or
    ``standby`` (absent while the postmaster has not written it yet)."""

    pid: int
    start_time: int | None = None
    port: int | None = None
    socket_dir: str | None = None
    status: str | None = None


def read_pidfile(data_dir: Path) -> PidFile | None:
    """The postmaster.pid contents, or None when missing or unparsable."""
    try:
        lines = (data_dir / PIDFILE).read_text(errors="replace").splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None

    def field(index: int) -> str | None:
        if len(lines) <= index:
            return None
        return lines[index].strip() or None

    def number(index: int) -> int | None:
        value = field(index)
        try:
            return int(value) if value else None
        except ValueError:
            return None

    return PidFile(pid=pid, start_time=number(2), port=number(3), socket_dir=field(4),
                   status=field(7))


def pid_alive(pid: int) -> bool:
    """True when ``pid`` is a live (non-zombie) process of our user that looks like a
    PostgreSQL server. A process of another user (EPERM) is not ours, as PostgreSQL itself
    decides for a stale lock file."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError as exc:
        if exc.errno in (errno.ESRCH, errno.EPERM):
            return False
        raise
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rindex(")") + 2:].startswith(("Z", "X")):
            return False  # exited, not yet reaped by its parent (init)
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except (OSError, ValueError):
        return True
    name = os.path.basename(argv0.decode(errors="replace"))
    return not argv0 or "postgres" in name or "postmaster" in name


def postmaster_pid(data_dir: Path) -> int | None:
    """PID of the live postmaster of ``data_dir``, or None."""
    pidfile = read_pidfile(data_dir)
    if pidfile is None or not pid_alive(pidfile.pid):
        return None
    return pidfile.pid


def _lock_pid(path: Path) -> int | None:
    try:
        return int(path.read_text(errors="replace").splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def remove_stale_lock_files(settings: PgSettings) -> None:
    """Delete postmaster.pid and our socket's ``.lock`` file when the process they name is gone
    (or is a zombie nobody reaps), so PostgreSQL does not refuse to start. A lock file of a
    live process is never touched."""
    for path in (settings.data_dir / PIDFILE,
                 settings.socket_dir / f".s.PGSQL.{settings.port}.lock"):
        pid = _lock_pid(path)
        if pid is not None and not pid_alive(pid):
            log.info("removing stale %s (pid %d is gone)", path, pid)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


async def wait_pid_exit(pid: int) -> None:
    """Return once ``pid`` has exited (at once if it already has).

    Uses a pidfd watched by the event loop (Linux >= 5.3); falls back to polling when pidfd is
    unavailable. Cancellation-safe: the watch is removed when the caller is cancelled.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (OSError, AttributeError):
        await _poll_pid_exit(pid)
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        if not done.done():
            done.set_result(None)

    try:
        loop.add_reader(fd, on_readable)
        try:
            await done  # readable once the process has exited (zombies included)
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)


async def _poll_pid_exit(pid: int) -> None:
    """Fallback without pidfd: poll liveness every POLL_INTERVAL seconds."""
    while True:
        if not pid_alive(pid):
            return
        await asyncio.sleep(POLL_INTERVAL)


def _pg_ctl(settings: PgSettings, action: str, *args: str) -> list[str]:
    return [settings.binary("pg_ctl"), action, "-D", str(settings.data_dir), *args]


async def pg_ctl_start(settings: PgSettings, timeout: float) -> CmdResult:
    """``pg_ctl start -w``: returns when the server accepts connections, failed, or after
    ``timeout`` (the postmaster then keeps starting). Server output goes to ``log_file``.

    Readiness is also read from postmaster.pid every 10 ms (``ready``/``standby``), so a
    successful start returns without pg_ctl's 100 ms polling; pg_ctl itself (left to finish
    in the background then) still reports every failure. A renamed server program
    (``bin_name.postgres``) is given to pg_ctl with ``-p``."""
    settings.log_file.parent.mkdir(parents=True, exist_ok=True)
    options = settings.config_file_options
    argv = _pg_ctl(settings, "start", "-w", "-t", str(max(1, int(timeout))),
                   "-l", str(settings.log_file),
                   *(("-o", shlex.join(options)) if options else ()))
    if settings.bin_names.get("postgres"):
        argv += ["-p", settings.binary("postgres")]
    before = read_pidfile(settings.data_dir)
    task = asyncio.ensure_future(run(argv, timeout=timeout + _PG_CTL_GRACE, env=clean_env()))
    try:
        while not task.done():
            pidfile = read_pidfile(settings.data_dir)
            if pidfile is not None and pidfile != before \
                    and pidfile.status in ("ready", "standby") and pid_alive(pidfile.pid):
                task.add_done_callback(_log_late_failure)
                return CmdResult(tuple(argv), 0, "", "")
            await asyncio.wait({task}, timeout=_START_POLL)
    except asyncio.CancelledError:
        task.cancel()
        raise
    return task.result()


def _log_late_failure(task: asyncio.Future[CmdResult]) -> None:
    if task.cancelled():
        return
    result = task.result()
    if not result.ok:
        log.warning("pg_ctl start reported after the server was ready: %s", result.describe())


async def pg_ctl_stop(settings: PgSettings, mode: StopMode, timeout: float) -> CmdResult:
    """``pg_ctl stop -m mode``; returns once the postmaster has exited (watched through a
    pidfd rather than pg_ctl's 100 ms polling) or ``timeout`` passed (then not ok)."""
    pidfile = read_pidfile(settings.data_dir)
    argv = _pg_ctl(settings, "stop", "-m", str(mode), "-W")
    result = await run(argv, timeout=_PG_CTL_GRACE, env=clean_env())
    if not result.ok or pidfile is None:
        return result
    try:
        async with asyncio.timeout(timeout):
            await wait_pid_exit(pidfile.pid)
    except TimeoutError:
        return CmdResult(tuple(argv), None, "",
                         f"postmaster still running after {timeout:g}s", timed_out=True)
    return result


async def pg_ctl_promote(settings: PgSettings) -> CmdResult:
    """Signal promotion (``pg_ctl promote -W``); the caller waits for it to finish."""
    return await run(_pg_ctl(settings, "promote", "-W"), timeout=_PG_CTL_GRACE,
                     env=clean_env())


async def pg_ctl_reload(settings: PgSettings) -> CmdResult:
    return await run(_pg_ctl(settings, "reload"), timeout=_PG_CTL_GRACE, env=clean_env())
